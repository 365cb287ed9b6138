"""The error that says a job failed by its own fault, apart from the infrastructure's."""


class TrainingError(Exception):
    """The job's own fault (its data, its spec, a diverging loss): not worth retrying."""
