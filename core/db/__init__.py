"""The data layer: engine and sessions, and the tables. Shared by the API and the workers."""
