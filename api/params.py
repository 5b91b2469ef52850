"""Parsers of the list-valued query parameters: job ids ("1,2,10-20") and metric names
("train_loss,val_loss"). Each answers a bad value with a 422 naming the parameter."""

from __future__ import annotations

from api.errors import invalid
from api.schemas import check_storable_json


def _job_id_or_range(part: str, most: int, ranges: bool) -> range:
    """`part` as the ids it names: one id, or with `ranges` "10-20" (at most `most` ids)."""
    if not ranges:
        try:
            job_id = int(part)
        except ValueError:
            raise invalid(("query", "ids"), f"{part[:40]!r} is not a job id (an integer)") from None
        return range(job_id, job_id + 1)
    first, sep, last = part.partition("-")
    try:
        low = int(first)
        high = int(last) if sep else low
    except ValueError:
        raise invalid(
            ("query", "ids"), f"{part[:40]!r} is not a job id or a range like 10-20"
        ) from None
    if high < low or high - low >= most:
        raise invalid(("query", "ids"), f"{part[:40]!r} is not a usable range")
    return range(low, high + 1)


def parse_job_ids(raw: str, *, fewest: int, most: int, ranges: bool = False) -> list[int]:
    """Comma-separated job ids (with `ranges`, also "10-20"), distinct, in the order given;
    between `fewest` and `most` of them."""
    ids: list[int] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        ids.extend(_job_id_or_range(part, most, ranges))
        if ranges and len(ids) > most * 2:  # ranges multiply: stop before they fill memory
            break
    ids = list(dict.fromkeys(ids))  # a duplicate would compare a run with itself
    if not fewest <= len(ids) <= most:
        # With two or more wanted, say that repeating an id does not count twice.
        distinct = "distinct " if fewest > 1 else ""
        raise invalid(
            ("query", "ids"), f"give between {fewest} and {most} {distinct}job ids, got {len(ids)}"
        )
    return ids


def parse_metric_names(raw: str, *, fewest: int, most: int) -> list[str]:
    """Comma-separated metric names, distinct, in the order given; between `fewest` and `most`
    of them, each storable text (no NUL, no lone surrogate)."""
    names = list(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    if not fewest <= len(names) <= most:
        allowed = (f"give {fewest} to {most} metric names" if fewest
                   else f"at most {most} names at once")
        raise invalid(("query", "names"), allowed)
    try:
        check_storable_json(names)
    except ValueError as exc:
        raise invalid(("query", "names"), str(exc)) from exc
    return names
