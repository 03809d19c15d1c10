"""Reliability: fault injection against real servers, and properties of the stream parsers."""
