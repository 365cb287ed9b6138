"""Live job events: Server-Sent Events read from the database."""
