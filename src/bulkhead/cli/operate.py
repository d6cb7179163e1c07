"""Commands that act on running containers: ``pause``, ``unpause``, ``update``.

``pause`` freezes every process of a container (the cgroup freezer: they
stop where they are and see no signal until thawed); ``unpause`` thaws
them. ``update`` changes resource limits (memory, CPU, pids, block I/O)
of running or stopped containers and their restart policy: a flag not
given leaves that limit as it is. Sizes take the units ``run`` takes
(``64m``, ``1g``); ``--cpus 1.5`` becomes ``NanoCpus``. Like docker, each
command prints every container it acted on and goes on after a failure,
exiting 1 if any failed.
"""

from __future__ import annotations

from bulkhead.cli.app import App, Exit
from bulkhead.cli.client import APIError
from bulkhead.cli.flags import INT, STR, Command, Flag, UsageError, need_args

TYPE_CHECKING = False  # typing costs milliseconds at start-up
if TYPE_CHECKING:
    from typing import Any

PAUSE = Command(
    "pause",
    "pause CONTAINER [CONTAINER...]",
    [],
    summary="Pause all processes within one or more containers",
)

UNPAUSE = Command(
    "unpause",
    "unpause CONTAINER [CONTAINER...]",
    [],
    summary="Unpause all processes within one or more containers",
)

UPDATE = Command(
    "update",
    "update [OPTIONS] CONTAINER [CONTAINER...]",
    [
        Flag("blkio-weight", kind=INT, help="Block IO (relative weight), between 10 and 1000"),
        Flag("cpu-period", kind=INT, help="Limit CPU CFS (Completely Fair Scheduler) period"),
        Flag("cpu-quota", kind=INT, help="Limit CPU CFS (Completely Fair Scheduler) quota"),
        Flag("cpu-shares", "c", INT, "CPU shares (relative weight)"),
        Flag("cpus", kind=STR, help="Number of CPUs"),
        Flag("cpuset-cpus", kind=STR, help="CPUs in which to allow execution (0-3, 0,1)"),
        Flag("cpuset-mems", kind=STR, help="MEMs in which to allow execution (0-3, 0,1)"),
        Flag("memory", "m", STR, "Memory limit"),
        Flag("memory-reservation", kind=STR, help="Memory soft limit"),
        Flag(
            "memory-swap",
            kind=STR,
            help="Swap limit equal to memory plus swap: -1 to enable unlimited swap",
        ),
        Flag("pids-limit", kind=INT, help="Tune container pids limit (set -1 for unlimited)"),
        Flag("restart", kind=STR, help="Restart policy to apply when a container exits"),
    ],
    summary="Update configuration of one or more containers",
)


def _each(app: App, names: list[str], action: Any) -> int:
    failed = False
    for name in names:
        try:
            action(name)
            app.print(name)
        except APIError as exc:
            app.error(str(exc))
            failed = True
    return 1 if failed else 0


def cmd_pause(app: App, args: list[str]) -> int:
    parsed = PAUSE.parse(args)
    need_args(PAUSE, parsed, 1)
    client = app.client
    return _each(
        app, parsed.args, lambda n: client.request("POST", f"/containers/{n}/pause").read()
    )


def cmd_unpause(app: App, args: list[str]) -> int:
    parsed = UNPAUSE.parse(args)
    need_args(UNPAUSE, parsed, 1)
    client = app.client
    return _each(
        app, parsed.args, lambda n: client.request("POST", f"/containers/{n}/unpause").read()
    )


def update_body(parsed: Any) -> dict[str, Any]:
    """docker's ``UpdateConfig`` from the flags: only what was given is non-zero.

    No flag at all is docker's usage error. ``--pids-limit`` is sent only
    when given (0 and -1 both lift the limit); ``--memory-swap -1`` means
    unlimited swap.
    """
    from bulkhead.cli.runflags import mem_flag, nano_cpus

    if not parsed.given:  # docker: a plain error (status 1), before the daemon is asked
        raise Exit(1, "you must provide one or more flags when using this command")
    v = parsed.values
    swap = v["memory-swap"]
    body: dict[str, Any] = {
        "BlkioWeight": v["blkio-weight"],
        "CpuShares": v["cpu-shares"],
        "CpuPeriod": v["cpu-period"],
        "CpuQuota": v["cpu-quota"],
        "CpusetCpus": v["cpuset-cpus"],
        "CpusetMems": v["cpuset-mems"],
        "Memory": mem_flag(parsed, "memory", "-m, --memory"),
        "MemoryReservation": mem_flag(parsed, "memory-reservation", "--memory-reservation"),
        "MemorySwap": -1 if swap == "-1" else mem_flag(parsed, "memory-swap", "--memory-swap"),
        "NanoCpus": nano_cpus(v["cpus"]) if v["cpus"] else 0,
    }
    if parsed.was_set("pids-limit"):
        body["PidsLimit"] = v["pids-limit"]
    if v["restart"]:
        name, _, retries = v["restart"].partition(":")
        try:
            count = int(retries) if retries else 0
        except ValueError:
            raise UsageError(
                f"invalid restart policy format: maximum retry count must be an integer: {retries}"
            ) from None
        body["RestartPolicy"] = {"Name": name, "MaximumRetryCount": count}
    return body


def cmd_update(app: App, args: list[str]) -> int:
    parsed = UPDATE.parse(args)
    need_args(UPDATE, parsed, 1)
    body = update_body(parsed)
    client = app.client
    warnings: list[str] = []

    def update(name: str) -> None:
        reply = client.request("POST", f"/containers/{name}/update", body=body).json()
        warnings.extend((reply or {}).get("Warnings") or [])

    status = _each(app, parsed.args, update)
    if warnings:
        app.error("\n".join(warnings))
    return status
