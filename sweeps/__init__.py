"""Hyperparameter sweeps: a sweep's spec checked against the model catalogue (`space`), the
decisions Optuna takes over a study rebuilt from our tables (`search`), and the driver that any
process (API, worker, reconciler) calls to launch a sweep's next trials, judge a trial at its
epoch end and end the sweep (`driver`).

Imports db/ and the torch-free part of models/; the API and the worker import this package.
"""
