"""``bulkhead-runtime``: the runc-compatible command line.

Verbs, flags, output and exit codes follow runc's, so that containerd,
Podman (through conmon) and Kubernetes can use this runtime in its place::

    bulkhead-runtime [--root DIR] [--log FILE] [--log-format text|json] [--debug]
                     [--systemd-cgroup] VERB [flags] ID ...

Like runc (whose flag parser is Go's), long flags may also be written with
a single dash (``-bundle``) and with ``=`` (``--bundle=DIR``).

Start-up time matters (``create``/``start``/``delete`` are three fresh
processes per container): this module imports only what every verb needs;
each verb imports the rest when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from bulkhead import __version__
from bulkhead.errors import BulkheadError, SpecError

if TYPE_CHECKING:
    from bulkhead.runtime.container import Runtime

PROG = "bulkhead-runtime"


# ---------------------------------------------------------------------- logging


class Logger:
    """runc's logging: text (logrus) or JSON lines, to --log or to stderr."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.format = "text"
        self.debug = False

    def write(self, level: str, msg: str) -> None:
        if level == "debug" and not self.debug:
            return
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.format == "json":
            line = json.dumps({"level": level, "msg": msg, "time": ts})
        else:
            line = f'time="{ts}" level={level} msg={json.dumps(msg)}'
        if self.path:
            try:
                with open(self.path, "a") as f:
                    f.write(line + "\n")
            except OSError:
                sys.stderr.write(line + "\n")
        else:
            sys.stderr.write(line + "\n")

    def fatal(self, msg: str, code: int) -> NoReturn:
        self.write("error", msg)
        if self.path:
            # As runc: the error also goes to stderr when the log goes elsewhere.
            sys.stderr.write(msg + "\n")
        sys.stderr.flush()
        raise SystemExit(code)


LOG = Logger()


# ---------------------------------------------------------------------- parser


def _id(p: argparse.ArgumentParser) -> None:
    p.add_argument("container_id", metavar="<container-id>")


def _create_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", "-b", default=".", help="path to the root of the bundle directory")
    p.add_argument(
        "--console-socket", help="path to an AF_UNIX socket which will receive the pty master"
    )
    p.add_argument("--pid-file", help="file to write the process id to")
    p.add_argument(
        "--no-pivot",
        action="store_true",
        help="do not use pivot root to jail process inside rootfs",
    )
    p.add_argument(
        "--no-new-keyring", action="store_true", help="do not create a new session keyring"
    )
    p.add_argument("--preserve-fds", type=int, default=0, help="pass N additional file descriptors")


#: Global flags that take a value (so the word after them is not the verb).
_GLOBAL_VALUE_FLAGS = ("log", "log-format", "root", "criu", "rootless")


def find_verb(argv: Sequence[str]) -> str | None:
    """The verb of a command line: the first word that is not a global flag or its value."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--":
            return None
        if arg.startswith("-"):
            if "=" not in arg and arg.lstrip("-") in _GLOBAL_VALUE_FLAGS:
                skip = True
            continue
        return arg
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line grammar, or the global flags and just the verb ``only``.

    Building one sub-parser instead of sixteen saves milliseconds of every
    container start; ``--help`` and unknown verbs get the full parser.
    """
    p = argparse.ArgumentParser(prog=PROG, description="runc-compatible OCI runtime of bulkhead")
    p.add_argument("--version", "-v", action="store_true", help="print the version")
    p.add_argument("--debug", action="store_true", help="enable debug logging")
    p.add_argument("--log", default="", help="set the log file to write runtime logs to")
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    p.add_argument(
        "--root",
        default="/run/bulkhead-runtime",
        help="root directory for storage of container state",
    )
    p.add_argument("--criu", default="criu", help=argparse.SUPPRESS)
    p.add_argument("--systemd-cgroup", action="store_true", help="use the systemd cgroup driver")
    p.add_argument(
        "--rootless", default="auto", help="ignore cgroup permission errors (true, false, auto)"
    )
    sub = p.add_subparsers(dest="verb", metavar="COMMAND")
    if only is not None and only in VERBS:
        _VERB_PARSERS[only](sub)
    else:
        for add in _VERB_PARSERS.values():
            add(sub)
    return p


_Sub = Any  # argparse's private _SubParsersAction


def _add_create(sub: _Sub) -> None:
    c = sub.add_parser("create", help="create a container")
    _create_flags(c)
    _id(c)


def _add_run(sub: _Sub) -> None:
    r = sub.add_parser("run", help="create and run a container")
    _create_flags(r)
    r.add_argument(
        "--detach", "-d", action="store_true", help="detach from the container's process"
    )
    r.add_argument("--keep", action="store_true", help="do not delete the container after it exits")
    _id(r)


def _add_start(sub: _Sub) -> None:
    _id(sub.add_parser("start", help="start a created container"))


def _add_state(sub: _Sub) -> None:
    _id(sub.add_parser("state", help="output the state of a container"))


def _add_kill(sub: _Sub) -> None:
    k = sub.add_parser("kill", help="send a signal to the container's init process")
    k.add_argument(
        "--all", "-a", action="store_true", help="send the signal to all processes in the container"
    )
    _id(k)
    k.add_argument("signal", nargs="?", default="SIGTERM")


def _add_delete(sub: _Sub) -> None:
    d = sub.add_parser("delete", help="delete a container")
    d.add_argument(
        "--force", "-f", action="store_true", help="kill the container first if it is running"
    )
    d.add_argument("container_ids", nargs="+", metavar="<container-id>")


def _add_exec(sub: _Sub) -> None:
    e = sub.add_parser("exec", help="execute a new process inside the container")
    e.add_argument("--console-socket")
    e.add_argument("--cwd", default="")
    e.add_argument("--env", "-e", action="append", default=[])
    e.add_argument("--tty", "-t", action="store_true")
    e.add_argument("--user", "-u", default="")
    e.add_argument("--additional-gids", "-g", action="append", default=[])
    e.add_argument("--process", "-p", default="")
    e.add_argument("--detach", "-d", action="store_true")
    e.add_argument("--pid-file")
    e.add_argument("--process-label", default="")
    e.add_argument("--apparmor", default="")
    e.add_argument("--no-new-privs", action="store_true")
    e.add_argument("--cap", "-c", action="append", default=[])
    e.add_argument("--preserve-fds", type=int, default=0)
    e.add_argument("--cgroup", action="append", default=[], help=argparse.SUPPRESS)
    e.add_argument("--ignore-paused", action="store_true", help=argparse.SUPPRESS)
    _id(e)
    e.add_argument("command", nargs=argparse.REMAINDER)


def _add_ps(sub: _Sub) -> None:
    ps = sub.add_parser("ps", help="list the processes running inside a container")
    ps.add_argument("--format", "-f", default="table", choices=["table", "json"])
    _id(ps)
    ps.add_argument("ps_args", nargs=argparse.REMAINDER)


def _add_list(sub: _Sub) -> None:
    ls = sub.add_parser("list", help="list containers")
    ls.add_argument("--format", "-f", default="table", choices=["table", "json"])
    ls.add_argument("--quiet", "-q", action="store_true")


def _add_spec(sub: _Sub) -> None:
    sp = sub.add_parser("spec", help="create a new specification file")
    sp.add_argument("--bundle", "-b", default="")
    sp.add_argument("--rootless", action="store_true")


def _add_features(sub: _Sub) -> None:
    sub.add_parser("features", help="show the enabled features")


def _add_pause(sub: _Sub) -> None:
    _id(sub.add_parser("pause", help="pause all processes in the container"))


def _add_resume(sub: _Sub) -> None:
    _id(sub.add_parser("resume", help="resume all processes in the container"))


def _add_update(sub: _Sub) -> None:
    u = sub.add_parser("update", help="update container resource constraints")
    u.add_argument("--resources", "-r", default="")
    for flag in (
        "blkio-weight",
        "cpu-period",
        "cpu-quota",
        "cpu-share",
        "cpu-rt-period",
        "cpu-rt-runtime",
        "cpuset-cpus",
        "cpuset-mems",
        "kernel-memory",
        "kernel-memory-tcp",
        "memory",
        "memory-reservation",
        "memory-swap",
        "pids-limit",
        "l3-cache-schema",
        "mem-bw-schema",
        "cpu-idle",
        "cpu-burst",
    ):
        u.add_argument("--" + flag, default=None)
    _id(u)


def _add_events(sub: _Sub) -> None:
    ev = sub.add_parser(
        "events", help="display container events such as OOM notifications and stats"
    )
    ev.add_argument("--interval", default="5s")
    ev.add_argument("--stats", action="store_true")
    _id(ev)


_VERB_PARSERS: dict[str, Callable[[_Sub], None]] = {
    "create": _add_create,
    "run": _add_run,
    "start": _add_start,
    "state": _add_state,
    "kill": _add_kill,
    "delete": _add_delete,
    "exec": _add_exec,
    "ps": _add_ps,
    "list": _add_list,
    "spec": _add_spec,
    "features": _add_features,
    "pause": _add_pause,
    "resume": _add_resume,
    "update": _add_update,
    "events": _add_events,
}


def normalize_argv(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """Accept Go-style single-dash long flags (``-bundle x``) as runc does."""
    names: set[str] = set()
    stack = [parser]
    while stack:
        cur = stack.pop()
        for action in cur._actions:
            names.update(o[2:] for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    out = []
    passthrough = False
    for arg in argv:
        if passthrough:
            out.append(arg)
            continue
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            name = arg[1:].split("=", 1)[0]
            if name in names:
                arg = "-" + arg
        out.append(arg)
        if arg == "--":
            passthrough = True
    return out


# ---------------------------------------------------------------------- verbs


def _runtime(args: argparse.Namespace) -> Runtime:
    from bulkhead.runtime.container import Runtime

    return Runtime(args.root, systemd_cgroup=args.systemd_cgroup)


def _create_options(args: argparse.Namespace) -> Any:
    from bulkhead.runtime.container import CreateOptions

    return CreateOptions(
        bundle=args.bundle,
        console_socket=args.console_socket,
        pid_file=args.pid_file,
        no_pivot=args.no_pivot,
        no_new_keyring=args.no_new_keyring,
        preserve_fds=args.preserve_fds,
    )


def cmd_create(args: argparse.Namespace) -> int:
    _runtime(args).create(args.container_id, _create_options(args))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bulkhead.runtime import foreground

    return foreground.run(
        _runtime(args), args.container_id, _create_options(args), detach=args.detach, keep=args.keep
    )


def cmd_start(args: argparse.Namespace) -> int:
    _runtime(args).start(args.container_id)
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    doc = _runtime(args).state(args.container_id)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    from bulkhead.runtime.container import signal_number

    sig = signal_number(args.signal)
    _runtime(args).kill(args.container_id, sig, all_processes=args.all)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    for cid in args.container_ids:
        rt.delete(cid, force=args.force)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from bulkhead.runtime import foreground

    return foreground.exec_from_cli(_runtime(args), args)


def cmd_ps(args: argparse.Namespace) -> int:
    import subprocess

    rt = _runtime(args)
    st = rt.load(args.container_id)
    if rt.status(st) == "stopped":
        raise BulkheadError(f"container {args.container_id} is not running")
    pids = rt.pids(args.container_id)
    if args.format == "json":
        sys.stdout.write(json.dumps(pids) + "\n")
        return 0
    ps_args = [a for a in args.ps_args if a != "--"] or ["-ef"]
    out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise BulkheadError(f"ps {' '.join(ps_args)} failed: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    try:
        pid_col = header.index("PID")
    except ValueError:
        raise BulkheadError("couldn't find PID field in ps output") from None
    wanted: set[int] = set(pids)
    sys.stdout.write(lines[0] + "\n")
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > pid_col and fields[pid_col].isdigit() and int(fields[pid_col]) in wanted:
            sys.stdout.write(line + "\n")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    docs = _runtime(args).list_containers()
    if args.quiet:
        for doc in docs:
            sys.stdout.write(doc["id"] + "\n")
        return 0
    if args.format == "json":
        sys.stdout.write(json.dumps(docs) + "\n")
        return 0
    rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
    for doc in docs:
        rows.append(
            [doc["id"], str(doc["pid"]), doc["status"], doc["bundle"], doc["created"], doc["owner"]]
        )
    widths = [max(12, *(len(r[i]) for r in rows)) + 3 for i in range(len(rows[0]) - 1)]
    for r in rows:
        sys.stdout.write(
            "".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + r[-1] + "\n"
        )
    return 0


def cmd_spec(args: argparse.Namespace) -> int:
    from bulkhead.oci.defaults import default_spec

    path = os.path.join(args.bundle or ".", "config.json")
    if os.path.exists(path):
        raise BulkheadError("File config.json exists. Remove it first")
    data = json.dumps(default_spec(rootless=args.rootless), indent="\t")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(data)
    os.rename(tmp, path)
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from bulkhead.runtime.features import features_document

    sys.stdout.write(json.dumps(features_document(), indent=4) + "\n")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    _runtime(args).pause(args.container_id)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    _runtime(args).resume(args.container_id)
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from bulkhead.runtime.update import resources_from_cli

    rt = _runtime(args)
    rt.update(args.container_id, resources_from_cli(args))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from bulkhead.runtime.events import events

    status: int = events(
        _runtime(args), args.container_id, stats_only=args.stats, interval=args.interval
    )
    return status


VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "create": cmd_create,
    "run": cmd_run,
    "start": cmd_start,
    "state": cmd_state,
    "kill": cmd_kill,
    "delete": cmd_delete,
    "exec": cmd_exec,
    "ps": cmd_ps,
    "list": cmd_list,
    "spec": cmd_spec,
    "features": cmd_features,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "update": cmd_update,
    "events": cmd_events,
}


def version_text() -> str:
    return f"{PROG} version {__version__}\nspec: 1.2.0\npython: {sys.version.split()[0]}\n"


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``bulkhead-runtime`` program: run one verb, then exit at once.

    The exit skips the interpreter's tear-down (freeing every module and
    object one by one, several milliseconds of each container start): by
    then the verb has finished its work, and stdout and stderr are flushed.
    """
    try:
        run_cli(argv)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            sys.stderr.write(exc.code + "\n")
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    else:
        code = 0
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def run_cli(argv: Sequence[str] | None = None) -> NoReturn:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the verb; ends in SystemExit."""
    raw = list(sys.argv[1:] if argv is None else argv)
    # msgspec uses typing_extensions when it can import it, for nothing the
    # runtime needs, at ~7 ms a start: a dev venv has it (mypy), a plain
    # install does not. Make both behave like the plain install.
    sys.modules.setdefault("typing_extensions", None)  # type: ignore[arg-type]
    verb = find_verb(raw)
    parser = build_parser(None if "-h" in raw or "--help" in raw else verb)
    args = parser.parse_args(normalize_argv(raw, parser))
    LOG.path = args.log or None
    LOG.format = args.log_format
    LOG.debug = args.debug
    if args.version:
        sys.stdout.write(version_text())
        raise SystemExit(0)
    if not args.verb:
        parser.print_help()
        raise SystemExit(0)
    try:
        code = VERBS[args.verb](args)
    except BulkheadError as exc:
        LOG.fatal(_error_text(args.verb, exc), exc.exit_code)
    except OSError as exc:
        LOG.fatal(str(exc), 1)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    sys.stdout.flush()
    raise SystemExit(code)


def _error_text(verb: str, exc: BulkheadError) -> str:
    from bulkhead.errors import StartError

    if isinstance(exc, StartError):
        return f"{PROG} {verb} failed: unable to start container process: {exc}"
    if isinstance(exc, SpecError) and verb in ("create", "run"):
        return f"{PROG} {verb} failed: {exc}"
    return str(exc)


if __name__ == "__main__":
    main()
