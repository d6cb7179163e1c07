"""``bulkhead events`` (``system events``): the daemon's events, as ``docker events`` prints them.

``--since``/``--until`` take what the docker CLI takes and send what it
sends (:func:`bulkhead.cli.fmt.parse_since`: ``10m`` or ``1h30m`` before
now, an RFC 3339 date, or unix seconds, sent as ``seconds[.nanos]``).
``--filter key=value`` repeats (``container=web``, ``event=start``,
``type=image``, ``label=k=v``...). Without ``--until`` the command follows
the stream until interrupted.

The default line is docker's::

    2024-01-01T00:00:00.123456789Z container start 0123abcd... (image=busybox, name=x)

(the time in the local zone, nine digits of fraction, then the attributes
sorted by name); ``--format`` takes a Go template over docker's
``events.Message`` (``{{.Type}}``, ``{{.Action}}``, ``{{.Actor.ID}}``,
``{{.Actor.Attributes.name}}``, ``{{.TimeNano}}``, ``{{json .}}``).
"""

from __future__ import annotations

import time

from bulkhead.cli.app import App
from bulkhead.cli.flags import LIST, STR, Command, Flag, UsageError, need_args
from bulkhead.cli.jsonlite import loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EVENTS = Command(
    "events",
    "events [OPTIONS]",
    [
        Flag("filter", "f", LIST, "Filter output based on conditions provided"),
        Flag("format", kind=STR, help="Format output using a custom template"),
        Flag("since", kind=STR, help="Show all events created since timestamp"),
        Flag("until", kind=STR, help="Stream events until this timestamp"),
    ],
    summary="Get real time events from the server",
)

#: Go field names of ``events.Message`` whose JSON keys differ, and their zero values
_GO_FIELDS: dict[str, tuple[str, object]] = {
    "Status": ("status", ""),
    "ID": ("id", ""),
    "From": ("from", ""),
    "Type": ("Type", ""),
    "Action": ("Action", ""),
    "Scope": ("scope", ""),
    "Time": ("time", 0),
    "TimeNano": ("timeNano", 0),
}


class Message(dict):  # type: ignore[type-arg]
    """One event as docker's templates see it: Go's field names (``.Scope``, ``.TimeNano``)
    over the JSON keys (``scope``, ``timeNano``), in the order ``{{json .}}`` prints."""

    def get(self, key: Any, default: Any = None) -> Any:
        if key in _GO_FIELDS:
            name, zero = _GO_FIELDS[key]
            return super().get(name, zero)
        return super().get(key, default)


def message(doc: dict[str, Any]) -> Message:
    """Docker's ``events.Message`` from a decoded line: its fields in Go's order, the
    attributes sorted (Go encodes a map's keys sorted), the legacy fields only when set."""
    actor = doc.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    out = Message()
    for key in ("status", "id", "from"):
        if doc.get(key):
            out[key] = doc[key]
    out["Type"] = doc.get("Type", "")
    out["Action"] = doc.get("Action", "")
    out["Actor"] = {
        "ID": actor.get("ID", ""),
        "Attributes": {k: attributes[k] for k in sorted(attributes)},
    }
    out["scope"] = doc.get("scope", "")
    out["time"] = doc.get("time", 0)
    out["timeNano"] = doc.get("timeNano", 0)
    return out


def rfc3339_nano_fixed(nanos: int) -> str:
    """Go's ``2006-01-02T15:04:05.000000000Z07:00`` in the local zone (``Z`` at UTC+0)."""
    seconds, fraction = divmod(nanos, 1_000_000_000)
    local = time.localtime(seconds)
    offset = local.tm_gmtoff or 0
    if offset == 0:
        zone = "Z"
    else:
        sign = "+" if offset > 0 else "-"
        hours, minutes = divmod(abs(offset) // 60, 60)
        zone = f"{sign}{hours:02d}:{minutes:02d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + f".{fraction:09d}{zone}"


def pretty(event: dict[str, Any]) -> str:
    """docker's default line for an event (``prettyPrintEvent``)."""
    parts = []
    nanos = int(event.get("timeNano") or 0)
    if nanos:
        parts.append(rfc3339_nano_fixed(nanos) + " ")
    elif event.get("time"):
        parts.append(rfc3339_nano_fixed(int(event["time"]) * 1_000_000_000) + " ")
    actor = event.get("Actor") or {}
    parts.append(f"{event.get('Type', '')} {event.get('Action', '')} {actor.get('ID', '')}")
    attributes = actor.get("Attributes") or {}
    if attributes:
        parts.append(" (" + ", ".join(f"{k}={attributes[k]}" for k in sorted(attributes)) + ")")
    return "".join(parts)


def cmd_events(app: App, args: list[str]) -> int:
    from bulkhead.cli.containers import filters_query
    from bulkhead.cli.fmt import expand_format, parse_since

    parsed = EVENTS.parse(args)
    need_args(EVENTS, parsed, 0, 0)
    template = None
    if parsed["format"]:
        from bulkhead.cli.template import Template, TemplateError

        source, _table = expand_format(parsed["format"])
        try:
            template = Template(source)
            template.execute(message({}))  # a bad template fails before anything streams
        except TemplateError as exc:
            app.error(f"Error parsing format: {exc}")
            return 64
    try:
        since = parse_since(parsed["since"] or "")
        until = parse_since(parsed["until"] or "")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    query = {
        "since": since or None,
        "until": until or None,
        "filters": filters_query(parsed["filter"]),
    }
    resp = app.client.request("GET", "/events", query=query)
    out = app.out
    try:
        for line in resp.lines():
            event = message(loads(line))
            out.write((template.execute(event) if template is not None else pretty(event)) + "\n")
            out.flush()
    except KeyboardInterrupt:
        return 130
    finally:
        resp.close()
    return 0
