"""Training jobs: submit, read, list, cancel, and their metrics and checkpoints."""
