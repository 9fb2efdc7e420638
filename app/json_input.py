"""What a JSON request body may hold: only what the service can store and answer with again.

Python's `json` reads `NaN`, `Infinity`, `-Infinity` and numbers beyond a double's range (`1e400`, read
as infinity), and `"\\ud800"` (a lone UTF-16 surrogate) as a str that has no UTF-8 encoding. Such a
value cannot be written to Redis or into a JSON response, so it is refused when the body is read, on
both faces, in any field, with its location named as pydantic names locations.
"""

from __future__ import annotations

import json
import math
from typing import Any

NOT_FINITE = "must be a finite number: NaN, Infinity and numbers beyond ±1.8e308 are not accepted"
NOT_UNICODE = "must be valid Unicode text: a lone UTF-16 surrogate (\\ud800 to \\udfff) is not accepted"


class UnstorableValue(ValueError):
    """A parsed body holds a value the service cannot store or send back; `loc` says where."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {message}")
        self.loc, self.message = loc, message


def check_storable(value: Any, loc: tuple[str | int, ...] = ()) -> None:
    """Raise UnstorableValue at the first non-finite number or lone surrogate in a parsed JSON value."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UnstorableValue(loc, NOT_FINITE)
    if isinstance(value, str) and not _is_unicode(value):
        raise UnstorableValue(loc, NOT_UNICODE)
    if isinstance(value, dict):
        for key, item in value.items():
            if not _is_unicode(key):
                raise UnstorableValue((*loc, _printable(key)), "field name " + NOT_UNICODE)
            check_storable(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_storable(item, (*loc, index))


def parse_json_body(body: bytes) -> Any:
    """A request body as JSON, refusing what `check_storable` refuses; ValueError when not JSON."""
    value = json.loads(body)
    check_storable(value)
    return value


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
