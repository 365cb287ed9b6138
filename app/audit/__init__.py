"""The audit log: recorded by a middleware and by admin actions, read by admins."""
