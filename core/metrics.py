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
