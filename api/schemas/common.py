"""What every schema module shares: text a database can store, the words of core/states.py as
Literals, and filling a response from a store record by field name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel

from core import states


def check_storable(value: str) -> str:
    """Refuse text that no database column can hold, before it reaches one.

    JSON can spell both: "\\u0000" (Postgres text rejects NUL) and a lone "\\ud800" (not
    encodable as UTF-8, so neither SQLite nor Postgres can store it).
    """
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def check_storable_json(value: Any) -> Any:
    """check_storable on every string, key or value, of a JSON document (any depth)."""
    stack = [value]  # a loop, not recursion: nesting depth is the client's choice
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            check_storable(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


StorableStr = Annotated[str, AfterValidator(check_storable)]

# The words of core/states.py, as Literals: the schema lists them inline, as it always has.
JobStatus = Literal[tuple(s.value for s in states.JobStatus)]  # type: ignore[valid-type]
Outcome = Literal[tuple(o.value for o in states.Outcome)]  # type: ignore[valid-type]
Device = Literal["auto", "cpu", "cuda"]
DatasetKind = Literal["images", "text"]


_shared_names: dict[tuple[type, type], tuple[str, ...]] = {}


def same_named(record: Any, model: type[BaseModel], skip: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of `model` that `record` has under the same name (but those in `skip`)."""
    key = (model, type(record))
    names = _shared_names.get(key)
    if names is None:  # once per pair of classes: a list of 200 jobs pays for it once
        names = _shared_names[key] = tuple(n for n in model.model_fields if hasattr(record, n))
    skipped = set(skip)
    return {name: getattr(record, name) for name in names if name not in skipped}


# Job, checkpoint and sweep ids are INTEGER columns (db/tables/): no larger id exists. Raise
# this if the columns ever become BIGINT.
MAX_ID = 2**31 - 1
