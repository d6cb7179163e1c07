"""Docker's ways of printing things: human durations and sizes, short ids, timestamps.

``human_duration`` and ``human_size`` are go-units' ``HumanDuration`` and
``HumanSizeWithPrecision`` (decimal units: kB, MB, GB), so ``ps`` and
``images`` read as docker's do.
"""

from __future__ import annotations

import time

from bulkhead.units import human_duration as human_duration
from bulkhead.units import human_size as human_size


def ago(epoch: float, now: float | None = None) -> str:
    return human_duration((now or time.time()) - epoch) + " ago"


def parse_rfc3339(text: str) -> float:
    """An RFC 3339 timestamp (nanoseconds allowed) → seconds since the epoch (0 if empty)."""
    if not text or text.startswith("0001-01-01"):
        return 0.0
    main, _, frac = text.partition(".")
    tz = ""
    if frac:
        digits = ""
        for i, c in enumerate(frac):
            if not c.isdigit():
                tz = frac[i:]
                break
            digits += c
        frac = digits
    else:
        for sep in ("Z", "+", "-"):
            idx = main.find(sep, 19) if sep != "Z" else main.find("Z")
            if idx >= 19:
                main, tz = main[:idx], main[idx:]
                break
    if tz in ("", "Z", "z"):
        tz = "+00:00"
    from datetime import datetime

    dt = datetime.fromisoformat(main + tz)
    return dt.timestamp() + (float("0." + frac) if frac else 0.0)


def format_time(epoch: float) -> str:
    """Docker's CreatedAt: ``2024-01-02 15:04:05 +0000 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(epoch))


def short_id(ident: str) -> str:
    """A 12-character id, without the ``sha256:`` prefix."""
    if ident.startswith("sha256:"):
        ident = ident[7:]
    return ident[:12]


def ellipsis(text: str, width: int) -> str:
    """Docker's TruncateWithEllipsis (for COMMAND in ps)."""
    if len(text) <= width:
        return text
    return text[: width - 1] + "…"


def parse_since(value: str, now: float | None = None) -> str:
    """``--since``/``--until``: a Go duration (``10m``, ``1h30m``) before now, an RFC 3339
    date, or a unix timestamp — as docker's GetTimestamp, sent as ``seconds[.nanos]``."""
    if not value:
        return ""
    now = time.time() if now is None else now
    dur = _go_duration(value)
    if dur is not None:
        return f"{now - dur:.9f}".rstrip("0").rstrip(".")
    try:
        float(value)
        return value
    except ValueError:
        pass
    from datetime import UTC, datetime

    try:
        ts = parse_rfc3339(value if "T" in value or len(value) <= 10 else value.replace(" ", "T"))
    except ValueError:
        try:
            ts = datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise ValueError(f'invalid value for "since": {value!r}') from None
    return f"{ts:.9f}".rstrip("0").rstrip(".")


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _go_duration(text: str) -> float | None:
    """Go's ``time.ParseDuration`` in seconds (``1h30m``, ``-5s``: a sign puts it ahead)."""
    import re

    if not re.fullmatch(r"[-+]?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", text):
        return None
    total = 0.0
    for num, _frac, unit in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", text):
        total += float(num) * _UNITS[unit]
    return -total if text.startswith("-") else total


# --- --format: docker's table layout (the template engine is imported only when needed)


def expand_format(fmt: str) -> tuple[str, bool]:
    """``json`` → ``{{json .}}``; ``table X`` → (X, True). Escapes ``\\t`` and ``\\n``."""
    if fmt == "json":
        return "{{json .}}", False
    table = False
    if fmt.startswith("table"):
        table = True
        fmt = fmt[len("table") :].lstrip()
    return fmt.replace("\\t", "\t").replace("\\n", "\n"), table


def tabwrite(lines: list[str], minwidth: int = 10, padding: int = 3) -> str:
    """Align tab-separated cells as Go's tabwriter (cells ended by a tab are padded)."""
    rows = [line.split("\t") for line in lines]
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    out = []
    for row in rows:
        parts = [cell.ljust(max(minwidth, widths[i] + padding)) for i, cell in enumerate(row[:-1])]
        parts.append(row[-1])
        out.append("".join(parts))  # trailing padding kept, as Go's tabwriter does
    return "\n".join(out)


def simple_columns(source: str) -> list[str] | None:
    """The field names of a format made only of ``{{.Field}}`` cells separated by tabs."""
    names = []
    for part in source.split("\t"):
        if not (part.startswith("{{.") and part.endswith("}}")):
            return None
        name = part[3:-2]
        if not name.isidentifier():
            return None
        names.append(name)
    return names
