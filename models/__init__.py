"""The model zoo, its data and its checkpoint format. Imports neither app/ nor workers/."""
