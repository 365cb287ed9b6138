"""Sweeps: hyperparameter searches whose trials are ordinary jobs (README, "Sweeps").

The database holds the whole truth: the request (sweeps), each trial's parameters and the
searcher's notes (sweep_trials), and what each trial did (its job and metric rows). Optuna's
samplers and pruners decide, on an in-memory study rebuilt from those rows whenever a
decision is needed (study.py), so any process can decide and none keeps state of its own.
"""
