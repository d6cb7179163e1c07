"""``bulkhead-runtime``: the runc-compatible command line.

Verbs, flags, output and exit codes follow runc's, so that containerd,
Podman (through conmon) and Kubernetes can use this runtime in its place::

    bulkhead-runtime [--root DIR] [--log FILE] [--log-format text|json] [--debug]
                     [--systemd-cgroup] VERB [flags] ID ...

The grammar is runc's too (Go's ``flag`` package under urfave/cli:
``-bundle x`` and ``--bundle=x`` alike, flags stop at the first positional
of ``exec`` and ``ps``, ``--detach=false``): :mod:`bulkhead.runtime.flags`
parses it from the table :data:`APP` below.

Start-up time matters (``create``/``start``/``delete`` are three fresh
processes per container): this module imports only what every verb needs
(not even ``json``, which imports ``re``); each verb imports the rest when
it runs.
"""

from __future__ import annotations

import os
import sys
import time

from bulkhead import __version__, logs
from bulkhead.errors import BulkheadError, SpecError
from bulkhead.runtime.flags import (
    BOOL,
    INT,
    LIST,
    OPTIONAL,
    REST,
    SOME,
    STRING,
    App,
    Arg,
    Command,
    Flag,
    Namespace,
    UsageError,
)

# Not ``typing``: on Python 3.11 it imports ``re``. mypy takes any name
# TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

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
            line = f'{{"level":"{level}","msg":{_quote(msg)},"time":"{ts}"}}'
        else:
            line = f'time="{ts}" level={level} msg={_quote(msg)}'
        if self.path:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
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

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def _quote(text: str) -> str:
    """``text`` as a JSON string literal: logrus's quoting in either format, near enough.

    (Not ``json.dumps``: ``json`` imports ``re``, milliseconds of every start.)
    """
    out = []
    for ch in text:
        esc = _ESCAPES.get(ch)
        if esc is None and (ch < " " or "\ud800" <= ch <= "\udfff"):
            esc = f"\\u{ord(ch):04x}"
        out.append(esc or ch)
    return '"' + "".join(out) + '"'


# ---------------------------------------------------------------------- parser

#: The flags of ``create`` and ``run``.
_CREATE_FLAGS = (
    Flag(
        "bundle, b",
        STRING,
        ".",
        "path to the root of the bundle directory, defaults to the current directory",
    ),
    Flag(
        "console-socket",
        help="path to an AF_UNIX socket which will receive a file descriptor referencing"
        " the master end of the console's pseudoterminal",
    ),
    Flag("pid-file", help="specify the file to write the process id to"),
    Flag("no-pivot", BOOL, help="do not use pivot root to jail process inside rootfs"),
    Flag("no-new-keyring", BOOL, help="do not create a new session keyring for the container"),
    Flag(
        "preserve-fds",
        INT,
        0,
        "Pass N additional file descriptors to the container (stdio + $LISTEN_FDS + N in total)",
    ),
)

_ID = Arg("container_id")
_FORMAT = Flag(
    "format, f",
    STRING,
    "table",
    "select one of: table or json",
    choices=("table", "json"),
    invalid="invalid format option",
)

#: ``update``'s resource flags: strings (None: not given), parsed by :mod:`.update`.
_UPDATE_FLAGS = (
    ("blkio-weight", "Specifies per cgroup weight, range is from 10 to 1000"),
    ("cpu-period", "CPU CFS period to be used for hardcapping (in usecs). 0 to use system default"),
    ("cpu-quota", "CPU CFS hardcap limit (in usecs). Allowed cpu time in a given period"),
    ("cpu-share", "CPU shares (relative weight vs. other containers)"),
    ("cpu-rt-period", "CPU realtime period to be used for hardcapping (in usecs)"),
    ("cpu-rt-runtime", "CPU realtime hardcap limit (in usecs). Allowed cpu time in a given period"),
    ("cpuset-cpus", "CPU(s) to use"),
    ("cpuset-mems", "Memory node(s) to use"),
    ("kernel-memory", "Kernel memory limit (in bytes)"),
    ("kernel-memory-tcp", "Kernel memory limit for tcp buffer (in bytes)"),
    ("memory", "Memory limit (in bytes)"),
    ("memory-reservation", "Memory reservation or soft_limit (in bytes)"),
    ("memory-swap", "Total memory usage (memory + swap); set '-1' to enable unlimited swap"),
    ("pids-limit", "Maximum number of pids allowed in the container"),
    ("l3-cache-schema", "The string of Intel RDT/CAT L3 cache schema"),
    ("mem-bw-schema", "The string of Intel RDT/MBA memory bandwidth schema"),
    ("cpu-idle", "set cgroup SCHED_IDLE or not, 0: default behavior, 1: SCHED_IDLE"),
    ("cpu-burst", "CPU CFS hardcap burst limit (in usecs). Allowed accumulated cpu time"),
)

#: The whole command line: runc's verbs, flags, defaults and argument counts.
APP = App(
    PROG,
    "runc-compatible OCI runtime of bulkhead",
    __version__,
    flags=(
        Flag("debug", BOOL, help="enable debug logging"),
        Flag(
            "log",
            STRING,
            "",
            "set the log file to write runtime logs to (default is '/dev/stderr')",
        ),
        Flag(
            "log-format",
            STRING,
            "text",
            "set the log format ('text' (default), or 'json')",
            choices=("text", "json", ""),
            invalid="invalid log-format: {value}",
        ),
        Flag(
            "root",
            STRING,
            "/run/bulkhead-runtime",
            "root directory for storage of container state (this should be located in tmpfs)",
        ),
        Flag("criu", STRING, "criu", "path to the criu binary (unused)", hidden=True),
        Flag(
            "systemd-cgroup",
            BOOL,
            help='enable systemd cgroup support, expects cgroupsPath to be of form "slice:prefix:name"',
        ),
        Flag(
            "rootless",
            STRING,
            "auto",
            "ignore cgroup permission errors ('true', 'false', or 'auto')",
        ),
        Flag("version, v", BOOL, help="print the version"),
    ),
    commands=(
        Command("create", "create a container", "<container-id>", _CREATE_FLAGS, (_ID,)),
        Command(
            "delete",
            "delete any resources held by the container",
            "<container-id>...",
            (
                Flag(
                    "force, f",
                    BOOL,
                    help="Forcibly deletes the container if it is still running (uses SIGKILL)",
                ),
            ),
            (Arg("container_ids", SOME),),
        ),
        Command(
            "events",
            "display container events such as OOM notifications and stats",
            "<container-id>",
            (
                Flag("interval", STRING, "5s", "set the stats collection interval"),
                Flag("stats", BOOL, help="display the container's stats then exit"),
            ),
            (_ID,),
        ),
        Command(
            "exec",
            "execute new process inside the container",
            "<container-id> <command> [command options]  || -p process.json <container-id>",
            (
                Flag(
                    "console-socket",
                    help="path to an AF_UNIX socket which will receive a file descriptor"
                    " referencing the master end of the console's pseudoterminal",
                ),
                Flag("cwd", STRING, "", "current working directory in the container"),
                Flag("env, e", LIST, help="set environment variables"),
                Flag("tty, t", BOOL, help="allocate a pseudo-TTY"),
                Flag("user, u", STRING, "", "UID (format: <uid>[:<gid>])"),
                Flag("additional-gids, g", LIST, help="additional gids"),
                Flag("process, p", STRING, "", "path to the process.json"),
                Flag("detach, d", BOOL, help="detach from the container's process"),
                Flag("pid-file", help="specify the file to write the process id to"),
                Flag(
                    "process-label",
                    STRING,
                    "",
                    "set the asm process label for the process commonly used with selinux",
                ),
                Flag("apparmor", STRING, "", "set the apparmor profile for the process"),
                Flag("no-new-privs", BOOL, help="set the no new privileges value for the process"),
                Flag("cap, c", LIST, help="add a capability to the bounding set for the process"),
                Flag(
                    "preserve-fds",
                    INT,
                    0,
                    "Pass N additional file descriptors to the container"
                    " (stdio + $LISTEN_FDS + N in total)",
                ),
                Flag(
                    "cgroup", LIST, help="run the process in an (existing) sub-cgroup", hidden=True
                ),
                Flag("ignore-paused", BOOL, help="allow exec in a paused container", hidden=True),
            ),
            (_ID, Arg("command", REST)),
            reorder=False,
        ),
        Command(
            "kill",
            "send a signal (default: SIGTERM) to the container's init process",
            "<container-id> [signal]",
            (
                Flag(
                    "all, a",
                    BOOL,
                    help="send the specified signal to all processes inside the container",
                ),
            ),
            (_ID, Arg("signal", OPTIONAL, "SIGTERM")),
        ),
        Command(
            "list",
            "lists containers started with the given root",
            "",
            (_FORMAT, Flag("quiet, q", BOOL, help="display only container IDs")),
        ),
        Command(
            "pause",
            "pause suspends all processes inside the container",
            "<container-id>",
            args=(_ID,),
        ),
        Command(
            "ps",
            "ps displays the processes running inside a container",
            "<container-id> [ps options]",
            (_FORMAT,),
            (_ID, Arg("ps_args", REST)),
            reorder=False,
        ),
        Command(
            "resume",
            "resumes all processes that have been previously paused",
            "<container-id>",
            args=(_ID,),
        ),
        Command(
            "run",
            "create and run a container",
            "<container-id>",
            (
                *_CREATE_FLAGS[:2],
                Flag("detach, d", BOOL, help="detach from the container's process"),
                Flag("keep", BOOL, help="do not delete the container after it exits"),
                *_CREATE_FLAGS[2:],
            ),
            (_ID,),
        ),
        Command(
            "spec",
            "create a new specification file",
            "",
            (
                Flag("bundle, b", STRING, "", "path to the root of the bundle directory"),
                Flag("rootless", BOOL, help="generate a configuration for a rootless container"),
            ),
        ),
        Command(
            "start",
            "executes the user defined process in a created container",
            "<container-id>",
            args=(_ID,),
        ),
        Command("state", "output the state of a container", "<container-id>", args=(_ID,)),
        Command(
            "update",
            "update container resource constraints",
            "<container-id>",
            (
                Flag(
                    "resources, r",
                    STRING,
                    "",
                    "path to the file containing the resources to update"
                    " or '-' to read from the standard input",
                ),
                *(Flag(name, help=text) for name, text in _UPDATE_FLAGS),
            ),
            (_ID,),
        ),
        Command("features", "show the enabled features", "", args=()),
        Command(
            "help",
            "Shows a list of commands or help for one command",
            "[command]",
            args=(Arg("topic", OPTIONAL), Arg("help_args", REST)),
            aliases=("h",),
        ),
    ),
)


def parse_args(argv: Sequence[str]) -> Namespace:
    """The command line ``argv`` (without the program name); raises :class:`UsageError`."""
    return APP.parse(argv)


# ---------------------------------------------------------------------- verbs


def _runtime(args: Namespace) -> Runtime:
    from bulkhead.runtime.container import Runtime

    return Runtime(args.root, systemd_cgroup=args.systemd_cgroup)


def _create_options(args: Namespace) -> Any:
    from bulkhead.runtime.container import CreateOptions

    return CreateOptions(
        bundle=args.bundle,
        console_socket=args.console_socket,
        pid_file=args.pid_file,
        no_pivot=args.no_pivot,
        no_new_keyring=args.no_new_keyring,
        preserve_fds=args.preserve_fds,
    )


def cmd_create(args: Namespace) -> int:
    _runtime(args).create(args.container_id, _create_options(args))
    return 0


def cmd_run(args: Namespace) -> int:
    from bulkhead.runtime import foreground

    return foreground.run(
        _runtime(args), args.container_id, _create_options(args), detach=args.detach, keep=args.keep
    )


def cmd_start(args: Namespace) -> int:
    _runtime(args).start(args.container_id)
    return 0


def cmd_state(args: Namespace) -> int:
    import json

    doc = _runtime(args).state(args.container_id)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    return 0


def cmd_kill(args: Namespace) -> int:
    from bulkhead.runtime.container import signal_number

    sig = signal_number(args.signal)
    _runtime(args).kill(args.container_id, sig, all_processes=args.all)
    return 0


def cmd_delete(args: Namespace) -> int:
    rt = _runtime(args)
    for cid in args.container_ids:
        rt.delete(cid, force=args.force)
    return 0


def cmd_exec(args: Namespace) -> int:
    from bulkhead.runtime import foreground

    return foreground.exec_from_cli(_runtime(args), args)


def cmd_ps(args: Namespace) -> int:
    import json
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


def cmd_list(args: Namespace) -> int:
    import json

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


def cmd_spec(args: Namespace) -> int:
    import json

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


def cmd_features(args: Namespace) -> int:
    import json

    from bulkhead.runtime.features import features_document

    sys.stdout.write(json.dumps(features_document(), indent=4) + "\n")
    return 0


def cmd_pause(args: Namespace) -> int:
    _runtime(args).pause(args.container_id)
    return 0


def cmd_resume(args: Namespace) -> int:
    _runtime(args).resume(args.container_id)
    return 0


def cmd_update(args: Namespace) -> int:
    from bulkhead.runtime.update import resources_from_cli

    rt = _runtime(args)
    rt.update(args.container_id, resources_from_cli(args))
    return 0


def cmd_events(args: Namespace) -> int:
    from bulkhead.runtime.events import events

    status: int = events(
        _runtime(args), args.container_id, stats_only=args.stats, interval=args.interval
    )
    return status


VERBS: dict[str, Callable[[Namespace], int]] = {
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
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the verb; ends in SystemExit.

    Usage errors are runc's: the usage text on stdout, the error through the
    log, exit status 1 (3 for an unknown verb).
    """
    raw = list(sys.argv[1:] if argv is None else argv)
    # msgspec uses typing_extensions when it can import it, for nothing the
    # runtime needs, at ~7 ms a start: a dev venv has it (mypy), a plain
    # install does not. Make both behave like the plain install.
    sys.modules.setdefault("typing_extensions", None)  # type: ignore[arg-type]
    try:
        args = parse_args(raw)
    except UsageError as exc:
        if exc.namespace is not None:
            _configure_log(exc.namespace)
        if exc.usage:
            sys.stdout.write(exc.usage)
            sys.stdout.flush()
        LOG.fatal(exc.message, exc.code)
    if args.verb is None:  # --help or --version before the verb
        sys.stdout.write(APP.help_text() if args.help else version_text())
        raise SystemExit(0)
    _configure_log(args)
    if args.help or args.verb == "help":
        sys.stdout.write(APP.help_text(args.verb if args.help else args.topic))
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


def _configure_log(args: Namespace) -> None:
    """runc's ``Before``: the global flags that say where and how to log."""
    LOG.path = args.log or None
    LOG.format = args.log_format
    LOG.debug = args.debug
    logs.set_sink(LOG.write)  # library warnings and debug notes go to --log, formatted


def _error_text(verb: str, exc: BulkheadError) -> str:
    from bulkhead.errors import StartError

    if isinstance(exc, StartError):
        return f"{PROG} {verb} failed: unable to start container process: {exc}"
    if isinstance(exc, SpecError) and verb in ("create", "run"):
        return f"{PROG} {verb} failed: {exc}"
    return str(exc)


if __name__ == "__main__":
    main()
