"""Image commands: pull, push, images, rmi, tag, save, load, import, history,
image inspect, image prune.

Registry credentials come from the docker-compatible config file
(``$BULKHEAD_CONFIG``, ``$DOCKER_CONFIG`` or ``~/.docker``, ``config.json``:
``{"auths": {"<server>": {"auth": base64("user:password")}}}``) and travel
to the daemon in the ``X-Registry-Auth`` header (base64url JSON).
"""

from __future__ import annotations

import os
import sys

from bulkhead.cli.app import App, Exit
from bulkhead.cli.client import APIError
from bulkhead.cli.containers import (
    confirm,
    filters_query,
    render_contexts,
    split_repo_tag,
    write_stream,
)
from bulkhead.cli.flags import BOOL, LIST, STR, Command, Flag, UsageError, need_args
from bulkhead.cli.fmt import ago, ellipsis, format_time, human_size, short_id

TYPE_CHECKING = False  # typing costs milliseconds at start-up
if TYPE_CHECKING:
    from typing import Any

DOCKER_HUB = "docker.io"
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"


def registry_of(ref: str) -> str:
    """The registry host of an image reference (docker.io when it names none)."""
    first, slash, _ = ref.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def normalize_ref(ref: str) -> str:
    """``busybox`` → ``busybox:latest`` (a digest or a tag kept)."""
    repo, tag = split_repo_tag(ref)
    if "@" in ref or tag:
        return ref
    return f"{repo}:latest"


def config_dir() -> str:
    return (
        os.environ.get("BULKHEAD_CONFIG")
        or os.environ.get("DOCKER_CONFIG")
        or os.path.join(os.path.expanduser("~"), ".docker")
    )


def load_config() -> dict[str, Any]:
    import json

    path = os.path.join(config_dir(), "config.json")
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise Exit(1, f"loading config file {path}: {exc}") from None
    return doc if isinstance(doc, dict) else {}


def server_key(registry: str) -> str:
    return DOCKER_HUB_SERVER if registry in (DOCKER_HUB, "index.docker.io") else registry


def credentials_for(registry: str) -> dict[str, str] | None:
    """The stored username/password for ``registry`` (None when not logged in)."""
    import base64

    auths = load_config().get("auths") or {}
    for key in (server_key(registry), registry, f"https://{registry}", f"http://{registry}"):
        entry = auths.get(key)
        if isinstance(entry, dict) and entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError:
                continue
            return {"username": user, "password": password, "serveraddress": server_key(registry)}
        if isinstance(entry, dict) and entry.get("identitytoken"):
            return {"identitytoken": entry["identitytoken"], "serveraddress": server_key(registry)}
    return None


def auth_header(registry: str) -> dict[str, str]:
    """``X-Registry-Auth`` for ``registry`` (``{}`` encoded when there are no credentials)."""
    import base64

    from bulkhead.cli.jsonlite import dumps

    creds = credentials_for(registry) or {}
    raw = dumps(creds).encode()
    return {"X-Registry-Auth": base64.urlsafe_b64encode(raw).decode()}


def _show(app: App, resp: Any, *, quiet: bool, to_stderr: bool) -> None:
    from bulkhead.cli.progress import StreamError, show

    out = app.err if to_stderr else app.out
    try:
        show(resp.json_messages(), out, quiet=quiet)
    except StreamError as exc:
        raise APIError(500, str(exc)) from None


def pull_image(
    app: App,
    ref: str,
    *,
    platform: str = "",
    quiet: bool = False,
    to_stderr: bool = False,
    all_tags: bool = False,
) -> None:
    """POST /images/create?fromImage=&tag=, showing the progress (raises APIError).

    ``all_tags`` sends no tag, as docker's ``pull --all-tags`` does.
    """
    repo, tag = split_repo_tag(ref)
    if "@" in repo:
        repo, _, tag = repo.partition("@")
    if all_tags and tag:
        raise UsageError("tag can't be used with --all-tags/-a")
    query = {
        "fromImage": repo,
        "tag": None if all_tags else (tag or "latest"),
        "platform": platform or None,
    }
    resp = app.client.request(
        "POST", "/images/create", query=query, headers=auth_header(registry_of(repo))
    )
    _show(app, resp, quiet=quiet, to_stderr=to_stderr)


PULL = Command(
    "pull",
    "pull [OPTIONS] NAME[:TAG|@DIGEST]",
    [
        Flag("all-tags", "a", BOOL, "Download all tagged images in the repository"),
        Flag("platform", kind=STR, help="Set platform if server is multi-platform capable"),
        Flag("quiet", "q", BOOL, "Suppress verbose output"),
    ],
    summary="Download an image from a registry",
)


def cmd_pull(app: App, args: list[str]) -> int:
    parsed = PULL.parse(args)
    need_args(PULL, parsed, 1, 1)
    ref = parsed.args[0]
    if not parsed["all-tags"] and "@" not in ref and not split_repo_tag(ref)[1]:
        app.print("Using default tag: latest")
    pull_image(
        app, ref, platform=parsed["platform"], quiet=parsed["quiet"], all_tags=parsed["all-tags"]
    )
    app.print(_full_name(ref if parsed["all-tags"] else normalize_ref(ref)))
    return 0


def _full_name(ref: str) -> str:
    """docker's fully-qualified form, as ``docker pull`` prints last."""
    if registry_of(ref) != DOCKER_HUB or ref.startswith("docker.io/"):
        return ref
    return f"docker.io/{ref}" if "/" in ref.split(":")[0] else f"docker.io/library/{ref}"


PUSH = Command(
    "push",
    "push [OPTIONS] NAME[:TAG]",
    [
        Flag("all-tags", "a", BOOL, "Push all tags of an image to the repository"),
        Flag("quiet", "q", BOOL, "Suppress verbose output"),
    ],
    summary="Upload an image to a registry",
)


def cmd_push(app: App, args: list[str]) -> int:
    parsed = PUSH.parse(args)
    need_args(PUSH, parsed, 1, 1)
    repo, tag = split_repo_tag(parsed.args[0])
    query = {"tag": tag or (None if parsed["all-tags"] else "latest")}
    resp = app.client.request(
        "POST", f"/images/{repo}/push", query=query, headers=auth_header(registry_of(repo))
    )
    try:
        _show(app, resp, quiet=parsed["quiet"], to_stderr=False)
    except APIError as exc:
        raise Exit(1, exc.message) from None
    return 0


IMAGES = Command(
    "images",
    "images [OPTIONS] [REPOSITORY[:TAG]]",
    [
        Flag("all", "a", BOOL, "Show all images (default hides intermediate images)"),
        Flag("digests", kind=BOOL, help="Show digests"),
        Flag("filter", "f", LIST, "Filter output based on conditions provided"),
        Flag("format", kind=STR, help="Format output using a custom template"),
        Flag("no-trunc", kind=BOOL, help="Don't truncate output"),
        Flag("quiet", "q", BOOL, "Only show image IDs"),
    ],
    summary="List images",
)

IMAGE_HEADERS: dict[str, Any] = {
    "ID": "IMAGE ID",
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "Digest": "DIGEST",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
    "Containers": "CONTAINERS",
    "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
    "VirtualSize": "SIZE",
}


def _image_rows(images: list[dict[str, Any]], trunc: bool) -> list[dict[str, Any]]:
    rows = []
    for img in images:
        ident = str(img.get("Id", ""))
        shown_id = short_id(ident) if trunc else ident
        created = float(img.get("Created") or 0)
        size = human_size(float(img.get("Size") or 0))
        digests = img.get("RepoDigests") or []
        digest = digests[0].partition("@")[2] if digests else "<none>"
        shared = img.get("SharedSize", -1)
        base = {
            "ID": shown_id,
            "Digest": digest,
            "CreatedSince": ago(created),
            "CreatedAt": format_time(created),
            "Size": size,
            "VirtualSize": human_size(float(img.get("Size") or 0), 4),  # docker: HumanSize
            "Containers": "N/A" if img.get("Containers", -1) < 0 else str(img["Containers"]),
            "SharedSize": "N/A" if shared is None or shared < 0 else human_size(float(shared)),
            "UniqueSize": "N/A"
            if shared is None or shared < 0
            else human_size(float((img.get("Size") or 0) - shared)),
        }
        tags = [t for t in img.get("RepoTags") or [] if t != "<none>:<none>"]
        if not tags:
            repo = "<none>"
            if digests:
                repo = digests[0].partition("@")[0]
            rows.append({**base, "Repository": repo, "Tag": "<none>"})
        for t in tags:
            repo, tag = split_repo_tag(t)
            rows.append({**base, "Repository": repo, "Tag": tag or "<none>"})
    return rows


def cmd_images(app: App, args: list[str]) -> int:
    parsed = IMAGES.parse(args)
    need_args(IMAGES, parsed, 0, 1)
    filters = list(parsed["filter"])
    if parsed.args:
        filters.append(f"reference={parsed.args[0]}")
    images = (
        app.client.get("/images/json", all=parsed["all"] or None, filters=filters_query(filters))
        or []
    )
    trunc = not parsed["no-trunc"]
    rows = _image_rows(images, trunc)
    if parsed["quiet"]:  # one line per row, as docker (an image with two tags: twice)
        for row in rows:
            app.print(row["ID"])
        return 0
    fmt = parsed["format"]
    if not fmt:
        cols = ["{{.Repository}}", "{{.Tag}}"]
        if parsed["digests"]:
            cols.append("{{.Digest}}")
        cols += ["{{.ID}}", "{{.CreatedSince}}", "{{.Size}}"]
        fmt = "table " + "\t".join(cols)
    render_contexts(app, fmt, rows, IMAGE_HEADERS)
    return 0


RMI = Command(
    "rmi",
    "rmi [OPTIONS] IMAGE [IMAGE...]",
    [
        Flag("force", "f", BOOL, "Force removal of the image"),
        Flag("no-prune", kind=BOOL, help="Do not delete untagged parents"),
    ],
    summary="Remove one or more images",
)


def _print_deleted(app: App, items: list[dict[str, Any]]) -> None:
    for item in items or []:
        if item.get("Untagged"):
            app.print(f"Untagged: {item['Untagged']}")
        if item.get("Deleted"):
            app.print(f"Deleted: {item['Deleted']}")


def cmd_rmi(app: App, args: list[str]) -> int:
    parsed = RMI.parse(args)
    need_args(RMI, parsed, 1)
    failed = False
    for name in parsed.args:
        try:
            items = app.client.delete(
                f"/images/{name}", force=parsed["force"], noprune=parsed["no-prune"]
            )
            _print_deleted(app, items)
        except APIError as exc:
            app.error(str(exc))
            failed = True
    return 1 if failed else 0


TAG = Command(
    "tag", "tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]", [], summary="Create a tag TARGET_IMAGE"
)


def cmd_tag(app: App, args: list[str]) -> int:
    parsed = TAG.parse(args)
    need_args(TAG, parsed, 2, 2)
    repo, tag = split_repo_tag(parsed.args[1])
    app.client.request(
        "POST", f"/images/{parsed.args[0]}/tag", query={"repo": repo, "tag": tag or "latest"}
    ).read()
    return 0


SAVE = Command(
    "save",
    "save [OPTIONS] IMAGE [IMAGE...]",
    [
        Flag("output", "o", STR, "Write to a file, instead of STDOUT"),
        Flag("platform", kind=LIST, help="Save only the given platform(s)"),
    ],
    summary="Save one or more images to a tar archive (streamed to STDOUT by default)",
)


def cmd_save(app: App, args: list[str]) -> int:
    parsed = SAVE.parse(args)
    need_args(SAVE, parsed, 1)
    if not parsed["output"] and os.isatty(1):
        raise Exit(1, "cowardly refusing to save to a terminal. Use the -o flag or redirect")
    resp = app.client.request("GET", "/images/get", query={"names": list(parsed.args)})
    write_stream(app, resp, parsed["output"])
    return 0


def _file_chunks(path: str) -> Any:
    if path == "-" or not path:
        fh = sys.stdin.buffer
        return iter(lambda: fh.read(1 << 16), b"")

    def gen() -> Any:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    return
                yield chunk

    if not os.path.exists(path):
        raise Exit(1, f"open {path}: no such file or directory")
    return gen()


LOAD = Command(
    "load",
    "load [OPTIONS]",
    [
        Flag("input", "i", STR, "Read from tar archive file, instead of STDIN"),
        Flag("quiet", "q", BOOL, "Suppress the load output"),
    ],
    summary="Load an image from a tar archive or STDIN",
)


def cmd_load(app: App, args: list[str]) -> int:
    parsed = LOAD.parse(args)
    need_args(LOAD, parsed, 0, 0)
    if not parsed["input"] and os.isatty(0):
        raise Exit(1, "requested load from stdin, but stdin is empty")
    resp = app.client.request(
        "POST",
        "/images/load",
        query={"quiet": parsed["quiet"]},
        body=_file_chunks(parsed["input"]),
        headers={"Content-Type": "application/x-tar"},
    )
    try:
        _show(app, resp, quiet=False, to_stderr=False)
    except APIError as exc:
        raise Exit(1, exc.message) from None
    return 0


IMPORT = Command(
    "import",
    "import [OPTIONS] file|URL|- [REPOSITORY[:TAG]]",
    [
        Flag("change", "c", LIST, "Apply Dockerfile instruction to the created image"),
        Flag("message", "m", STR, "Set commit message for imported image"),
        Flag("platform", kind=STR, help="Set platform if server is multi-platform capable"),
    ],
    summary="Import the contents from a tarball to create a filesystem image",
)


def cmd_import(app: App, args: list[str]) -> int:
    import json

    parsed = IMPORT.parse(args)
    need_args(IMPORT, parsed, 1, 2)
    source = parsed.args[0]
    repo, tag = split_repo_tag(parsed.args[1]) if len(parsed.args) > 1 else ("", "")
    query: dict[str, Any] = {
        "repo": repo or None,
        "tag": tag or None,
        "message": parsed["message"] or None,
        "changes": parsed["change"] or None,
        "platform": parsed["platform"] or None,
    }
    body = None
    if "://" in source:
        query["fromSrc"] = source
    else:
        query["fromSrc"] = "-"
        body = _file_chunks(source)
    resp = app.client.request(
        "POST",
        "/images/create",
        query=query,
        body=body if body is not None else b"",
        headers={"Content-Type": "application/x-tar"} if body is not None else None,
    )
    for msg in resp.json_messages():
        if msg.get("errorDetail") or msg.get("error"):
            err = (msg.get("errorDetail") or {}).get("message") or msg.get("error")
            raise Exit(1, f"Error response from daemon: {err}")
        if msg.get("status"):
            app.print(str(msg["status"]))
        elif msg.get("stream"):
            app.out.write(str(msg["stream"]))
        else:
            app.print(json.dumps(msg))
    return 0


HISTORY = Command(
    "history",
    "history [OPTIONS] IMAGE",
    [
        Flag("format", kind=STR, help="Format output using a custom template"),
        Flag("human", "H", BOOL, "Print sizes and dates in human readable format", default=True),
        Flag("no-trunc", kind=BOOL, help="Don't truncate output"),
        Flag("quiet", "q", BOOL, "Only show image IDs"),
        Flag("platform", kind=STR, help="Show history for the given platform"),
    ],
    summary="Show the history of an image",
)

HISTORY_HEADERS = {
    "ID": "IMAGE",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY",
    "Size": "SIZE",
    "Comment": "COMMENT",
}


def cmd_history(app: App, args: list[str]) -> int:
    parsed = HISTORY.parse(args)
    need_args(HISTORY, parsed, 1, 1)
    items = app.client.get(f"/images/{parsed.args[0]}/history") or []
    trunc = not parsed["no-trunc"]
    human = parsed["human"]
    rows = []
    for it in items:
        ident = str(it.get("Id") or "<missing>")
        if ident != "<missing>" and trunc:
            ident = short_id(ident)
        created = float(it.get("Created") or 0)
        created_by = str(it.get("CreatedBy") or "").replace("\t", " ")
        if trunc:
            created_by = ellipsis(created_by, 45)
        size = int(it.get("Size") or 0)
        import time

        rfc3339 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
        rows.append(
            {
                "ID": ident,
                "CreatedSince": ago(created) if human else rfc3339,
                "CreatedAt": rfc3339,  # docker's history: RFC 3339, unlike images
                "CreatedBy": created_by,
                "Size": human_size(float(size)) if human else str(size),
                "Comment": str(it.get("Comment") or ""),
            }
        )
    if parsed["quiet"]:
        for r in rows:
            app.print(r["ID"])
        return 0
    created_col = "{{.CreatedSince}}" if human else "{{.CreatedAt}}"
    fmt = parsed["format"] or (
        f"table {{{{.ID}}}}\t{created_col}\t{{{{.CreatedBy}}}}\t{{{{.Size}}}}\t{{{{.Comment}}}}"
    )
    render_contexts(app, fmt, rows, HISTORY_HEADERS)
    return 0


def cmd_image_inspect(app: App, args: list[str]) -> int:
    from bulkhead.cli.system import inspect_objects

    return inspect_objects(app, args, "image")


IMAGE_PRUNE = Command(
    "image prune",
    "image prune [OPTIONS]",
    [
        Flag("all", "a", BOOL, "Remove all unused images, not just dangling ones"),
        Flag("filter", kind=LIST, help='Provide filter values (e.g. "until=<timestamp>")'),
        Flag("force", "f", BOOL, "Do not prompt for confirmation"),
    ],
    summary="Remove unused images",
)


def cmd_image_prune(app: App, args: list[str]) -> int:
    parsed = IMAGE_PRUNE.parse(args)
    need_args(IMAGE_PRUNE, parsed, 0, 0)
    warning = (
        "WARNING! This will remove all images without at least one container associated to them."
        if parsed["all"]
        else "WARNING! This will remove all dangling images."
    )
    if not parsed["force"] and not confirm(app, warning + "\nAre you sure you want to continue?"):
        return 0
    filters = [*parsed["filter"], "dangling=" + ("false" if parsed["all"] else "true")]
    reply = app.client.post("/images/prune", None, filters=filters_query(filters))
    deleted = reply.get("ImagesDeleted") or []
    if deleted:
        app.print("Deleted Images:")
        for item in deleted:
            if item.get("Untagged"):
                app.print(f"untagged: {item['Untagged']}")
            if item.get("Deleted"):
                app.print(f"deleted: {item['Deleted']}")
        app.print()
    app.print(f"Total reclaimed space: {human_size(float(reply.get('SpaceReclaimed') or 0))}")
    return 0
