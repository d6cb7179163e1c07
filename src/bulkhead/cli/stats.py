"""``bulkhead stats`` and ``bulkhead top``: what containers use, and what runs in them.

*stats*
    Docker's table (CONTAINER ID, NAME, CPU %, MEM USAGE / LIMIT, MEM %,
    NET I/O, BLOCK I/O, PIDS), computed as the docker CLI does from the
    daemon's samples (``GET /containers/{id}/stats``): CPU % from the change
    of the container's and the host's CPU time between two samples, memory
    without the page cache the kernel could drop (``inactive_file``), memory
    in binary units (``MiB``), I/O in decimal ones (``kB``). Without
    ``--no-stream`` the table is redrawn in place twice a second from one
    stream per container (a reader thread each: this process never forks);
    with no container named it follows the running containers (all with
    ``-a``) as they come and go. ``--format`` takes Docker's fields
    (``.Container .Name .ID .CPUPerc .MemUsage .MemPerc .NetIO .BlockIO
    .PIDs``), ``json`` and ``table``.
*top*
    ``top CONTAINER [ps OPTIONS]``: the daemon runs the host's ``ps`` and
    keeps the container's rows; printed as Docker does (columns at least
    20 wide).
"""

from __future__ import annotations

from bulkhead.cli.app import App, Exit
from bulkhead.cli.client import APIError
from bulkhead.cli.flags import BOOL, STR, Command, Flag, need_args

TYPE_CHECKING = False  # not `from typing import`: typing costs milliseconds at start-up
if TYPE_CHECKING:
    from typing import Any

    from bulkhead.cli.client import Client

STATS = Command(
    "stats",
    "stats [OPTIONS] [CONTAINER...]",
    [
        Flag("all", "a", BOOL, "Show all containers (default shows just running)"),
        Flag(
            "format",
            kind=STR,
            help="Format output using a custom template: 'table', 'table TEMPLATE', 'json', "
            "'TEMPLATE'",
        ),
        Flag("no-stream", kind=BOOL, help="Disable streaming stats and only pull the first result"),
        Flag("no-trunc", kind=BOOL, help="Do not truncate output"),
    ],
    summary="Display a live stream of container(s) resource usage statistics",
)

STATS_DEFAULT = (
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}"
    "\t{{.BlockIO}}\t{{.PIDs}}"
)
STATS_HEADERS = {
    "Container": "CONTAINER",
    "Name": "NAME",
    "ID": "CONTAINER ID",
    "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %",
    "NetIO": "NET I/O",
    "BlockIO": "BLOCK I/O",
    "PIDs": "PIDS",
}

#: How often a streaming table is redrawn (docker's ticker).
REFRESH = 0.5

_BINARY = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]


def bytes_size(size: float) -> str:
    """go-units ``BytesSize``: binary units, four significant digits (``268KiB``, ``64MiB``)."""
    i = 0
    while size >= 1024.0 and i < len(_BINARY) - 1:
        size /= 1024.0
        i += 1
    return f"{size:.4g}{_BINARY[i]}"


# --- the docker CLI's arithmetic (cli/command/container/stats_helpers.go) ----------


def cpu_percent(doc: dict[str, Any]) -> float:
    """``calculateCPUPercentUnix``: Δcontainer / Δhost CPU time, times the online CPUs."""
    cpu = doc.get("cpu_stats") or {}
    pre = doc.get("precpu_stats") or {}
    usage = cpu.get("cpu_usage") or {}
    cpu_delta = float(usage.get("total_usage") or 0) - float(
        (pre.get("cpu_usage") or {}).get("total_usage") or 0
    )
    system_delta = float(cpu.get("system_cpu_usage") or 0) - float(pre.get("system_cpu_usage") or 0)
    online = float(cpu.get("online_cpus") or len(usage.get("percpu_usage") or []))
    if system_delta > 0.0 and cpu_delta > 0.0:
        return cpu_delta / system_delta * online * 100.0
    return 0.0


def mem_usage_no_cache(memory: dict[str, Any]) -> float:
    """``calculateMemUsageUnixNoCache``: usage less the inactive page cache (v1 or v2 key)."""
    usage = int(memory.get("usage") or 0)
    stats = memory.get("stats") or {}
    if "total_inactive_file" in stats and stats["total_inactive_file"] < usage:
        return float(usage - stats["total_inactive_file"])
    inactive = int(stats.get("inactive_file") or 0)
    if inactive < usage:
        return float(usage - inactive)
    return float(usage)


def block_io(blkio: dict[str, Any]) -> tuple[int, int]:
    """``calculateBlockIO``: bytes read and written (ops ``Read``/``read``, ``Write``/``write``)."""
    read = write = 0
    for entry in (blkio or {}).get("io_service_bytes_recursive") or []:
        op = str(entry.get("op") or "")
        if op[:1] in ("r", "R"):
            read += int(entry.get("value") or 0)
        elif op[:1] in ("w", "W"):
            write += int(entry.get("value") or 0)
    return read, write


def network_io(networks: dict[str, Any] | None) -> tuple[int, int]:
    """``calculateNetwork``: bytes received and sent over every interface."""
    rx = tx = 0
    for iface in (networks or {}).values():
        rx += int(iface.get("rx_bytes") or 0)
        tx += int(iface.get("tx_bytes") or 0)
    return rx, tx


class Entry:
    """One container's row: the last sample's figures, or invalid (``--``)."""

    def __init__(self, container: str) -> None:
        self.container = container  # as named on the command line (or the full id)
        self.name = ""
        self.id = ""
        self.cpu = 0.0
        self.memory = 0.0
        self.memory_limit = 0.0
        self.memory_percent = 0.0
        self.net = (0, 0)
        self.block = (0, 0)
        self.pids = 0
        self.valid = False
        self.error: str | None = None

    def update(self, doc: dict[str, Any]) -> None:
        """Take the figures of one stats document."""
        self.name = str(doc.get("name") or "")
        self.id = str(doc.get("id") or self.id)
        self.cpu = cpu_percent(doc)
        memory = doc.get("memory_stats") or {}
        self.memory = mem_usage_no_cache(memory)
        self.memory_limit = float(memory.get("limit") or 0)
        self.memory_percent = self.memory / self.memory_limit * 100.0 if self.memory_limit else 0.0
        self.block = block_io(doc.get("blkio_stats") or {})
        self.net = network_io(doc.get("networks"))
        self.pids = int((doc.get("pids_stats") or {}).get("current") or 0)
        self.valid = True
        self.error = None

    def context(self, trunc: bool) -> dict[str, Any]:
        """The fields ``--format`` sees (docker's statsContext; ``{{json .}}`` sorts them)."""
        name = self.name[1:] if len(self.name) > 1 else "--"
        ident = self.id[:12] if trunc else self.id
        if not self.valid:
            return {
                "BlockIO": "--",
                "CPUPerc": "--",
                "Container": self.container,
                "ID": ident,
                "MemPerc": "--",
                "MemUsage": "-- / --",
                "Name": name,
                "NetIO": "--",
                "PIDs": "--",
            }
        return {
            "BlockIO": f"{_human(self.block[0])} / {_human(self.block[1])}",
            "CPUPerc": f"{self.cpu:.2f}%",
            "Container": self.container,
            "ID": ident,
            "MemPerc": f"{self.memory_percent:.2f}%",
            "MemUsage": f"{bytes_size(self.memory)} / {bytes_size(self.memory_limit)}",
            "Name": name,
            "NetIO": f"{_human(self.net[0])} / {_human(self.net[1])}",
            "PIDs": str(self.pids),
        }


def _human(size: float) -> str:
    from bulkhead.units import human_size

    return human_size(size, 3)


# --- stats ------------------------------------------------------------------------


def _running(client: Client, all_: bool) -> list[str]:
    """Ids of the containers to show when none is named."""
    return [c["Id"] for c in client.get("/containers/json", all=all_ or None) or []]


def _render(app: App, fmt: str, entries: list[Entry], trunc: bool) -> str:
    """The table (or lines) for ``entries``, as one string."""
    import io

    from bulkhead.cli.containers import render_contexts

    out = io.StringIO()
    saved, app.out = app.out, out
    try:
        render_contexts(app, fmt, [e.context(trunc) for e in entries], STATS_HEADERS)
    finally:
        app.out = saved
    return out.getvalue()


def cmd_stats(app: App, args: list[str]) -> int:
    parsed = STATS.parse(args)
    client = app.client
    fmt = parsed["format"] or STATS_DEFAULT
    if fmt == "table":
        fmt = STATS_DEFAULT
    trunc = not parsed["no-trunc"]
    named = list(parsed.args)
    if parsed["no-stream"]:
        return _stats_once(app, client, named or _running(client, parsed["all"]), fmt, trunc)
    return _stats_stream(app, client, named, parsed["all"], fmt, trunc)


def _stats_once(app: App, client: Client, containers: list[str], fmt: str, trunc: bool) -> int:
    """``--no-stream``: every container's request sent at once, then each answer read."""
    from bulkhead.cli.client import error_message
    from bulkhead.cli.jsonlite import loads

    pending = [
        (name, client.start_request("GET", f"/containers/{name}/stats", query={"stream": 0}))
        for name in containers
    ]
    entries: list[Entry] = []
    errors: list[str] = []
    for name, request in pending:
        entry = Entry(name)
        try:
            resp = request.response()
            body = resp.read()
            if resp.status >= 400:
                raise APIError(resp.status, error_message(resp.status, body))
            entry.update(loads(body))
        except APIError as exc:
            errors.append(str(exc))
            continue
        finally:
            request.close()
        entries.append(entry)
    if errors:
        raise Exit(1, "\n".join(errors))
    app.out.write(_render(app, fmt, entries, trunc))
    return 0


def _stats_stream(
    app: App, client: Client, named: list[str], all_: bool, fmt: str, trunc: bool
) -> int:
    """The live table: a reader thread per container, redrawn every :data:`REFRESH` s."""
    import threading
    import time

    from bulkhead.cli.jsonlite import loads

    lock = threading.Lock()
    entries: dict[str, Entry] = {}
    first = threading.Condition(lock)

    def read(key: str, entry: Entry) -> None:
        try:
            resp = client.request("GET", f"/containers/{key}/stats", query={"stream": 1})
            for line in resp.lines():
                doc = loads(line)
                with lock:
                    entry.update(doc)
                    first.notify_all()
            error = "EOF"  # the container was removed
        except (APIError, OSError, ValueError) as exc:
            error = str(exc)
        with lock:
            entry.valid = False  # docker shows "--" from now on
            entry.error = error
            first.notify_all()

    def follow(key: str) -> None:
        entry = Entry(key)
        with lock:
            entries[key] = entry
        threading.Thread(target=read, args=(key, entry), daemon=True).start()

    for key in named or _running(client, all_):
        follow(key)
    # as docker: wait for a first sample (or an error) from each container
    with lock:
        while not all(e.valid or e.error for e in entries.values()):
            first.wait(5.0)
        errors = [e.error for e in entries.values() if e.error and e.error != "EOF"]
    if named and errors:
        raise Exit(1, "\n".join(errors))
    out = app.out
    tty = out.isatty()
    out.write("\033[2J" if tty else "")
    next_list = time.monotonic() + 1.0
    while True:
        if not named and time.monotonic() >= next_list:
            next_list = time.monotonic() + 1.0
            try:
                wanted = _running(client, all_)
            except APIError:
                wanted = list(entries)
            with lock:
                for key in list(entries):
                    if key not in wanted:
                        del entries[key]
            for key in wanted:
                if key not in entries:
                    follow(key)
        with lock:
            shown = list(entries.values())
        text = _render(app, fmt, shown, trunc)
        if tty:
            text = "\033[H" + "".join(line + "\033[K\n" for line in text.split("\n")) + "\033[J"
        out.write(text)
        out.flush()
        time.sleep(REFRESH)


# --- top --------------------------------------------------------------------------

TOP = Command(
    "top",
    "top CONTAINER [ps OPTIONS]",
    [],
    interspersed=False,
    summary="Display the running processes of a container",
)


def cmd_top(app: App, args: list[str]) -> int:
    from bulkhead.cli.fmt import tabwrite

    parsed = TOP.parse(args)
    need_args(TOP, parsed, 1)
    container, *ps_args = parsed.args
    query = {"ps_args": " ".join(ps_args)} if ps_args else None
    result = app.client.get(f"/containers/{container}/top", **(query or {}))
    lines = ["\t".join(result.get("Titles") or [])]
    lines += ["\t".join(p) for p in result.get("Processes") or []]
    # docker: a tabwriter with cells at least 20 wide, 3 spaces of padding
    app.out.write(tabwrite(lines, minwidth=20, padding=3) + "\n")
    return 0


__all__ = [
    "Entry",
    "block_io",
    "bytes_size",
    "cmd_stats",
    "cmd_top",
    "cpu_percent",
    "mem_usage_no_cache",
    "network_io",
]
