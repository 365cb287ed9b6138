"""Celery workers: take a job by its id, train it, record what happened."""
