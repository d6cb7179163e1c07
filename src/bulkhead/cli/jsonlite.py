"""JSON for the CLI's hot path without importing the ``json`` package.

``import json`` pulls in ``re`` (its decoder's number and whitespace
patterns), a few milliseconds on every command. The parsing and encoding
themselves live in CPython's C accelerator ``_json``; this module drives
it directly (the same scanner and encoder ``json.loads``/``json.dumps``
use), and falls back to ``json`` where there is no ``_json``.

``dumps`` is compact (``,`` and ``:``), keeps non-ASCII characters, and
refuses what JSON cannot hold, as ``json.dumps`` does.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    import _json
except ImportError:  # pragma: no cover - not CPython
    _json = None  # type: ignore[assignment]

_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Context:
    """What ``_json.make_scanner`` reads from a JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_CONSTANTS.__getitem__)


def _default(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


if _json is not None:
    _scan = _json.make_scanner(_Context())  # type: ignore[arg-type]
    _encode = _json.make_encoder(
        None, _default, _json.encode_basestring, None, ":", ",", False, False, True
    )


def loads(data: bytes | str) -> Any:
    """Parse one JSON document (``ValueError`` when malformed)."""
    text = data.decode() if isinstance(data, bytes) else data
    if _json is None:  # pragma: no cover
        import json

        return json.loads(text)
    text = text.strip(" \t\n\r")
    try:
        value, end = _scan(text, 0)
    except StopIteration as exc:
        raise ValueError(f"Expecting value: char {exc.value}") from None
    if end != len(text):
        raise ValueError(f"Extra data: char {end}")
    return value


def dumps(value: Any) -> str:
    """Compact JSON text (non-ASCII kept as is)."""
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return "".join(_encode(value, 0))
