"""Container commands: run, create, start, stop, kill, restart, rm, ps, logs, attach,
exec, wait, rename, cp, export, diff, commit, port, container inspect/prune.

``run`` does what the docker CLI does, in its order: create (on 404 "No
such image": pull, then create again), attach *before* start (so no output
is lost), send ``wait`` before start (``condition=removed`` with ``--rm``,
else ``next-exit``), start, stream, then exit with the wait's status code.
"""

from __future__ import annotations

import os
import sys

from bulkhead.cli.app import App, Exit
from bulkhead.cli.client import APIError, DaemonUnavailable
from bulkhead.cli.flags import BOOL, INT, LIST, STR, Command, Flag, UsageError, need_args
from bulkhead.cli.jsonlite import dumps, loads

TYPE_CHECKING = False  # typing costs milliseconds at every `ps`
if TYPE_CHECKING:
    from typing import Any

    from bulkhead.cli.runflags import CreatePlan


RUN_HINT = "\n\nRun 'bulkhead run --help' for more information"


def start_error_status(message: str) -> int:
    """Docker's statuses for a failed start: 127 not found, 126 cannot execute, else 125."""
    low = message.lower()
    if (
        "executable file not found" in low
        or "no such file or directory" in low
        or "not found" in low
        or "system cannot find the file" in low
    ):
        return 127
    if "permission denied" in low or "not executable" in low or "cannot execute" in low:
        return 126
    return 125


def _tty_check(tty: bool, stdin: bool) -> None:
    if tty and stdin and not os.isatty(0):
        raise Exit(1, "the input device is not a TTY")


def _console_size(tty: bool) -> tuple[int, int]:
    if not tty:
        return (0, 0)
    from bulkhead.cli.stream import terminal_size

    return terminal_size()


def _image_missing(exc: APIError) -> bool:
    return exc.status == 404 and "no such image" in exc.message.lower()


def create_container(app: App, plan: CreatePlan) -> str:
    """POST /containers/create (pulling the image first when missing); the new id."""
    client = app.client
    if plan.pull == "always":
        from bulkhead.cli.images import pull_image

        pull_image(app, plan.image, platform=plan.platform, quiet=plan.quiet, to_stderr=True)
    try:
        reply = client.post("/containers/create", plan.body, **plan.query)
    except APIError as exc:
        if not _image_missing(exc) or plan.pull == "never":
            raise
        from bulkhead.cli.images import normalize_ref, pull_image

        if not plan.quiet:
            app.error(f"Unable to find image '{normalize_ref(plan.image)}' locally")
        pull_image(app, plan.image, platform=plan.platform, quiet=plan.quiet, to_stderr=True)
        reply = client.post("/containers/create", plan.body, **plan.query)
    for warning in reply.get("Warnings") or []:
        app.error(f"WARNING: {warning}")
    cid = str(reply["Id"])
    if plan.cidfile:
        with open(plan.cidfile, "x", encoding="utf-8") as fh:
            fh.write(cid)
    return cid


def cmd_create(app: App, args: list[str]) -> int:
    from bulkhead.cli.runflags import CREATE_COMMAND, build_create

    parsed = CREATE_COMMAND.parse(args)
    need_args(CREATE_COMMAND, parsed, 1)
    plan = build_create(parsed, run=False, console_size=_console_size(parsed["tty"]))
    cid = create_container(app, plan)  # docker's create: a daemon error exits 1
    app.print(cid)
    return 0


def _forward_signals(app: App, cid: str) -> list[tuple[int, Any]]:
    """--sig-proxy: SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/2 sent on to the container."""
    if TYPE_CHECKING:
        import signal as _signal  # the same functions, with stubs
    else:
        import _signal  # not signal: its IntEnums cost milliseconds on every `run`

    def forward(signum: int, _frame: Any) -> None:
        import signal

        try:
            app.client.request(
                "POST", f"/containers/{cid}/kill", query={"signal": signal.Signals(signum).name}
            ).read()
        except (APIError, OSError):
            pass

    saved: list[tuple[int, Any]] = []
    for sig in (
        _signal.SIGINT,
        _signal.SIGTERM,
        _signal.SIGHUP,
        _signal.SIGQUIT,
        _signal.SIGUSR1,
        _signal.SIGUSR2,
    ):
        saved.append((sig, _signal.signal(sig, forward)))
    return saved


def _restore_signals(saved: list[tuple[int, Any]]) -> None:
    if TYPE_CHECKING:
        import signal as _signal
    else:
        import _signal

    for sig, handler in saved:
        _signal.signal(sig, handler)


def attach_and_stream(
    app: App,
    cid: str,
    *,
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    detach_keys: str = "",
    start: bool = False,
    wait_condition: str = "",
    sig_proxy: bool = False,
    for_run: bool = False,
) -> int | None:
    """Attach (hijack), optionally start, pump; the wait's status code (None if detached)."""
    from bulkhead.cli.stream import parse_detach_keys, pump

    client = app.client
    sock = None
    leftover = b""
    if stdin or stdout or stderr:
        query = {"stream": 1, "stdin": int(stdin), "stdout": int(stdout), "stderr": int(stderr)}
        sock, leftover, _ = client.hijack("POST", f"/containers/{cid}/attach", query=query)
    waiter = None
    if wait_condition:
        waiter = client.start_request(
            "POST", f"/containers/{cid}/wait", query={"condition": wait_condition}
        )
    if start:
        try:
            client.request("POST", f"/containers/{cid}/start").read()
        except APIError as exc:
            if sock is not None:
                sock.close()
            if waiter is not None:
                waiter.close()
            if wait_condition == "removed":
                # --rm: the daemon removes a container whose start failed (as Docker's
                # does); asking again costs nothing and leaves no container behind.
                try:
                    client.request("DELETE", f"/containers/{cid}", query={"force": 1}).read()
                except (APIError, OSError):
                    pass
            if for_run:  # docker run: 125/126/127, prefixed, with the help hint
                raise Exit(start_error_status(exc.message), f"bulkhead: {exc}{RUN_HINT}") from None
            raise Exit(1, str(exc)) from None  # docker start -a: a daemon error
    saved = _forward_signals(app, cid) if sig_proxy and not tty else []
    try:
        keep = True
        if sock is not None:
            try:
                keys = parse_detach_keys(detach_keys)
            except (ValueError, KeyError) as exc:
                raise UsageError(str(exc)) from None

            def resize(h: int, w: int) -> None:
                client.request("POST", f"/containers/{cid}/resize", query={"h": h, "w": w}).read()

            keep = pump(
                sock,
                leftover,
                tty=tty,
                stdin=stdin,
                on_resize=resize if tty else None,
                detach_keys=keys,
            )
        if not keep:
            if waiter is not None:
                waiter.close()
            app.error("\nread escape sequence")
            return None
        if waiter is None:
            return 0
        resp = waiter.response()
        if resp.status >= 400:
            from bulkhead.cli.client import error_message

            raise Exit(
                125,
                f"bulkhead: Error response from daemon: {error_message(resp.status, resp.read())}",
            )
        result = resp.first_json() or {}
        err = (result.get("Error") or {}).get("Message")
        if err:
            app.error(f"bulkhead: {err}")
        return int(result.get("StatusCode", 0))
    finally:
        _restore_signals(saved)


def cmd_run(app: App, args: list[str]) -> int:
    from bulkhead.cli.runflags import RUN_COMMAND, build_create

    parsed = RUN_COMMAND.parse(args)
    need_args(RUN_COMMAND, parsed, 1)
    tty, interactive = bool(parsed["tty"]), bool(parsed["interactive"])
    if not parsed["detach"]:
        _tty_check(tty, interactive)
    plan = build_create(parsed, run=True, console_size=_console_size(tty))
    try:
        cid = create_container(app, plan)
    except (APIError, DaemonUnavailable) as exc:
        raise Exit(125, f"bulkhead: {exc}{RUN_HINT}") from None
    client = app.client
    if plan.detach:
        app.print(cid)  # docker prints the id before the start, failed or not
        app.out.flush()
        try:
            client.request("POST", f"/containers/{cid}/start").read()
        except APIError as exc:
            raise Exit(start_error_status(exc.message), f"bulkhead: {exc}{RUN_HINT}") from None
        return 0
    app.out.flush()
    try:
        status = _run_attached(app, cid, plan, tty)
    except APIError as exc:
        raise Exit(125, f"bulkhead: {exc}") from None
    return 0 if status is None else status


def _run_attached(app: App, cid: str, plan: CreatePlan, tty: bool) -> int | None:
    return attach_and_stream(
        app,
        cid,
        tty=tty,
        stdin="stdin" in plan.attach,
        stdout="stdout" in plan.attach,
        stderr="stderr" in plan.attach,
        detach_keys=plan.detach_keys,
        start=True,
        wait_condition="removed" if plan.body["HostConfig"]["AutoRemove"] else "next-exit",
        sig_proxy=plan.sig_proxy,
        for_run=True,
    )


# --- simple verbs over many containers ---------------------------------------------


def _each(app: App, names: list[str], action: Any, echo: bool = True) -> int:
    failed = False
    for name in names:
        try:
            action(name)
            if echo:
                app.print(name)
        except APIError as exc:
            app.error(str(exc))
            failed = True
    return 1 if failed else 0


START = Command(
    "start",
    "start [OPTIONS] CONTAINER [CONTAINER...]",
    [
        Flag("attach", "a", BOOL, "Attach STDOUT/STDERR and forward signals"),
        Flag("interactive", "i", BOOL, "Attach container's STDIN"),
        Flag("detach-keys", kind=STR, help="Override the key sequence for detaching a container"),
    ],
    summary="Start one or more stopped containers",
)


def cmd_start(app: App, args: list[str]) -> int:
    parsed = START.parse(args)
    need_args(START, parsed, 1)
    client = app.client
    if parsed["attach"] or parsed["interactive"]:
        if len(parsed.args) > 1:
            raise UsageError("you cannot start and attach multiple containers at once")
        info = client.get(f"/containers/{parsed.args[0]}/json")
        cfg = info.get("Config") or {}
        tty = bool(cfg.get("Tty"))
        stdin = bool(parsed["interactive"] and cfg.get("OpenStdin"))
        _tty_check(tty, stdin)
        status = attach_and_stream(
            app,
            info["Id"],
            tty=tty,
            stdin=stdin,
            stdout=True,
            stderr=True,
            detach_keys=parsed["detach-keys"],
            start=True,
            wait_condition="next-exit",
            sig_proxy=True,
        )
        return 0 if status is None else status
    failed: list[str] = []
    for name in parsed.args:
        try:
            client.request("POST", f"/containers/{name}/start").read()
            app.print(name)
        except APIError as exc:
            app.error(str(exc))
            failed.append(name)
    if failed:
        raise Exit(1, f"Error: failed to start containers: {', '.join(failed)}")
    return 0


STOP = Command(
    "stop",
    "stop [OPTIONS] CONTAINER [CONTAINER...]",
    [
        Flag("signal", "s", STR, "Signal to send to the container"),
        Flag("timeout", "t", INT, "Seconds to wait before killing the container", default=None),
        Flag("time", kind=INT, help="Seconds to wait before killing the container (deprecated)"),
    ],
    summary="Stop one or more running containers",
)


def _stop_or_restart(app: App, command: Command, verb: str, args: list[str]) -> int:
    """``stop`` and ``restart``: the same flags, one POST per container."""
    parsed = command.parse(args)
    need_args(command, parsed, 1)
    query: dict[str, Any] = {}
    if parsed.was_set("timeout") or parsed.was_set("time"):
        query["t"] = parsed["timeout"] if parsed.was_set("timeout") else parsed["time"]
    if parsed["signal"]:
        query["signal"] = parsed["signal"]
    client = app.client
    return _each(
        app,
        parsed.args,
        lambda n: client.request("POST", f"/containers/{n}/{verb}", query=query).read(),
    )


def cmd_stop(app: App, args: list[str]) -> int:
    return _stop_or_restart(app, STOP, "stop", args)


RESTART = Command(
    "restart",
    "restart [OPTIONS] CONTAINER [CONTAINER...]",
    STOP.flags,
    summary="Restart one or more containers",
)


def cmd_restart(app: App, args: list[str]) -> int:
    return _stop_or_restart(app, RESTART, "restart", args)


KILL = Command(
    "kill",
    "kill [OPTIONS] CONTAINER [CONTAINER...]",
    [
        Flag("signal", "s", STR, "Signal to send to the container"),
    ],
    summary="Kill one or more running containers",
)


def cmd_kill(app: App, args: list[str]) -> int:
    parsed = KILL.parse(args)
    need_args(KILL, parsed, 1)
    query = {"signal": parsed["signal"]} if parsed["signal"] else {}
    client = app.client
    return _each(
        app,
        parsed.args,
        lambda n: client.request("POST", f"/containers/{n}/kill", query=query).read(),
    )


RM = Command(
    "rm",
    "rm [OPTIONS] CONTAINER [CONTAINER...]",
    [
        Flag("force", "f", BOOL, "Force the removal of a running container (uses SIGKILL)"),
        Flag("volumes", "v", BOOL, "Remove anonymous volumes associated with the container"),
        Flag("link", "l", BOOL, "Remove the specified link"),
    ],
    summary="Remove one or more containers",
)


def cmd_rm(app: App, args: list[str]) -> int:
    parsed = RM.parse(args)
    need_args(RM, parsed, 1)
    query = {"force": parsed["force"], "v": parsed["volumes"]}
    client = app.client
    return _each(
        app, parsed.args, lambda n: client.request("DELETE", f"/containers/{n}", query=query).read()
    )


WAIT = Command(
    "wait",
    "wait CONTAINER [CONTAINER...]",
    [],
    summary="Block until one or more containers stop, then print their exit codes",
)


def cmd_wait(app: App, args: list[str]) -> int:
    parsed = WAIT.parse(args)
    need_args(WAIT, parsed, 1)
    client = app.client
    return _each(
        app,
        parsed.args,
        lambda n: app.print(str(client.post(f"/containers/{n}/wait")["StatusCode"])),
        echo=False,
    )


RENAME = Command("rename", "rename CONTAINER NEW_NAME", [], summary="Rename a container")


def cmd_rename(app: App, args: list[str]) -> int:
    parsed = RENAME.parse(args)
    need_args(RENAME, parsed, 2, 2)
    old, new = parsed.args
    try:
        app.client.request("POST", f"/containers/{old}/rename", query={"name": new}).read()
    except APIError as exc:
        app.error(str(exc))
        raise Exit(1, f"Error: failed to rename container named {old}") from None
    return 0


# --- ps -------------------------------------------------------------------------

PS = Command(
    "ps",
    "ps [OPTIONS]",
    [
        Flag("all", "a", BOOL, "Show all containers (default shows just running)"),
        Flag("filter", "f", LIST, "Filter output based on conditions provided"),
        Flag("format", kind=STR, help="Format output using a custom template"),
        Flag("last", "n", INT, "Show n last created containers (includes all states)", default=-1),
        Flag("latest", "l", BOOL, "Show the latest created container (includes all states)"),
        Flag("no-trunc", kind=BOOL, help="Don't truncate output"),
        Flag("quiet", "q", BOOL, "Only display container IDs"),
        Flag("size", "s", BOOL, "Display total file sizes"),
    ],
    summary="List containers",
)

PS_HEADERS: dict[str, Any] = {
    "ID": "CONTAINER ID",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Ports": "PORTS",
    "State": "STATE",
    "Status": "STATUS",
    "Size": "SIZE",
    "Names": "NAMES",
    "Labels": "LABELS",
    "Mounts": "MOUNTS",
    "LocalVolumes": "LOCAL VOLUMES",
    "Networks": "NETWORKS",
    "Platform": "PLATFORM",
    "Label": lambda *_: "LABEL",
}
PS_DEFAULT = (
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
)


def filters_query(values: list[str]) -> str | None:
    """``--filter k=v`` (repeated) → docker's JSON ``{"k": {"v": true}}``."""
    if not values:
        return None
    out: dict[str, dict[str, bool]] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"bad format of filter (expected name=value): {item}")
        out.setdefault(key.strip().lower(), {})[value] = True
    return dumps(out)


def _ports(ports: list[dict[str, Any]] | None) -> str:
    """The PORTS column as docker's ``DisplayablePorts``: runs of consecutive ports grouped
    (``0.0.0.0:9000-9001->9000-9001/tcp``, ``80-81/tcp``), a host port other than the
    container's written out (``0.0.0.0:8080->80/tcp``, ``[::]:8080->80/tcp``)."""
    entries = sorted(
        ports or [],
        key=lambda p: (
            int(p.get("PrivatePort") or 0),
            str(p.get("IP") or ""),
            int(p.get("PublicPort") or 0),
            str(p.get("Type") or ""),
        ),
    )
    groups: dict[str, list[int]] = {}
    result: list[str] = []
    mappings: list[str] = []

    def form(key: str, first: int, last: int) -> str:
        ip, _, kind = key.rpartition("/")
        group = str(first) if first == last else f"{first}-{last}"
        if ip:
            group = f"{ip}:{group}->{group}"
        return f"{group}/{kind}"

    for p in entries:
        current = int(p.get("PrivatePort") or 0)
        kind = str(p.get("Type") or "tcp")
        ip = str(p.get("IP") or "")
        key = kind
        if ip:
            public = int(p.get("PublicPort") or 0)
            if public != current:
                host = f"[{ip}]" if ":" in ip else ip
                mappings.append(f"{host}:{public}->{current}/{kind}")
                continue
            key = f"{ip}/{kind}"
        group = groups.get(key)
        if group is None:
            groups[key] = [current, current]
        elif current == group[1] + 1:
            group[1] = current
        else:
            result.append(form(key, group[0], group[1]))
            groups[key] = [current, current]
    result += [form(key, g[0], g[1]) for key, g in groups.items()]
    return ", ".join(result + mappings)


def ps_context(c: dict[str, Any], trunc: bool = True) -> dict[str, Any]:
    """One ContainerSummary as docker's ps formatter sees it (all values strings)."""
    # here, not at the top: `run` and the other verbs need neither fmt nor units (~0.4 ms)
    from bulkhead.cli.fmt import ago, ellipsis, format_time, human_size, short_id

    names = [n[1:] if n.startswith("/") else n for n in c.get("Names") or []]
    names = [n for n in names if "/" not in n] or names
    image = str(c.get("Image", ""))
    if trunc and image.startswith("sha256:"):
        image = short_id(image)
    command = str(c.get("Command", ""))
    if trunc:
        command = ellipsis(command, 20)
    labels = c.get("Labels") or {}
    mounts = c.get("Mounts") or []
    size = ""
    if "SizeRw" in c or "SizeRootFs" in c:
        srw = human_size(float(c.get("SizeRw") or 0))
        size = srw
        if c.get("SizeRootFs"):
            size = f"{srw} (virtual {human_size(float(c['SizeRootFs']))})"
    networks = ((c.get("NetworkSettings") or {}).get("Networks")) or {}
    created = float(c.get("Created") or 0)
    mount_names = []
    for m in mounts:
        name = m.get("Name") or m.get("Source") or ""
        mount_names.append(ellipsis(name, 15) if trunc else name)
    return {
        "Command": dumps(command),
        "CreatedAt": format_time(created),
        "ID": str(c.get("Id", ""))[:12] if trunc else str(c.get("Id", "")),
        "Image": image,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "LocalVolumes": str(sum(1 for m in mounts if m.get("Driver") == "local")),
        "Mounts": ",".join(mount_names),
        "Names": ",".join(names),
        "Networks": ",".join(sorted(networks)),
        # docker 28 prints the image manifest's platform (null without one)
        "Platform": (c.get("ImageManifestDescriptor") or {}).get("platform"),
        "Ports": _ports(c.get("Ports")),
        "RunningFor": ago(created),
        "Size": size or "0B",
        "State": str(c.get("State", "")),
        "Status": str(c.get("Status", "")),
        "Label": lambda key: str(labels.get(key, "")),
    }


def render_contexts(
    app: App, fmt: str, contexts: list[dict[str, Any]], headers: dict[str, Any]
) -> None:
    """Print ``contexts`` through ``--format`` (docker's defaults need no template engine)."""
    from bulkhead.cli.fmt import expand_format, simple_columns, tabwrite

    source, table = expand_format(fmt)
    columns = simple_columns(source) if fmt != "json" else None
    if columns is not None and all(isinstance(headers.get(c, ""), str) for c in columns):
        lines = ["\t".join(str(headers.get(c, "")) for c in columns)] if table else []
        for ctx in contexts:
            lines.append("\t".join(str(ctx.get(c, "<no value>")) for c in columns))
        text = tabwrite(lines) if table else "\n".join(lines)
        app.out.write(text + "\n" if text else "")
        return
    from bulkhead.cli.template import TemplateError, go_json, render_list

    if fmt == "json":
        # docker's `--format json` is json.Marshal (HTML-escaped), unlike `{{json .}}`
        for ctx in contexts:
            text = go_json({k: v for k, v in sorted(ctx.items()) if not callable(v)})
            text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            app.print(text)
        return
    try:
        app.out.write(render_list(fmt, contexts, headers))
    except TemplateError as exc:
        raise Exit(1, f"template parsing error: {exc}") from None


def cmd_ps(app: App, args: list[str]) -> int:
    parsed = PS.parse(args)
    need_args(PS, parsed, 0, 0)
    limit = 1 if parsed["latest"] else parsed["last"]
    # as docker: a format that shows .Size asks the daemon for sizes
    wants_size = parsed["size"] or ".Size" in (parsed["format"] or "")
    query: dict[str, Any] = {
        "all": parsed["all"] or limit > 0 or None,
        "limit": limit if limit > 0 else None,
        "size": wants_size or None,
        "filters": filters_query(parsed["filter"]),
    }
    containers = app.client.get("/containers/json", **query) or []
    trunc = not parsed["no-trunc"]
    if parsed["quiet"]:
        for c in containers:
            app.print(c["Id"][:12] if trunc else c["Id"])
        return 0
    fmt = parsed["format"] or (PS_DEFAULT + ("\t{{.Size}}" if parsed["size"] else ""))
    render_contexts(app, fmt, [ps_context(c, trunc) for c in containers], PS_HEADERS)
    return 0


# --- logs, attach, exec ----------------------------------------------------------

LOGS = Command(
    "logs",
    "logs [OPTIONS] CONTAINER",
    [
        Flag("details", kind=BOOL, help="Show extra details provided to logs"),
        Flag("follow", "f", BOOL, "Follow log output"),
        Flag("since", kind=STR, help="Show logs since timestamp or relative (e.g. 42m)"),
        Flag("tail", "n", STR, "Number of lines to show from the end of the logs", default="all"),
        Flag("timestamps", "t", BOOL, "Show timestamps"),
        Flag("until", kind=STR, help="Show logs before a timestamp or relative (e.g. 42m)"),
    ],
    summary="Fetch the logs of a container",
)


def cmd_logs(app: App, args: list[str]) -> int:
    from bulkhead.cli.fmt import parse_since
    from bulkhead.cli.stream import Demuxer

    parsed = LOGS.parse(args)
    need_args(LOGS, parsed, 1, 1)
    client = app.client
    info = client.get(f"/containers/{parsed.args[0]}/json")
    tty = bool((info.get("Config") or {}).get("Tty"))
    try:
        since = parse_since(parsed["since"])
        until = parse_since(parsed["until"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    query = {
        "stdout": 1,
        "stderr": 1,
        "follow": parsed["follow"] or None,
        "since": since or None,
        "until": until or None,
        "timestamps": parsed["timestamps"] or None,
        "details": parsed["details"] or None,
        "tail": parsed["tail"],
    }
    resp = client.request("GET", f"/containers/{info['Id']}/logs", query=query)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    app.out.flush()
    demux = None if tty else Demuxer()
    for chunk in resp.chunks():
        if demux is None:
            out.write(chunk)
            out.flush()
            continue
        for stream, payload in demux.feed(chunk):
            target = err if stream == 2 else out
            target.write(payload)
            target.flush()
    return 0


ATTACH = Command(
    "attach",
    "attach [OPTIONS] CONTAINER",
    [
        Flag("detach-keys", kind=STR, help="Override the key sequence for detaching a container"),
        Flag("no-stdin", kind=BOOL, help="Do not attach STDIN"),
        Flag(
            "sig-proxy", kind=BOOL, default=True, help="Proxy all received signals to the process"
        ),
    ],
    summary="Attach local standard input, output, and error streams to a running container",
)


def cmd_attach(app: App, args: list[str]) -> int:
    parsed = ATTACH.parse(args)
    need_args(ATTACH, parsed, 1, 1)
    client = app.client
    info = client.get(f"/containers/{parsed.args[0]}/json")
    state = info.get("State") or {}
    if not state.get("Running"):
        raise Exit(1, "You cannot attach to a stopped container, start it first")
    if state.get("Paused"):
        raise Exit(1, "You cannot attach to a paused container, unpause it first")
    cfg = info.get("Config") or {}
    tty = bool(cfg.get("Tty"))
    stdin = bool(cfg.get("OpenStdin")) and not parsed["no-stdin"]
    _tty_check(tty, stdin)
    status = attach_and_stream(
        app,
        info["Id"],
        tty=tty,
        stdin=stdin,
        stdout=True,
        stderr=True,
        detach_keys=parsed["detach-keys"],
        sig_proxy=parsed["sig-proxy"],
    )
    if status is None:
        return 0
    final = client.get(f"/containers/{info['Id']}/json")
    return int((final.get("State") or {}).get("ExitCode") or 0)


EXEC = Command(
    "exec",
    "exec [OPTIONS] CONTAINER COMMAND [ARG...]",
    [
        Flag("detach", "d", BOOL, "Detached mode: run command in the background"),
        Flag("detach-keys", kind=STR, help="Override the key sequence for detaching a container"),
        Flag("env", "e", LIST, "Set environment variables"),
        Flag("env-file", kind=LIST, help="Read in a file of environment variables"),
        Flag("interactive", "i", BOOL, "Keep STDIN open even if not attached"),
        Flag("privileged", kind=BOOL, help="Give extended privileges to the command"),
        Flag("tty", "t", BOOL, "Allocate a pseudo-TTY"),
        Flag("user", "u", STR, "Username or UID (format: <name|uid>[:<group|gid>])"),
        Flag("workdir", "w", STR, "Working directory inside the container"),
    ],
    interspersed=False,
    summary="Execute a command in a running container",
)


def cmd_exec(app: App, args: list[str]) -> int:
    from bulkhead.cli.runflags import env_list, parse_env_file

    parsed = EXEC.parse(args)
    need_args(EXEC, parsed, 2)
    tty, interactive, detach = (
        bool(parsed["tty"]),
        bool(parsed["interactive"]),
        bool(parsed["detach"]),
    )
    if not detach:
        _tty_check(tty, interactive)
    env: list[str] = []
    for path in parsed["env-file"]:
        env += parse_env_file(path, os.environ)
    env += env_list(parsed["env"], os.environ)
    size = _console_size(tty)
    body = {
        "User": parsed["user"],
        "Privileged": bool(parsed["privileged"]),
        "Tty": tty,
        "ConsoleSize": [size[0], size[1]],
        "AttachStdin": interactive and not detach,
        "AttachStderr": not detach,
        "AttachStdout": not detach,
        "Detach": detach,
        "DetachKeys": parsed["detach-keys"],
        "Env": env or None,
        "WorkingDir": parsed["workdir"],
        "Cmd": parsed.args[1:],
    }
    client = app.client
    container = parsed.args[0]
    info = client.get(f"/containers/{container}/json")
    if not (info.get("State") or {}).get("Running"):
        raise Exit(1, f"Error response from daemon: container {info['Id']} is not running")
    exec_id = client.post(f"/containers/{container}/exec", body)["Id"]
    start_body = {"Detach": detach, "Tty": tty, "ConsoleSize": [size[0], size[1]]}
    if detach:
        client.request("POST", f"/exec/{exec_id}/start", body=start_body).read()
        return 0
    from bulkhead.cli.stream import parse_detach_keys, pump

    try:
        sock, leftover, _ = client.hijack("POST", f"/exec/{exec_id}/start", body=start_body)
    except APIError as exc:
        raise Exit(start_error_status(exc.message), str(exc)) from None

    def resize(h: int, w: int) -> None:
        client.request("POST", f"/exec/{exec_id}/resize", query={"h": h, "w": w}).read()

    app.out.flush()
    keep = pump(
        sock,
        leftover,
        tty=tty,
        stdin=interactive,
        on_resize=resize if tty else None,
        detach_keys=parse_detach_keys(parsed["detach-keys"]),
    )
    if not keep:
        return 0
    result = client.get(f"/exec/{exec_id}/json")
    code = result.get("ExitCode")
    return int(code) if code is not None else 0


# --- files: cp, export, diff, commit, port -----------------------------------------

EXPORT = Command(
    "export",
    "export [OPTIONS] CONTAINER",
    [
        Flag("output", "o", STR, "Write to a file, instead of STDOUT"),
    ],
    summary="Export a container's filesystem as a tar archive",
)


def write_stream(app: App, resp: Any, output: str) -> None:
    """A response body to ``output`` (a file, written then renamed) or stdout (not a terminal)."""
    if not output:
        if os.isatty(1):
            raise Exit(1, "cowardly refusing to save to a terminal. Use the -o flag or redirect")
        app.out.flush()
        for chunk in resp.chunks():
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    tmp = f"{output}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            for chunk in resp.chunks():
                fh.write(chunk)
        os.replace(tmp, output)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cmd_export(app: App, args: list[str]) -> int:
    parsed = EXPORT.parse(args)
    need_args(EXPORT, parsed, 1, 1)
    if not parsed["output"] and os.isatty(1):
        raise Exit(1, "cowardly refusing to save to a terminal. Use the -o flag or redirect")
    resp = app.client.request("GET", f"/containers/{parsed.args[0]}/export")
    write_stream(app, resp, parsed["output"])
    return 0


DIFF = Command(
    "diff",
    "diff CONTAINER",
    [],
    summary="Inspect changes to files or directories on a container's filesystem",
)


def cmd_diff(app: App, args: list[str]) -> int:
    parsed = DIFF.parse(args)
    need_args(DIFF, parsed, 1, 1)
    changes = app.client.get(f"/containers/{parsed.args[0]}/changes") or []
    for change in changes:
        kind = {0: "C", 1: "A", 2: "D"}.get(int(change.get("Kind", 0)), "?")
        app.print(f"{kind} {change.get('Path')}")
    return 0


COMMIT = Command(
    "commit",
    "commit [OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
    [
        Flag("author", "a", STR, 'Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")'),
        Flag("change", "c", LIST, "Apply Dockerfile instruction to the created image"),
        Flag("message", "m", STR, "Commit message"),
        Flag("pause", "p", BOOL, "Pause container during commit", default=True),
    ],
    summary="Create a new image from a container's changes",
)


def split_repo_tag(ref: str) -> tuple[str, str]:
    """``repo:tag`` → (repo, tag); a registry's port is not a tag; ``@digest`` stays in repo."""
    if "@" in ref:
        return ref, ""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, ""


def cmd_commit(app: App, args: list[str]) -> int:
    parsed = COMMIT.parse(args)
    need_args(COMMIT, parsed, 1, 2)
    repo, tag = split_repo_tag(parsed.args[1]) if len(parsed.args) > 1 else ("", "")
    query = {
        "container": parsed.args[0],
        "repo": repo or None,
        "tag": tag or None,
        "comment": parsed["message"] or None,
        "author": parsed["author"] or None,
        "pause": parsed["pause"],
        "changes": parsed["change"] or None,
    }
    reply = app.client.post("/commit", None, **query)
    app.print(str(reply.get("Id", "")))
    return 0


PORT = Command(
    "port",
    "port CONTAINER [PRIVATE_PORT[/PROTO]]",
    [],
    summary="List port mappings or a specific mapping for the container",
)


def cmd_port(app: App, args: list[str]) -> int:
    parsed = PORT.parse(args)
    need_args(PORT, parsed, 1, 2)
    info = app.client.get(f"/containers/{parsed.args[0]}/json")
    ports = ((info.get("NetworkSettings") or {}).get("Ports")) or {}
    if len(parsed.args) == 2:
        want = parsed.args[1] if "/" in parsed.args[1] else parsed.args[1] + "/tcp"
        bindings = ports.get(want)
        if not bindings:
            raise Exit(1, f"Error: No public port '{want}' published for {parsed.args[0]}")
        for b in bindings:
            app.print(_join_host_port(b))
        return 0
    out = [f"{key} -> {_join_host_port(b)}" for key in ports for b in ports[key] or []]
    for line in sorted(out):
        app.print(line)
    return 0


def _join_host_port(binding: dict[str, Any]) -> str:
    """Go's ``net.JoinHostPort``: ``0.0.0.0:8080``, ``[::]:8080``."""
    ip = str(binding.get("HostIp") or "0.0.0.0")
    return f"[{ip}]:{binding.get('HostPort')}" if ":" in ip else f"{ip}:{binding.get('HostPort')}"


CP = Command(
    "cp",
    "cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n\tbulkhead cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH",
    [
        Flag("archive", "a", BOOL, "Archive mode (copy all uid/gid information)"),
        Flag("follow-link", "L", BOOL, "Always follow symbol link in SRC_PATH"),
        Flag("quiet", "q", BOOL, "Suppress progress output during copy"),
    ],
    summary="Copy files/folders between a container and the local filesystem",
)


def _split_cp(arg: str) -> tuple[str, str]:
    if arg.startswith(("/", ".")) or ":" not in arg:
        return "", arg
    container, _, path = arg.partition(":")
    return container, path


def _stat_header(resp: Any) -> dict[str, Any]:
    import base64

    raw = resp.headers.get("x-docker-container-path-stat", "")
    if not raw:
        return {}
    try:
        doc = loads(base64.b64decode(raw + "=" * (-len(raw) % 4)))
        return doc if isinstance(doc, dict) else {}
    except ValueError:
        return {}


def cmd_cp(app: App, args: list[str]) -> int:
    parsed = CP.parse(args)
    need_args(CP, parsed, 2, 2)
    (src_c, src), (dst_c, dst) = _split_cp(parsed.args[0]), _split_cp(parsed.args[1])
    if src_c and dst_c:
        raise UsageError("copying between containers is not supported")
    if not src_c and not dst_c:
        raise UsageError("must specify at least one container source")
    if src_c:
        return _copy_from(app, src_c, src, dst)
    return _copy_to(app, src, dst_c, dst, parsed["archive"])


def _copy_from(app: App, container: str, src: str, dst: str) -> int:
    import tarfile

    resp = app.client.request("GET", f"/containers/{container}/archive", query={"path": src})
    if dst == "-":
        write_stream(app, resp, "")
        return 0
    stat = _stat_header(resp)
    base = os.path.basename(src.rstrip("/")) or stat.get("name", "")
    if os.path.isdir(dst):
        target_dir, rename = dst, None
    else:
        if dst.endswith("/"):
            raise Exit(1, f"Error: destination directory {dst} does not exist")
        target_dir, rename = os.path.dirname(os.path.abspath(dst)), os.path.basename(dst)

    class _Reader:
        def __init__(self, chunks: Any) -> None:
            self._it = iter(chunks)
            self._buf = b""

        def read(self, n: int = -1) -> bytes:
            while n < 0 or len(self._buf) < n:
                try:
                    self._buf += next(self._it)
                except StopIteration:
                    break
            if n < 0:
                out, self._buf = self._buf, b""
            else:
                out, self._buf = self._buf[:n], self._buf[n:]
            return out

    with tarfile.open(fileobj=_Reader(resp.chunks()), mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            name = member.name
            if rename is not None:
                first, _, rest = name.partition("/")
                name = rename + ("/" + rest if rest else "") if first == base else name
            member.name = name
            tar.extract(member, target_dir, filter="tar")
    return 0


def _copy_to(app: App, src: str, container: str, dst: str, archive: bool) -> int:
    import io
    import tarfile

    client = app.client
    if src == "-":
        data_iter = iter(lambda: sys.stdin.buffer.read(65536), b"")
        client.request(
            "PUT",
            f"/containers/{container}/archive",
            query={"path": dst},
            body=data_iter,
            headers={"Content-Type": "application/x-tar"},
        ).read()
        return 0
    if not os.path.lexists(src):
        raise Exit(1, f"lstat {os.path.abspath(src)}: no such file or directory")
    # Where does it go? An existing directory in the container receives SRC by its
    # name; otherwise DST names the copy, in DST's parent directory.
    stat_resp = client.send("HEAD", f"/containers/{container}/archive", query={"path": dst})
    stat = _stat_header(stat_resp) if stat_resp.status == 200 else {}
    stat_resp.close()
    if stat and int(stat.get("mode", 0)) & (1 << 31):
        parent, name = dst, os.path.basename(os.path.abspath(src))
    else:
        if dst.endswith("/"):
            raise Exit(
                1,
                f"Error response from daemon: Could not find the file {dst} in container {container}",
            )
        parent, name = os.path.dirname(dst.rstrip("/")) or "/", os.path.basename(dst.rstrip("/"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
            if not archive:
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
            return info

        tar.add(src, arcname=name, filter=owner)
    data = buf.getvalue()
    client.request(
        "PUT",
        f"/containers/{container}/archive",
        query={"path": parent},
        body=iter([data[i : i + 65536] for i in range(0, len(data), 65536)]),
        headers={"Content-Type": "application/x-tar"},
    ).read()
    return 0


# --- container inspect / prune ----------------------------------------------------


def cmd_container_inspect(app: App, args: list[str]) -> int:
    from bulkhead.cli.system import inspect_objects

    return inspect_objects(app, args, "container")


PRUNE = Command(
    "container prune",
    "container prune [OPTIONS]",
    [
        Flag("filter", kind=LIST, help='Provide filter values (e.g. "until=<timestamp>")'),
        Flag("force", "f", BOOL, "Do not prompt for confirmation"),
    ],
    summary="Remove all stopped containers",
)


def confirm(app: App, question: str) -> bool:
    app.out.write(f"{question} [y/N] ")
    app.out.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def cmd_container_prune(app: App, args: list[str]) -> int:
    parsed = PRUNE.parse(args)
    need_args(PRUNE, parsed, 0, 0)
    if not parsed["force"] and not confirm(
        app, "WARNING! This will remove all stopped containers.\nAre you sure you want to continue?"
    ):
        return 0
    reply = app.client.post("/containers/prune", None, filters=filters_query(parsed["filter"]))
    deleted = reply.get("ContainersDeleted") or []
    if deleted:
        app.print("Deleted Containers:")
        for cid in deleted:
            app.print(cid)
        app.print()
    from bulkhead.cli.fmt import human_size

    app.print(f"Total reclaimed space: {human_size(float(reply.get('SpaceReclaimed') or 0))}")
    return 0
