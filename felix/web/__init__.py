"""Felix's flow viewer page (FlowViewerEnabled; localhost only by default)."""
