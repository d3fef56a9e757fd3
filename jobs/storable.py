"""What PostgreSQL (and a retry's replay) cannot take from a client, found
before anything is written: NUL characters (text and jsonb refuse them),
lone surrogates (not encodable as UTF-8), numbers that are not finite
(jsonb has no NaN or Infinity), and nesting deeper than any real request
needs (each level costs recursion in every later reader).

`unstorable_reason` names the first offending field as a path
("kwargs.items[3].name") so a 400 can say where it is."""

import math
import re

# Far beyond any real request; well within Python's recursion limit.
MAX_JSON_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    if _SURROGATE.search(text):
        return "contains a lone surrogate (not valid Unicode text; in a file: bytes that are not UTF-8)"
    return None


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def unstorable_reason(value, path: str = "", *, depth: int = 0) -> tuple[str, str] | None:
    """(field path, what is wrong) for the first value that cannot be
    stored, or None if all of `value` can. Iterative in spirit: the depth
    bound keeps the recursion shallow."""
    if depth > MAX_JSON_DEPTH:
        return path or "(body)", f"is nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, str):
        problem = _text_problem(value)
        return (path or "(body)", problem) if problem else None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "(body)", f"is not a finite number ({value})")
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (problem := _text_problem(key)):
                return _join(path, repr(key)), f"is a key that {problem}"
            if found := unstorable_reason(item, _join(path, key), depth=depth + 1):
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if found := unstorable_reason(item, _join(path, index), depth=depth + 1):
                return found
    return None


def storable_text(text: str) -> str:
    """`text` with NULs and lone surrogates replaced by U+FFFD, to record
    (in an error, a failed row) what could not be stored as it was."""
    return _SURROGATE.sub("\ufffd", text.replace("\x00", "\ufffd"))
