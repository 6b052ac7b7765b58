"""LibMTL adapters: the RepMTL weighting, the RepHPS architecture, the plugin host, compatibility."""
