"""System commands: version, info, inspect (any object), login, logout."""

from __future__ import annotations

import json
import os
import platform
import sys

from bulkhead.cli.app import App, Exit
from bulkhead.cli.client import API_VERSION, APIError, DaemonUnavailable
from bulkhead.cli.flags import BOOL, STR, Command, Flag, UsageError, need_args

TYPE_CHECKING = False  # typing costs milliseconds at start-up
if TYPE_CHECKING:
    from typing import Any

# --- inspect --------------------------------------------------------------------

INSPECT = Command(
    "inspect",
    "inspect [OPTIONS] NAME|ID [NAME|ID...]",
    [
        Flag("format", "f", STR, "Format output using a custom template"),
        Flag("size", "s", BOOL, "Display total file sizes if the type is container"),
        Flag("type", kind=STR, help="Only inspect objects of the given type"),
    ],
    summary="Return low-level information on bulkhead objects",
)

_PATHS = {
    "container": "/containers/{}/json",
    "image": "/images/{}/json",
    "volume": "/volumes/{}",
    "network": "/networks/{}",
}


def _fetch(app: App, kind: str, name: str, size: bool) -> Any:
    query = {"size": True} if size and kind == "container" else {}
    return app.client.get(_PATHS[kind].format(name), **query)


def inspect_objects(app: App, args: list[str], kind: str | None = None) -> int:
    """``inspect`` of containers, images or volumes: a JSON array, or ``-f`` per object."""
    parsed = INSPECT.parse(args)
    need_args(INSPECT, parsed, 1)
    if kind is None and parsed["type"]:
        kind = parsed["type"]
        if kind not in _PATHS:
            raise UsageError(f'"{kind}" is not a valid value for --type')
    kinds = [kind] if kind else ["container", "image", "volume", "network"]
    results: list[Any] = []
    failed = False
    for name in parsed.args:
        found = None
        last: APIError | None = None
        for k in kinds:
            try:
                found = _fetch(app, k, name, parsed["size"])
                break
            except APIError as exc:
                if exc.status != 404:
                    raise
                last = exc
        if found is None:
            failed = True
            if kind is None:
                app.error(f"Error: No such object: {name}")
            else:
                message = last.message if last else f"No such {kind}: {name}"
                app.error(f"Error response from daemon: {message}")
            continue
        results.append(found)
    fmt = parsed["format"]
    if fmt:
        from bulkhead.cli.fmt import expand_format
        from bulkhead.cli.template import Template, TemplateError

        source, _table = expand_format(fmt)
        try:
            tpl = Template(source)
            for obj in results:
                app.print(tpl.execute(obj))
        except TemplateError as exc:
            raise Exit(1, f"template parsing error: {exc}") from None
    else:  # docker prints the array even when empty ("[]")
        app.print(json.dumps(results, indent=4, ensure_ascii=False))
    return 1 if failed else 0


def cmd_inspect(app: App, args: list[str]) -> int:
    return inspect_objects(app, args, None)


# --- version, info ----------------------------------------------------------------

VERSION = Command(
    "version",
    "version [OPTIONS]",
    [Flag("format", "f", STR, "Format output using a custom template")],
    summary="Show the bulkhead version information",
)


def _go_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def cmd_version(app: App, args: list[str]) -> int:
    from bulkhead import __version__

    parsed = VERSION.parse(args)
    need_args(VERSION, parsed, 0, 0)
    client_info = {
        "Version": __version__,
        "ApiVersion": API_VERSION,
        "DefaultAPIVersion": API_VERSION,
        "GoVersion": "python" + platform.python_version(),
        "Os": "linux",
        "Arch": _go_arch(),
        "Context": "default",
    }
    server: Any = None
    error: str | None = None
    try:
        server = app.client.get("/version")
    except (APIError, DaemonUnavailable) as exc:
        error = str(exc)
    if parsed["format"]:
        from bulkhead.cli.fmt import expand_format
        from bulkhead.cli.template import Template, TemplateError

        try:
            app.print(
                Template(expand_format(parsed["format"])[0]).execute(
                    {"Client": client_info, "Server": server}
                )
            )
        except TemplateError as exc:
            raise Exit(1, f"template parsing error: {exc}") from None
    else:
        app.print("Client:")
        app.print(f" Version:           {client_info['Version']}")
        app.print(f" API version:       {API_VERSION}")
        app.print(f" Python version:    {platform.python_version()}")
        app.print(f" OS/Arch:           linux/{client_info['Arch']}")
        app.print(" Context:           default")
        if server:
            _print_server_version(app, server)
    if error:
        app.error(error)
        return 1
    return 0


def _print_server_version(app: App, server: dict[str, Any]) -> None:
    """The server half of ``version``, laid out as docker's (Engine, then other components)."""
    name = (server.get("Platform") or {}).get("Name") or "bulkhead"
    engine = next((c for c in server.get("Components") or [] if c.get("Name") == "Engine"), None)
    details = (engine or {}).get("Details") or {}
    app.print("")
    app.print(f"Server: {name}")
    app.print(" Engine:")
    app.print(f"  Version:          {server.get('Version', '')}")
    app.print(
        f"  API version:      {server.get('ApiVersion', '')} "
        f"(minimum version {server.get('MinAPIVersion', '')})"
    )
    app.print(f"  Go version:       {server.get('GoVersion', '')}")
    app.print(f"  Git commit:       {server.get('GitCommit', '')}")
    app.print(f"  Built:            {server.get('BuildTime', '')}")
    app.print(f"  OS/Arch:          {server.get('Os', '')}/{server.get('Arch', '')}")
    app.print(f"  Experimental:     {details.get('Experimental', 'false')}")
    for comp in server.get("Components") or []:
        if comp.get("Name") == "Engine":
            continue
        app.print(f" {comp.get('Name', '')}:")
        app.print(f"  Version:          {comp.get('Version', '')}")
        for key, value in (comp.get("Details") or {}).items():
            app.print(f"  {key + ':':<17} {value}")


INFO = Command(
    "info",
    "info [OPTIONS]",
    [Flag("format", "f", STR, "Format output using a custom template")],
    summary="Display system-wide information",
)


def cmd_info(app: App, args: list[str]) -> int:
    parsed = INFO.parse(args)
    need_args(INFO, parsed, 0, 0)
    info = app.client.get("/info") or {}
    if parsed["format"]:
        from bulkhead.cli.fmt import expand_format
        from bulkhead.cli.template import Template, TemplateError

        try:
            app.print(Template(expand_format(parsed["format"])[0]).execute(info))
        except TemplateError as exc:
            raise Exit(1, f"template parsing error: {exc}") from None
        return 0
    from bulkhead import __version__

    lines = [
        "Client:",
        f" Version:    {__version__}",
        " Context:    default",
        f" Debug Mode: {str(app.debug).lower()}",
        "",
        "Server:",
        f" Containers: {info.get('Containers', 0)}",
        f"  Running: {info.get('ContainersRunning', 0)}",
        f"  Paused: {info.get('ContainersPaused', 0)}",
        f"  Stopped: {info.get('ContainersStopped', 0)}",
        f" Images: {info.get('Images', 0)}",
        f" Server Version: {info.get('ServerVersion', '')}",
        f" Storage Driver: {info.get('Driver', '')}",
    ]
    lines += [f"  {k}: {v}" for k, v in info.get("DriverStatus") or []]
    lines += [
        f" Logging Driver: {info.get('LoggingDriver', '')}",
        f" Cgroup Driver: {info.get('CgroupDriver', '')}",
        f" Cgroup Version: {info.get('CgroupVersion', '')}",
    ]
    plugins = info.get("Plugins") or {}
    if plugins:
        lines.append(" Plugins:")
        for kind in ("Volume", "Network", "Authorization", "Log"):
            if plugins.get(kind):
                lines.append(f"  {kind}: {' '.join(plugins[kind])}")
    swarm = (info.get("Swarm") or {}).get("LocalNodeState")
    if swarm:
        lines.append(f" Swarm: {swarm}")
    runtimes = info.get("Runtimes") or {}
    if runtimes:
        lines.append(f" Runtimes: {' '.join(runtimes)}")
    lines += [
        f" Default Runtime: {info.get('DefaultRuntime', '')}",
        f" Init Binary: {info.get('InitBinary', '')}",
        f" containerd version: {(info.get('ContainerdCommit') or {}).get('ID', '')}",
        f" runc version: {(info.get('RuncCommit') or {}).get('ID', '')}",
        f" init version: {(info.get('InitCommit') or {}).get('ID', '')}",
    ]
    security = info.get("SecurityOptions") or []
    if security:
        lines.append(" Security Options:")
        for opt in security:
            fields = dict(part.partition("=")[::2] for part in opt.split(","))
            lines.append(f"  {fields.get('name', opt)}")
            for key, value in fields.items():
                if key != "name":
                    lines.append(f"   {key.capitalize()}: {value}")
    lines += [
        f" Kernel Version: {info.get('KernelVersion', '')}",
        f" Operating System: {info.get('OperatingSystem', '')}",
        f" OSType: {info.get('OSType', '')}",
        f" Architecture: {info.get('Architecture', '')}",
        f" CPUs: {info.get('NCPU', 0)}",
        f" Total Memory: {_gib(info.get('MemTotal', 0))}",
        f" Name: {info.get('Name', '')}",
        f" ID: {info.get('ID', '')}",
        f" Docker Root Dir: {info.get('DockerRootDir', '')}",
        f" Debug Mode: {str(bool(info.get('Debug'))).lower()}",
        f" Experimental: {str(bool(info.get('ExperimentalBuild'))).lower()}",
    ]
    registry = info.get("RegistryConfig") or {}
    insecure = [
        name for name, idx in (registry.get("IndexConfigs") or {}).items() if not idx.get("Secure")
    ] + list(registry.get("InsecureRegistryCIDRs") or [])
    if insecure:
        lines.append(" Insecure Registries:")
        lines += [f"  {name}" for name in insecure]
    mirrors = registry.get("Mirrors") or []
    if mirrors:
        lines.append(" Registry Mirrors:")
        lines += [f"  {m}" for m in mirrors]
    lines += [
        f" Live Restore Enabled: {str(bool(info.get('LiveRestoreEnabled'))).lower()}",
        "",
    ]
    for line in lines:
        app.print(line)
    for warning in info.get("Warnings") or []:
        app.error(warning)
    return 0


def _gib(n: Any) -> str:
    """go-units BytesSize: binary units (``23.43GiB``)."""
    size = float(n or 0)
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while size >= 1024 and i < len(units) - 1:
        size /= 1024
        i += 1
    return f"{size:.4g}{units[i]}"


# --- login, logout ----------------------------------------------------------------

LOGIN = Command(
    "login",
    "login [OPTIONS] [SERVER]",
    [
        Flag("password", "p", STR, "Password or Personal Access Token (PAT)"),
        Flag("password-stdin", kind=BOOL, help="Take the Password or PAT from stdin"),
        Flag("username", "u", STR, "Username"),
    ],
    summary="Authenticate to a registry (credentials stored in config.json)",
)


def _save_config(doc: dict[str, Any]) -> str:
    from bulkhead.cli.images import config_dir

    directory = config_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, "config.json")
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent="\t")
        fh.write("\n")
    os.replace(tmp, path)
    return path


def cmd_login(app: App, args: list[str]) -> int:
    import base64

    from bulkhead.cli.images import DOCKER_HUB_SERVER, load_config

    parsed = LOGIN.parse(args)
    need_args(LOGIN, parsed, 0, 1)
    server = parsed.args[0] if parsed.args else DOCKER_HUB_SERVER
    for prefix in ("https://", "http://"):
        if server.startswith(prefix) and server != DOCKER_HUB_SERVER:
            server = server[len(prefix) :].rstrip("/")
    if server in ("docker.io", "index.docker.io"):
        server = DOCKER_HUB_SERVER
    user = parsed["username"]
    password = parsed["password"]
    if parsed["password-stdin"]:
        if password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        if not user:
            raise UsageError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password:
        app.error("WARNING! Using --password via the CLI is insecure. Use --password-stdin.")
    if not user:
        app.out.write("Username: ")
        app.out.flush()
        user = sys.stdin.readline().strip()
    if not password:
        import getpass

        password = getpass.getpass("Password: ")
    if not user:
        raise Exit(1, "Error: Non-null Username Required")
    if not password:
        raise Exit(1, "Error: Password Required")
    reply = (
        app.client.post("/auth", {"username": user, "password": password, "serveraddress": server})
        or {}
    )
    config = load_config()
    auths = config.setdefault("auths", {})
    entry: dict[str, str] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    if reply.get("IdentityToken"):
        entry = {
            "auth": base64.b64encode(f"{user}:".encode()).decode(),
            "identitytoken": reply["IdentityToken"],
        }
    auths[server] = entry
    _save_config(config)
    app.print(str(reply.get("Status") or "Login Succeeded"))
    return 0


LOGOUT = Command(
    "logout", "logout [SERVER]", [], summary="Log out from a registry (remove stored credentials)"
)


def cmd_logout(app: App, args: list[str]) -> int:
    from bulkhead.cli.images import DOCKER_HUB_SERVER, load_config

    parsed = LOGOUT.parse(args)
    need_args(LOGOUT, parsed, 0, 1)
    server = parsed.args[0] if parsed.args else DOCKER_HUB_SERVER
    if server in ("docker.io", "index.docker.io"):
        server = DOCKER_HUB_SERVER
    config = load_config()
    auths = config.get("auths") or {}
    keys = [k for k in (server, f"https://{server}", f"http://{server}") if k in auths]
    if not keys:
        app.print(f"Not logged in to {server}")
        return 0
    app.print(f"Removing login credentials for {server}")
    for k in keys:
        del auths[k]
    _save_config(config)
    return 0
