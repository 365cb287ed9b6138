"""The shared kernel: settings, database, broker wiring and logs, imported by app/ and workers/."""
