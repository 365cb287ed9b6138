"""API keys and their owners."""
