"""Webhooks: the outbox that events are written to, in the transaction that makes them."""
