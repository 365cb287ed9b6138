"""Webhooks: subscriptions (the routes), where they may point, and the deliverer."""
