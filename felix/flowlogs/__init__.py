"""Flow logs: NFLOG packets from the policy rules -> flow records (JSON lines)."""
