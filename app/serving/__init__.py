"""Serving: /v1/models and their predictions."""
