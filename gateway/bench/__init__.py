"""``claude-gateway bench``: the gateway measured against direct access and a bare nginx."""
