"""What the service knows about a metric from its name alone: which way is better.

The one source for it: the store's `best`, the API's answers and (through `GET /models`) the
dashboard all ask here.
"""

from __future__ import annotations

import math
from typing import Any, Literal

Goal = Literal["min", "max"]


def metric_goal(name: str) -> Goal | None:
    """"min" for losses and perplexity, "max" for accuracy, None where best means nothing
    (learning rate, throughput, gradient norms)."""
    lowered = name.lower()
    if "loss" in lowered or "perplexity" in lowered:
        return "min"
    if "accuracy" in lowered:
        return "max"
    return None


def finite_or_none(value: Any) -> float | None:
    """A float, or None for None, NaN and infinities (which JSON cannot carry)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# ---- the compare page's curves (GET /compare/series) -------------------------------------

# The metric names GET /compare/series reads when none are named: the compare page's first
# request.
COMPARE_NAMES = ("train_loss", "val_loss", "val_accuracy", "val_perplexity")
# The max_points the compare page asks for: its point budget per chart shared by the runs,
# rounded down to one of these (api/dashboard/static/js/compare.js maxPointsFor), so that
# pages of many runs ask for levels that are stored once computed (Store.series_summaries).
COMPARE_LEVELS = (50, 100, 200, 500, 1000)
# The levels the reconciler stores for every finished run, ahead of any request: what pages
# of more than 100 runs ask for (the reads that cost the most).
SUMMARY_LEVELS = (50, 100)
