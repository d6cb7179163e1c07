"""``system df`` and ``system prune``: what the daemon's objects take on disk, and freeing it.

``system df`` reads ``GET /system/df`` (Docker's legacy lists: images with
``Size``/``SharedSize``/``Containers``, containers with ``SizeRw``, volumes
with ``UsageData``) and adds them up as the docker CLI does: *active*
images are those a container uses, *active* containers those running or
paused, *active* volumes those a container references; *reclaimable* is what
removing the inactive ones would free (for images, everything but what
active images hold alone). ``-v`` lists each object instead.

``system prune`` calls each kind's prune endpoint in Docker's order
(containers, networks, volumes with ``--volumes``, images, build cache) with
the same ``--filter`` values, prints what each deleted and the total.
"""

from __future__ import annotations

from bulkhead.cli.app import App, Exit
from bulkhead.cli.containers import (
    confirm,
    filters_query,
    ps_context,
    render_contexts,
    split_repo_tag,
)
from bulkhead.cli.flags import BOOL, LIST, STR, Command, Flag, need_args
from bulkhead.units import human_size

TYPE_CHECKING = False  # typing costs milliseconds at start-up
if TYPE_CHECKING:
    from typing import Any

DF = Command(
    "system df",
    "system df [OPTIONS]",
    [
        Flag("format", kind=STR, help="Format output using a custom template"),
        Flag("verbose", "v", BOOL, "Show detailed information on space usage"),
    ],
    summary="Show bulkhead disk usage",
)

DF_DEFAULT = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
DF_HEADERS: dict[str, Any] = {
    "Type": "TYPE",
    "TotalCount": "TOTAL",
    "Active": "ACTIVE",
    "Size": "SIZE",
    "Reclaimable": "RECLAIMABLE",
}


def _size(n: float) -> str:
    """go-units ``HumanSize`` (four significant digits), what ``df`` and ``prune`` print."""
    return human_size(float(n), 4)


def _reclaimable(reclaimable: int, total: int) -> str:
    if total > 0:
        return f"{_size(reclaimable)} ({reclaimable * 100 // total}%)"
    return _size(reclaimable)


def _active_container(c: dict[str, Any]) -> bool:
    return c.get("State") in ("running", "paused", "restarting")


def df_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The four summary rows of ``system df`` (Docker's arithmetic on the legacy lists)."""
    images = doc.get("Images") or []
    layers = int(doc.get("LayersSize") or 0)
    held = 0
    for i in images:
        size, shared = int(i.get("Size", -1)), int(i.get("SharedSize", -1))
        if int(i.get("Containers") or 0) > 0 and size >= 0 and shared >= 0:
            held += size - shared
    containers = doc.get("Containers") or []
    c_total = sum(int(c.get("SizeRw") or 0) for c in containers)
    c_idle = sum(int(c.get("SizeRw") or 0) for c in containers if not _active_container(c))
    volumes = doc.get("Volumes") or []
    v_total = v_idle = 0
    for v in volumes:
        usage = v.get("UsageData") or {}
        size = int(usage.get("Size", -1))
        if size != -1:
            v_total += size
            if int(usage.get("RefCount", 0)) == 0:
                v_idle += size
    cache = doc.get("BuildCache") or []
    cache_total = sum(int(b.get("Size") or 0) for b in cache)
    cache_idle = sum(
        int(b.get("Size") or 0) for b in cache if not b.get("InUse") and not b.get("Shared")
    )
    return [
        {
            "Type": "Images",
            "TotalCount": str(len(images)),
            "Active": str(sum(1 for i in images if int(i.get("Containers") or 0) > 0)),
            "Size": _size(layers),
            "Reclaimable": _reclaimable(layers - held, layers),
        },
        {
            "Type": "Containers",
            "TotalCount": str(len(containers)),
            "Active": str(sum(1 for c in containers if _active_container(c))),
            "Size": _size(c_total),
            "Reclaimable": _reclaimable(c_idle, c_total),
        },
        {
            "Type": "Local Volumes",
            "TotalCount": str(len(volumes)),
            "Active": str(
                sum(1 for v in volumes if int((v.get("UsageData") or {}).get("RefCount", 0)) > 0)
            ),
            "Size": _size(v_total),
            "Reclaimable": _reclaimable(v_idle, v_total),
        },
        {
            "Type": "Build Cache",
            "TotalCount": str(len(cache)),
            "Active": str(sum(1 for b in cache if b.get("InUse"))),
            "Size": _size(cache_total),
            "Reclaimable": _size(cache_idle),
        },
    ]


def _verbose(app: App, doc: dict[str, Any]) -> None:
    from bulkhead.cli.fmt import ago, short_id, tabwrite

    lines = ["REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\tSHARED SIZE\tUNIQUE SIZE\tCONTAINERS"]
    for img in doc.get("Images") or []:
        size, shared = int(img.get("Size") or 0), int(img.get("SharedSize", -1))
        cells = [
            short_id(str(img.get("Id", ""))),
            ago(float(img.get("Created") or 0)),
            human_size(float(size)),
            _size(shared) if shared >= 0 else "N/A",
            _size(size - shared) if shared >= 0 else "N/A",
            str(img.get("Containers") or 0),
        ]
        tags = [t for t in img.get("RepoTags") or [] if t != "<none>:<none>"]
        for repo, tag in [split_repo_tag(t) for t in tags] or [("<none>", "<none>")]:
            lines.append("\t".join([repo, tag or "<none>", *cells]))
    app.print("Images space usage:\n")
    app.print(tabwrite(lines))
    lines = [
        "CONTAINER ID\tIMAGE\tCOMMAND\tLOCAL VOLUMES\tSIZE\tCREATED\tSTATUS\tNAMES",
    ]
    for c in doc.get("Containers") or []:
        ctx = ps_context(c)
        lines.append(
            "\t".join(
                [
                    ctx["ID"],
                    ctx["Image"],
                    ctx["Command"],
                    ctx["LocalVolumes"],
                    human_size(float(c.get("SizeRw") or 0)),
                    ctx["RunningFor"],
                    ctx["Status"],
                    ctx["Names"],
                ]
            )
        )
    app.print("\nContainers space usage:\n")
    app.print(tabwrite(lines))
    lines = ["VOLUME NAME\tLINKS\tSIZE"]
    for v in doc.get("Volumes") or []:
        usage = v.get("UsageData") or {}
        size = int(usage.get("Size", -1))
        links = int(usage.get("RefCount", -1))
        lines.append(
            "\t".join(
                [
                    str(v.get("Name", "")),
                    "N/A" if links < 0 else str(links),
                    "N/A" if size < 0 else _size(size),
                ]
            )
        )
    app.print("\nLocal Volumes space usage:\n")
    app.print(tabwrite(lines))
    cache_total = sum(int(b.get("Size") or 0) for b in doc.get("BuildCache") or [])
    app.print(f"\nBuild cache usage: {_size(cache_total)}\n")
    app.print(tabwrite(["CACHE ID\tCACHE TYPE\tSIZE\tCREATED\tLAST USED\tUSAGE\tSHARED"]))


def cmd_system_df(app: App, args: list[str]) -> int:
    parsed = DF.parse(args)
    need_args(DF, parsed, 0, 0)
    doc = app.client.get("/system/df") or {}
    fmt = parsed["format"]
    if parsed["verbose"] and not fmt:
        _verbose(app, doc)
        return 0
    render_contexts(app, fmt or DF_DEFAULT, df_rows(doc), DF_HEADERS)
    return 0


PRUNE = Command(
    "system prune",
    "system prune [OPTIONS]",
    [
        Flag("all", "a", BOOL, "Remove all unused images not just dangling ones"),
        Flag("filter", kind=LIST, help='Provide filter values (e.g. "label=<key>=<value>")'),
        Flag("force", "f", BOOL, "Do not prompt for confirmation"),
        Flag("volumes", kind=BOOL, help="Prune anonymous volumes"),
    ],
    summary="Remove unused data",
)


def prune_warning(all_images: bool, volumes: bool) -> str:
    """Docker's question before ``system prune``, naming what goes."""
    items = ["all stopped containers", "all networks not used by at least one container"]
    if volumes:
        items.append("all anonymous volumes not used by at least one container")
    if all_images:
        items += ["all images without at least one container associated to them", "all build cache"]
    else:
        items += ["all dangling images", "unused build cache"]
    return (
        "WARNING! This will remove:\n"
        + "".join(f"  - {item}\n" for item in items)
        + "\nAre you sure you want to continue?"
    )


def cmd_system_prune(app: App, args: list[str]) -> int:
    parsed = PRUNE.parse(args)
    need_args(PRUNE, parsed, 0, 0)
    if parsed["volumes"] and any(
        f.partition("=")[0].strip().lower() == "until" for f in parsed["filter"]
    ):
        raise Exit(1, 'ERROR: The "until" filter is not supported with "--volumes"')
    if not parsed["force"] and not confirm(app, prune_warning(parsed["all"], parsed["volumes"])):
        return 0
    user_filters = list(parsed["filter"])
    query = filters_query(user_filters)
    total = 0
    out: list[str] = []

    def section(title: str, names: list[str]) -> None:
        if names:
            out.append(f"Deleted {title}:\n" + "".join(f"{n}\n" for n in names))

    reply = app.client.post("/containers/prune", None, filters=query) or {}
    total += int(reply.get("SpaceReclaimed") or 0)
    section("Containers", list(reply.get("ContainersDeleted") or []))
    reply = app.client.post("/networks/prune", None, filters=query) or {}
    section("Networks", list(reply.get("NetworksDeleted") or []))
    if parsed["volumes"]:
        reply = app.client.post("/volumes/prune", None, filters=query) or {}
        total += int(reply.get("SpaceReclaimed") or 0)
        section("Volumes", list(reply.get("VolumesDeleted") or []))
    dangling = "dangling=" + ("false" if parsed["all"] else "true")
    reply = app.client.post("/images/prune", None, filters=filters_query([*user_filters, dangling]))
    reply = reply or {}
    total += int(reply.get("SpaceReclaimed") or 0)
    lines = []
    for item in reply.get("ImagesDeleted") or []:
        if item.get("Untagged"):
            lines.append(f"untagged: {item['Untagged']}")
        if item.get("Deleted"):
            lines.append(f"deleted: {item['Deleted']}")
    section("Images", lines)
    reply = app.client.post("/build/prune", None, all=parsed["all"] or None, filters=query) or {}
    total += int(reply.get("SpaceReclaimed") or 0)
    section("build cache objects", list(reply.get("CachesDeleted") or []))
    for text in out:
        app.print(text)
    app.print(f"Total reclaimed space: {_size(total)}")
    return 0
