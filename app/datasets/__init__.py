"""Datasets: the built-ins and the owner's uploads."""
