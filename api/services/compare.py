"""Runs side by side: which settings differ between them, and a label for each run made of
those settings ("lr=0.01, activation=sigmoid"), for GET /compare and GET /compare/series."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from db.store import JobRecord

MAX_LABEL_KEYS = 6
_MISSING = object()
# Compared first and named like hyperparameters in labels; not hyperparameters themselves.
SPEC_KEYS = ("model", "dataset", "dataset_version")


def _canonical(value: Any) -> str:
    # JSON text tells 1 from True and 1.0 from "1", which == does not.
    return json.dumps(value, sort_keys=True) if value is not _MISSING else "<missing>"


def differing_keys(runs: Sequence[JobRecord]) -> list[str]:
    """model, dataset (and its version), then hyperparameter keys whose values are not the same in every run.

    A hyperparameter that some runs lack counts as differing.
    """
    keys = [k for k in SPEC_KEYS if len({_canonical(getattr(r, k)) for r in runs}) > 1]
    hp_keys = sorted({k for r in runs for k in r.hyperparameters})
    for key in hp_keys:
        values = {_canonical(r.hyperparameters.get(key, _MISSING)) for r in runs}
        if len(values) > 1:
            keys.append(key)
    return keys


def _label_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def run_label(run: JobRecord, differing: Sequence[str]) -> str:
    """A run named by the settings that differ: 'lr=0.01, activation=sigmoid'."""
    parts = []
    keys = [k for k in differing if k in SPEC_KEYS or k in run.hyperparameters]
    for key in keys[:MAX_LABEL_KEYS]:
        value = getattr(run, key) if key in SPEC_KEYS else run.hyperparameters[key]
        parts.append(f"{key}={_label_value(value)}")
    if len(keys) > MAX_LABEL_KEYS:
        parts.append("…")
    return ", ".join(parts) if parts else (run.name or f"job {run.id}")
