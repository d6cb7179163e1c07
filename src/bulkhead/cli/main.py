"""``bulkhead [GLOBAL OPTIONS] COMMAND [ARGS...]``: dispatch to the area modules.

Global options (before the command): ``-H/--host unix:///path`` (else
``BULKHEAD_HOST``, ``DOCKER_HOST``, then /run/bulkhead/bulkhead.sock),
``-D/--debug``, ``-v/--version``, ``--help``. Commands are Docker's: the
top-level verbs (``run``, ``ps``, ``images``...) and the management groups
(``container``, ``image``, ``volume``, ``network``, ``system``). A command module is
imported only when its verb runs, so ``bulkhead --version`` imports nothing
but this file.

Exit statuses follow the docker CLI: 0, 1 for a daemon error, 125 for a bad
command line or a failure of ``run``/``create`` itself, 126/127 when the
container's command cannot be run or found, else the container's status.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not `from typing import`: typing costs ~8 ms at start-up
if TYPE_CHECKING:
    from collections.abc import Callable

    from bulkhead.cli.app import App

# verb -> "module:function" (module under bulkhead.cli)
COMMANDS: dict[str, str] = {
    "run": "containers:cmd_run",
    "create": "containers:cmd_create",
    "start": "containers:cmd_start",
    "stop": "containers:cmd_stop",
    "kill": "containers:cmd_kill",
    "restart": "containers:cmd_restart",
    "rm": "containers:cmd_rm",
    "ps": "containers:cmd_ps",
    "logs": "containers:cmd_logs",
    "attach": "containers:cmd_attach",
    "exec": "containers:cmd_exec",
    "wait": "containers:cmd_wait",
    "inspect": "system:cmd_inspect",
    "rename": "containers:cmd_rename",
    "cp": "containers:cmd_cp",
    "export": "containers:cmd_export",
    "diff": "containers:cmd_diff",
    "commit": "containers:cmd_commit",
    "port": "containers:cmd_port",
    "pause": "operate:cmd_pause",
    "unpause": "operate:cmd_unpause",
    "update": "operate:cmd_update",
    "stats": "stats:cmd_stats",
    "top": "stats:cmd_top",
    "pull": "images:cmd_pull",
    "push": "images:cmd_push",
    "images": "images:cmd_images",
    "rmi": "images:cmd_rmi",
    "tag": "images:cmd_tag",
    "save": "images:cmd_save",
    "load": "images:cmd_load",
    "import": "images:cmd_import",
    "history": "images:cmd_history",
    "version": "system:cmd_version",
    "info": "system:cmd_info",
    "events": "events:cmd_events",
    "login": "system:cmd_login",
    "logout": "system:cmd_logout",
}

GROUPS: dict[str, dict[str, str]] = {
    "container": {
        **{
            v: COMMANDS[v]
            for v in (
                "run",
                "create",
                "start",
                "stop",
                "kill",
                "restart",
                "rm",
                "logs",
                "attach",
                "exec",
                "wait",
                "rename",
                "cp",
                "export",
                "diff",
                "commit",
                "port",
                "pause",
                "unpause",
                "update",
                "stats",
                "top",
            )
        },
        "ls": COMMANDS["ps"],
        "list": COMMANDS["ps"],
        "ps": COMMANDS["ps"],
        "inspect": "containers:cmd_container_inspect",
        "prune": "containers:cmd_container_prune",
    },
    "image": {
        "pull": COMMANDS["pull"],
        "push": COMMANDS["push"],
        "ls": COMMANDS["images"],
        "list": COMMANDS["images"],
        "rm": COMMANDS["rmi"],
        "remove": COMMANDS["rmi"],
        "tag": COMMANDS["tag"],
        "save": COMMANDS["save"],
        "load": COMMANDS["load"],
        "import": COMMANDS["import"],
        "history": COMMANDS["history"],
        "inspect": "images:cmd_image_inspect",
        "prune": "images:cmd_image_prune",
    },
    "volume": {
        "create": "volumes:cmd_volume_create",
        "ls": "volumes:cmd_volume_ls",
        "list": "volumes:cmd_volume_ls",
        "inspect": "volumes:cmd_volume_inspect",
        "rm": "volumes:cmd_volume_rm",
        "remove": "volumes:cmd_volume_rm",
        "prune": "volumes:cmd_volume_prune",
    },
    "network": {
        "create": "networks:cmd_network_create",
        "ls": "networks:cmd_network_ls",
        "list": "networks:cmd_network_ls",
        "inspect": "networks:cmd_network_inspect",
        "rm": "networks:cmd_network_rm",
        "remove": "networks:cmd_network_rm",
        "prune": "networks:cmd_network_prune",
        "connect": "networks:cmd_network_connect",
        "disconnect": "networks:cmd_network_disconnect",
    },
    "system": {
        "info": COMMANDS["info"],
        "events": COMMANDS["events"],
        "df": "disk:cmd_system_df",
        "prune": "disk:cmd_system_prune",
    },
}

USAGE = """\
Usage:  bulkhead [OPTIONS] COMMAND

A container engine with Docker's verbs, flags and Engine API.

Common Commands:
  run         Create and run a new container from an image
  exec        Execute a command in a running container
  ps          List containers
  pull        Download an image from a registry
  push        Upload an image to a registry
  images      List images
  login       Log in to a registry
  logout      Log out from a registry
  version     Show the bulkhead version information
  info        Display system-wide information

Management Commands:
  container   Manage containers
  image       Manage images
  volume      Manage volumes
  network     Manage networks
  system      Manage bulkhead

Commands:
  attach cp commit create diff events export history import inspect kill load logs
  pause port rename restart rm rmi save start stats stop tag top unpause update wait

Daemon:
  daemon      Run the bulkhead daemon (python -m bulkhead.daemon)

Global Options:
  -H, --host string   Daemon socket to connect to (unix:///run/bulkhead/bulkhead.sock)
  -D, --debug         Enable debug mode
  -v, --version       Print version information and quit

Run 'bulkhead COMMAND --help' for more information on a command.
"""


def _resolve(spec: str) -> Callable[[App, list[str]], int]:
    module_name, _, func = spec.partition(":")
    # __import__, not importlib.import_module: importlib's package costs an import of warnings
    module = __import__(f"bulkhead.cli.{module_name}", fromlist=[func])
    fn: Callable[[App, list[str]], int] = getattr(module, func)
    return fn


def main(argv: list[str] | None = None) -> int:
    """Run one command line; return the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    host: str | None = None
    debug = False
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("-v", "--version"):
            from bulkhead import __version__

            sys.stdout.write(f"bulkhead version {__version__}\n")
            return 0
        if opt in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        if opt in ("-D", "--debug"):
            debug = True
            continue
        name, eq, value = opt.partition("=")
        if name in ("-H", "--host", "-l", "--log-level", "--config", "--context", "-c"):
            if not eq:
                if not args:
                    sys.stderr.write(f"flag needs an argument: {name}\n")
                    return 125
                value = args.pop(0)
            if name in ("-H", "--host"):
                host = value
            continue
        sys.stderr.write(f"unknown flag: {opt}\nSee 'bulkhead --help'.\n")
        return 125
    if not args:
        sys.stdout.write(USAGE)
        return 0
    verb, rest = args[0], args[1:]
    if verb == "daemon":
        from bulkhead.daemon import main as daemon_main

        return daemon_main(rest)
    if verb == "help":
        if rest:
            return main([rest[0], "--help"])
        sys.stdout.write(USAGE)
        return 0
    spec = COMMANDS.get(verb)
    name = verb
    if spec is None and verb in GROUPS:
        group = GROUPS[verb]
        if not rest or rest[0] in ("--help", "-h", "help"):
            sys.stdout.write(
                f"Usage:  bulkhead {verb} COMMAND\n\nCommands:\n"
                + "".join(f"  {c}\n" for c in sorted(group))
            )
            return 0
        spec = group.get(rest[0])
        if spec is None:
            sys.stderr.write(
                f"bulkhead: unknown command: bulkhead {verb} {rest[0]}\n\n"
                f"Run 'bulkhead {verb} --help' for more information\n"
            )
            return 1
        name = f"{verb} {rest[0]}"
        rest = rest[1:]
    if spec is None:
        sys.stderr.write(
            f"bulkhead: unknown command: bulkhead {verb}\n\n"
            "Run 'bulkhead --help' for more information\n"
        )
        return 1
    from bulkhead.cli.app import App, run_command

    app = App(host=host, debug=debug, command=name)
    return run_command(app, _resolve(spec), rest)


def entry() -> None:
    """The ``bulkhead`` launcher's entry point.

    It leaves with ``os._exit`` once stdout and stderr are flushed: the
    interpreter's teardown (module and GC clean-up) would add milliseconds to
    every command and has nothing left to do (files are closed, sockets too).
    """
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = code or 1
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
