"""Queue workers: the Celery app, the thin task, and the runner that drives models.train.fit()."""
