"""Felix's Linux dataplane: nftables policy (:mod:`.nftables`) and routes (:mod:`.routes`)."""
