"""The web dashboard: one static page that talks to the /v1 API with the user's key."""
