"""Claude Stream Gateway: an observability-first streaming proxy for Claude."""
