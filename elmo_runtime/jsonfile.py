"""Read a JSON file and its fields, with errors that name the file and the field.

Shared by every reader of a JSON document (`elmo.json`, `options.json`, the model catalog), so
that a missing file, invalid JSON or a missing or mistyped field reads the same everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_REQUIRED = object()


def read_json(path: str | Path, what: str, error: type[ValueError] = ValueError) -> Any:
    """The parsed JSON document at `path`.

    Args:
        path: the file.
        what: what the file is, for the messages ("options file", "manifest").
        error: the ValueError subclass raised for invalid JSON.

    Raises:
        FileNotFoundError: no such file.
        error: the file is not valid UTF-8 JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not a valid JSON {what} ({e})") from None
    except RecursionError:  # json recurses per level: a crafted 100,000-deep list reaches this
        raise error(f"{path}: not a valid JSON {what} (nested too deeply)") from None


def json_field(
    data: Any,
    path: str,
    kind: type | tuple[type, ...],
    source: str | Path,
    error: type[ValueError] = ValueError,
    default: Any = _REQUIRED,
) -> Any:
    """The value at dotted `path` in `data`, checked to be of `kind` (a bool is never an int).

    Args:
        data: a parsed JSON document.
        path: keys joined by dots, e.g. "architecture.lstm.dim".
        kind: the allowed type(s).
        source: the file or thing `data` came from, for the messages.
        error: the ValueError subclass raised.
        default: returned where the field is missing; without it a missing field is an error.

    Raises:
        error: the field is missing (and has no default) or has another type.
    """
    node = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            if default is not _REQUIRED:
                return default
            raise error(f"{source}: missing field {path!r}")
        node = node[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(node, bool) and bool not in kinds) or not isinstance(node, kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise error(f"{source}: field {path!r} is {type(node).__name__} {node!r:.60}, expected {expected}")
    return node
