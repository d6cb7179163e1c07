"""Volume commands: volume create, ls, inspect, rm, prune (the local driver's volumes)."""

from __future__ import annotations

from bulkhead.cli.app import App
from bulkhead.cli.client import APIError
from bulkhead.cli.containers import confirm, filters_query, render_contexts
from bulkhead.cli.flags import BOOL, LIST, STR, Command, Flag, UsageError, need_args
from bulkhead.cli.fmt import human_size

CREATE = Command(
    "volume create",
    "volume create [OPTIONS] [VOLUME]",
    [
        Flag("driver", "d", STR, "Specify volume driver name", default="local"),
        Flag("label", kind=LIST, help="Set metadata for a volume"),
        Flag("name", kind=STR, help="Specify volume name"),
        Flag("opt", "o", LIST, "Set driver specific options"),
    ],
    summary="Create a volume",
)

TYPE_CHECKING = False  # typing costs milliseconds at start-up
if TYPE_CHECKING:
    from typing import Any


def _kv(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def cmd_volume_create(app: App, args: list[str]) -> int:
    parsed = CREATE.parse(args)
    need_args(CREATE, parsed, 0, 1)
    name = parsed["name"]
    if parsed.args:
        if name and name != parsed.args[0]:
            raise UsageError(
                "conflicting options: cannot specify a volume-name through both --name and"
                " as a positional arg"
            )
        name = parsed.args[0]
    body = {
        "Name": name,
        "Driver": parsed["driver"],
        "DriverOpts": _kv(parsed["opt"]),
        "Labels": _kv(parsed["label"]),
    }
    reply = app.client.post("/volumes/create", body)
    app.print(str(reply.get("Name", "")))
    return 0


LS = Command(
    "volume ls",
    "volume ls [OPTIONS]",
    [
        Flag("filter", "f", LIST, 'Provide filter values (e.g. "dangling=true")'),
        Flag("format", kind=STR, help="Format output using a custom template"),
        Flag("quiet", "q", BOOL, "Only display volume names"),
    ],
    summary="List volumes",
)

HEADERS: dict[str, Any] = {
    "Availability": "AVAILABILITY",
    "Group": "GROUP",
    "Status": "STATUS",
    "Name": "VOLUME NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "Mountpoint": "MOUNTPOINT",
    "Labels": "LABELS",
    "Links": "LINKS",
    "Size": "SIZE",
    "Label": lambda *_: "LABEL",
}


def volume_context(vol: dict[str, Any]) -> dict[str, Any]:
    labels = vol.get("Labels") or {}
    usage = vol.get("UsageData") or {}
    cluster = vol.get("ClusterVolume") or {}  # swarm's cluster volumes: N/A here
    spec = cluster.get("Spec") or {}
    return {
        "Availability": str(spec.get("Availability") or "N/A"),
        "Driver": str(vol.get("Driver", "")),
        "Group": str(spec.get("Group") or "N/A"),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "Links": "N/A" if usage.get("RefCount", -1) < 0 else str(usage["RefCount"]),
        "Mountpoint": str(vol.get("Mountpoint", "")),
        "Name": str(vol.get("Name", "")),
        "Scope": str(vol.get("Scope", "")),
        "Size": "N/A" if usage.get("Size", -1) < 0 else human_size(float(usage["Size"])),
        "Status": "N/A" if not vol.get("Status") else str(vol["Status"]),
        "Label": lambda key: str(labels.get(key, "")),
    }


def cmd_volume_ls(app: App, args: list[str]) -> int:
    parsed = LS.parse(args)
    need_args(LS, parsed, 0, 0)
    reply = app.client.get("/volumes", filters=filters_query(parsed["filter"])) or {}
    volumes = sorted(reply.get("Volumes") or [], key=lambda v: str(v.get("Name", "")))
    for warning in reply.get("Warnings") or []:
        app.error(f"WARNING: {warning}")
    if parsed["quiet"]:
        for vol in volumes:
            app.print(str(vol.get("Name", "")))
        return 0
    fmt = parsed["format"] or "table {{.Driver}}\t{{.Name}}"
    render_contexts(app, fmt, [volume_context(v) for v in volumes], HEADERS)
    return 0


def cmd_volume_inspect(app: App, args: list[str]) -> int:
    from bulkhead.cli.system import inspect_objects

    return inspect_objects(app, args, "volume")


RM = Command(
    "volume rm",
    "volume rm [OPTIONS] VOLUME [VOLUME...]",
    [Flag("force", "f", BOOL, "Force the removal of one or more volumes")],
    summary="Remove one or more volumes",
)


def cmd_volume_rm(app: App, args: list[str]) -> int:
    parsed = RM.parse(args)
    need_args(RM, parsed, 1)
    failed = False
    for name in parsed.args:
        try:
            app.client.request(
                "DELETE", f"/volumes/{name}", query={"force": parsed["force"]}
            ).read()
            app.print(name)
        except APIError as exc:
            app.error(str(exc))
            failed = True
    return 1 if failed else 0


PRUNE = Command(
    "volume prune",
    "volume prune [OPTIONS]",
    [
        Flag("all", "a", BOOL, "Remove all unused volumes, not just anonymous ones"),
        Flag("filter", kind=LIST, help='Provide filter values (e.g. "label=<label>")'),
        Flag("force", "f", BOOL, "Do not prompt for confirmation"),
    ],
    summary="Remove unused local volumes",
)


def cmd_volume_prune(app: App, args: list[str]) -> int:
    parsed = PRUNE.parse(args)
    need_args(PRUNE, parsed, 0, 0)
    question = (
        "WARNING! This will remove all local volumes not used by at least one container."
        if parsed["all"]
        else "WARNING! This will remove anonymous local volumes not used by at least one container."
    )
    if not parsed["force"] and not confirm(app, question + "\nAre you sure you want to continue?"):
        return 0
    filters = list(parsed["filter"])
    if parsed["all"]:
        filters.append("all=true")
    reply = app.client.post("/volumes/prune", None, filters=filters_query(filters)) or {}
    deleted = reply.get("VolumesDeleted") or []
    if deleted:
        app.print("Deleted Volumes:")
        for name in deleted:
            app.print(name)
        app.print()
    app.print(f"Total reclaimed space: {human_size(float(reply.get('SpaceReclaimed') or 0))}")
    return 0
