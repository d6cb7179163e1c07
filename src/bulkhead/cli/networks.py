"""Network commands: network create, ls, inspect, rm, prune, connect, disconnect."""

from __future__ import annotations

from bulkhead.cli.app import App
from bulkhead.cli.client import APIError
from bulkhead.cli.containers import confirm, filters_query, render_contexts
from bulkhead.cli.flags import BOOL, INT, LIST, STR, Command, Flag, UsageError, need_args

TYPE_CHECKING = False  # typing costs milliseconds at start-up
if TYPE_CHECKING:
    from typing import Any

CREATE = Command(
    "network create",
    "network create [OPTIONS] NETWORK",
    [
        Flag("attachable", kind=BOOL, help="Enable manual container attachment"),
        Flag(
            "aux-address", kind=LIST, help="Auxiliary IPv4 or IPv6 addresses used by Network driver"
        ),
        Flag("driver", "d", STR, "Driver to manage the Network", default="bridge"),
        Flag("gateway", kind=LIST, help="IPv4 or IPv6 Gateway for the master subnet"),
        Flag("internal", kind=BOOL, help="Restrict external access to the network"),
        Flag("ip-range", kind=LIST, help="Allocate container ip from a sub-range"),
        Flag("ipam-driver", kind=STR, help="IP Address Management Driver", default="default"),
        Flag("ipam-opt", kind=LIST, help="Set IPAM driver specific options"),
        Flag("ipv6", kind=BOOL, help="Enable or disable IPv6 networking"),
        Flag("label", kind=LIST, help="Set metadata on a network"),
        Flag("opt", "o", LIST, "Set driver specific options"),
        Flag("subnet", kind=LIST, help="Subnet in CIDR format that represents a network segment"),
    ],
    summary="Create a network",
)


def _kv(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def _contains(subnet: str, address: str) -> bool:
    import ipaddress

    try:
        net = ipaddress.ip_network(subnet, strict=False)
        if "/" in address:
            other = ipaddress.ip_network(address, strict=False)
            return other.version == net.version and other.subnet_of(net)  # type: ignore[arg-type]
        return ipaddress.ip_address(address) in net
    except ValueError:
        return False


def ipam_config(
    subnets: list[str], gateways: list[str], ranges: list[str], aux: list[str] | None = None
) -> list[dict[str, Any]]:
    """``--subnet/--gateway/--ip-range/--aux-address`` → ``IPAM.Config`` (each gateway,
    range and ``name=address`` to the subnet holding it, as the docker CLI pairs them)."""
    config: list[dict[str, Any]] = [{"Subnet": s} for s in subnets]
    for item in aux or []:
        name, _, address = item.partition("=")
        for entry in config:
            if _contains(entry["Subnet"], address):
                entry.setdefault("AuxiliaryAddresses", {})[name] = address
                break
        else:
            raise UsageError(f"no matching subnet for aux-address {address}")
    for key, values in (("Gateway", gateways), ("IPRange", ranges)):
        for value in values:
            for entry in config:
                if key not in entry and _contains(entry["Subnet"], value):
                    entry[key] = value
                    break
            else:
                what = "gateway" if key == "Gateway" else "ip-range"
                raise UsageError(f"no matching subnet for {what} {value}")
    return config


def cmd_network_create(app: App, args: list[str]) -> int:
    parsed = CREATE.parse(args)
    need_args(CREATE, parsed, 1, 1)
    body: dict[str, Any] = {
        "Name": parsed.args[0],
        "Driver": parsed["driver"],
        "Internal": parsed["internal"],
        "Attachable": parsed["attachable"],
        "IPAM": {
            "Driver": parsed["ipam-driver"],
            "Config": ipam_config(
                parsed["subnet"], parsed["gateway"], parsed["ip-range"], parsed["aux-address"]
            ),
            "Options": _kv(parsed["ipam-opt"]),
        },
        "Options": _kv(parsed["opt"]),
        "Labels": _kv(parsed["label"]),
    }
    if parsed["ipv6"]:
        body["EnableIPv6"] = True
    reply = app.client.post("/networks/create", body)
    app.print(str(reply.get("Id", "")))
    return 0


LS = Command(
    "network ls",
    "network ls [OPTIONS]",
    [
        Flag("filter", "f", LIST, 'Provide filter values (e.g. "driver=bridge")'),
        Flag("format", kind=STR, help="Format output using a custom template"),
        Flag("no-trunc", kind=BOOL, help="Do not truncate the output"),
        Flag("quiet", "q", BOOL, "Only display network IDs"),
    ],
    summary="List networks",
)

HEADERS: dict[str, Any] = {
    "ID": "NETWORK ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "IPv4": "IPV4",
    "IPv6": "IPV6",
    "Internal": "INTERNAL",
    "Labels": "LABELS",
    "CreatedAt": "CREATED AT",
    "Label": lambda *_: "LABEL",
}


def network_context(net: dict[str, Any], trunc: bool) -> dict[str, Any]:
    labels = net.get("Labels") or {}
    nid = str(net.get("Id", ""))
    return {
        "ID": nid[:12] if trunc else nid,
        "Name": str(net.get("Name", "")),
        "Driver": str(net.get("Driver", "")),
        "Scope": str(net.get("Scope", "")),
        "IPv4": str(bool(net.get("EnableIPv4", True))).lower(),
        "IPv6": str(bool(net.get("EnableIPv6"))).lower(),
        "Internal": str(bool(net.get("Internal"))).lower(),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "CreatedAt": str(net.get("Created", "")),
        "Label": lambda key: str(labels.get(key, "")),
    }


def cmd_network_ls(app: App, args: list[str]) -> int:
    parsed = LS.parse(args)
    need_args(LS, parsed, 0, 0)
    nets = app.client.get("/networks", filters=filters_query(parsed["filter"])) or []
    nets = sorted(nets, key=lambda n: str(n.get("Name", "")))
    trunc = not parsed["no-trunc"]
    if parsed["quiet"]:
        for net in nets:
            nid = str(net.get("Id", ""))
            app.print(nid[:12] if trunc else nid)
        return 0
    fmt = parsed["format"] or "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
    render_contexts(app, fmt, [network_context(n, trunc) for n in nets], HEADERS)
    return 0


def cmd_network_inspect(app: App, args: list[str]) -> int:
    from bulkhead.cli.system import inspect_objects

    return inspect_objects(app, args, "network")


RM = Command(
    "network rm",
    "network rm [OPTIONS] NETWORK [NETWORK...]",
    [Flag("force", "f", BOOL, "Do not error if the network does not exist")],
    summary="Remove one or more networks",
)


def cmd_network_rm(app: App, args: list[str]) -> int:
    parsed = RM.parse(args)
    need_args(RM, parsed, 1)
    failed = False
    for name in parsed.args:
        try:
            app.client.request("DELETE", f"/networks/{name}").read()
            app.print(name)
        except APIError as exc:
            if parsed["force"] and exc.status == 404:
                continue
            app.error(f"Error response from daemon: {exc.message}")
            failed = True
    return 1 if failed else 0


PRUNE = Command(
    "network prune",
    "network prune [OPTIONS]",
    [
        Flag("filter", kind=LIST, help='Provide filter values (e.g. "until=<timestamp>")'),
        Flag("force", "f", BOOL, "Do not prompt for confirmation"),
    ],
    summary="Remove all unused networks",
)


def cmd_network_prune(app: App, args: list[str]) -> int:
    parsed = PRUNE.parse(args)
    need_args(PRUNE, parsed, 0, 0)
    question = (
        "WARNING! This will remove all custom networks not used by at least one container.\n"
        "Are you sure you want to continue?"
    )
    if not parsed["force"] and not confirm(app, question):
        return 0
    reply = app.client.post("/networks/prune", None, filters=filters_query(parsed["filter"]))
    deleted = (reply or {}).get("NetworksDeleted") or []
    if deleted:
        app.print("Deleted Networks:")
        for name in deleted:
            app.print(name)
    return 0


CONNECT = Command(
    "network connect",
    "network connect [OPTIONS] NETWORK CONTAINER",
    [
        Flag("alias", kind=LIST, help="Add network-scoped alias for the container"),
        Flag(
            "gw-priority",
            kind=INT,
            help="Highest gw-priority provides the default gateway. Accepts positive and "
            "negative values.",
        ),
        Flag("ip", kind=STR, help="IPv4 address (e.g., 172.30.100.104)"),
        Flag("ip6", kind=STR, help="IPv6 address (e.g., 2001:db8::33)"),
        Flag("link", kind=LIST, help="Add link to another container"),
    ],
    summary="Connect a container to a network",
)


def cmd_network_connect(app: App, args: list[str]) -> int:
    parsed = CONNECT.parse(args)
    need_args(CONNECT, parsed, 2, 2)
    network, container = parsed.args
    endpoint: dict[str, Any] = {"Aliases": parsed["alias"] or None, "Links": parsed["link"] or None}
    if parsed["gw-priority"]:
        endpoint["GwPriority"] = parsed["gw-priority"]
    if parsed["ip"] or parsed["ip6"]:
        endpoint["IPAMConfig"] = {"IPv4Address": parsed["ip"], "IPv6Address": parsed["ip6"]}
    app.client.post(
        f"/networks/{network}/connect", {"Container": container, "EndpointConfig": endpoint}
    )
    return 0


DISCONNECT = Command(
    "network disconnect",
    "network disconnect [OPTIONS] NETWORK CONTAINER",
    [Flag("force", "f", BOOL, "Force the container to disconnect from a network")],
    summary="Disconnect a container from a network",
)


def cmd_network_disconnect(app: App, args: list[str]) -> int:
    parsed = DISCONNECT.parse(args)
    need_args(DISCONNECT, parsed, 2, 2)
    network, container = parsed.args
    app.client.post(
        f"/networks/{network}/disconnect", {"Container": container, "Force": parsed["force"]}
    )
    return 0
