"""/v1/sweeps: hyperparameter searches whose trials are jobs (core/sweeps/)."""
