"""Security end to end: limits, validation, auth and secrets against a real gateway."""
