"""Network endpoints: ``/networks``, ``/networks/{id}``, create, connect, disconnect, prune.

What ``docker network create/ls/inspect/rm/connect/disconnect/prune`` and
docker-py's ``client.networks`` call. The work is
:class:`~bulkhead.network.manager.NetworkManager`'s (in a worker thread) and,
for connect/disconnect, the engine's (it knows whether the container runs);
this module maps requests and answers in Docker's shapes:

- ``GET /networks?filters=`` → a list of ``Network`` documents (filters
  ``driver``, ``id``, ``label``, ``name``, ``scope``, ``type``
  ``custom|builtin``, ``dangling``);
- ``GET /networks/{id}?verbose=&scope=`` → the ``Network`` with its ``Containers``;
- ``POST /networks/create`` → 201 ``{"Id", "Warning"}`` (409 name taken or
  pool overlap, 400 bad CIDR/gateway, 403 a second host/null network);
- ``DELETE /networks/{id}`` → 204 (403 pre-defined, 409 active endpoints);
- ``POST /networks/{id}/connect`` ``{"Container", "EndpointConfig"}`` and
  ``/disconnect`` ``{"Container", "Force"}`` → 200;
- ``POST /networks/prune?filters=`` (in :mod:`bulkhead.api.disk`, which
  calls :func:`prune`) → ``{"NetworksDeleted": [names]}``.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from bulkhead.api.errors import BadRequest, NotFound
from bulkhead.api.routes import Request, Response, Router, bool_field, json_response, str_map
from bulkhead.network.manager import PREDEFINED, match_labels
from bulkhead.network.store import Network, Pool

if TYPE_CHECKING:
    from bulkhead.engine.context import Services
    from bulkhead.engine.engine import Engine

_LIST_FILTERS = {"driver", "id", "label", "name", "scope", "type", "dangling"}


def _names(engine: Engine) -> dict[str, str]:
    return {c.id: c.name for c in engine.store.list()}


def _match(values: list[str], source: str) -> bool:
    """Docker's ``filters.Args.Match``: a value equal to ``source`` or a regular expression
    found in it (an invalid expression matches nothing, no error)."""
    for v in values:
        if v == source:
            return True
        try:
            if re.search(v, source):
                return True
        except re.error:
            continue
    return False


def _dangling_wanted(values: list[str]) -> bool:
    """The ``dangling`` filter's one value (moby's words for a bad one)."""
    if len(values) > 1:
        raise BadRequest('got more than one value for filter key "dangling"')
    if values[0] in ("1", "true"):
        return True
    if values[0] in ("0", "false"):
        return False
    raise BadRequest(
        'invalid value for filter \'dangling\', must be "true" (or "1"), or "false" (or "0")'
    )


def _matches(net: Network, filters: dict[str, list[str]], attached: set[str]) -> bool:
    """``attached``: the ids of the networks with active endpoints (running containers':
    a network only stopped containers use is dangling, as Docker's)."""
    for key, values in filters.items():
        if key == "driver" and net.driver not in values:
            return False
        if key == "id" and not _match(values, net.id):
            return False
        if key == "name" and not _match(values, net.name):
            return False
        if key == "scope" and net.scope not in values:
            return False
        if key == "type":
            for v in values:
                if v not in ("custom", "builtin"):
                    raise BadRequest(f"invalid filter: 'type'='{v}'")
            kind = "builtin" if net.name in PREDEFINED else "custom"
            if kind not in values:
                return False
        if key == "dangling":
            dangling = net.id not in attached and net.name not in PREDEFINED
            if dangling != _dangling_wanted(values):
                return False
        if key == "label" and not match_labels(net, {"label": values}):
            return False
    return True


def prune(engine: Engine, filters: dict[str, list[str]]) -> list[str]:
    """Remove the unused user-defined networks; their names."""
    return engine.network.prune(filters)


def register(router: Router, services: Services) -> None:
    """Add the network endpoints to ``router``, served by ``services.engine.network``."""
    engine = services.engine
    manager = engine.network

    def list_docs(filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        attached = {ep.network_id for ep in manager.store.endpoints() if ep.host_ifname}
        return [
            manager.network_doc(n, {}) for n in manager.networks() if _matches(n, filters, attached)
        ]

    async def list_networks(req: Request) -> Response:
        filters = req.filters()
        for key in filters:
            if key not in _LIST_FILTERS:
                raise BadRequest(f"invalid filter '{key}'")
        if filters.get("dangling"):
            _dangling_wanted(filters["dangling"])  # a bad value is 400 even with no network
        return json_response(await asyncio.to_thread(list_docs, filters))

    async def inspect(req: Request) -> Response:
        scope = req.query_str("scope") or ""
        req.query_bool("verbose")
        net = await asyncio.to_thread(manager.get, req.params["id"])
        if scope and scope != net.scope:
            raise NotFound(f"network {req.params['id']} not found")
        doc = await asyncio.to_thread(lambda: manager.network_doc(net, _names(engine), status=True))
        return json_response(doc)

    async def create(req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict):
            raise BadRequest("invalid network create request: not a JSON object")
        name = body.get("Name")
        if not isinstance(name, str) or not name:
            raise BadRequest("invalid Name: a network needs a name")
        driver = body.get("Driver") or "bridge"
        if not isinstance(driver, str):
            raise BadRequest("invalid Driver: must be a string")
        # swarm and configuration-only networks: refused, not made as plain ones
        scope = body.get("Scope") or "local"
        if scope != "local":
            raise BadRequest(f"invalid Scope {scope!r}: only local networks are supported")
        if body.get("Ingress"):
            raise BadRequest("invalid Ingress: ingress networks need a swarm, not supported")
        config_from = body.get("ConfigFrom")
        if body.get("ConfigOnly") or (isinstance(config_from, dict) and config_from.get("Network")):
            raise BadRequest(
                "configuration-only networks (ConfigOnly, ConfigFrom) are not supported"
            )
        ipam = body.get("IPAM") or {}
        if not isinstance(ipam, dict):
            raise BadRequest("invalid IPAM: must be an object")
        pools = []
        for i, entry in enumerate(ipam.get("Config") or []):
            if not isinstance(entry, dict):
                raise BadRequest(f"invalid IPAM.Config[{i}]: must be an object")
            fields = {}
            for key in ("Subnet", "Gateway", "IPRange"):
                value = entry.get(key) or ""
                if not isinstance(value, str):
                    raise BadRequest(f"invalid IPAM.Config[{i}].{key}: must be a string")
                fields[key] = value
            aux = str_map(entry, "AuxiliaryAddresses")
            if not fields["Subnet"]:
                if fields["Gateway"] or fields["IPRange"] or aux:
                    raise BadRequest(
                        f"invalid IPAM.Config[{i}]: a gateway, range or auxiliary address "
                        "needs a subnet"
                    )
                continue
            pools.append(
                Pool(
                    subnet=fields["Subnet"],
                    gateway=fields["Gateway"],
                    ip_range=fields["IPRange"],
                    aux=aux,
                )
            )
        options = str_map(body, "Options")
        labels = str_map(body, "Labels")
        ipam_driver = ipam.get("Driver") or "default"
        if not isinstance(ipam_driver, str):
            raise BadRequest("invalid IPAM.Driver: must be a string")
        # IPAM.Options as given: {} from the docker CLI, null when absent (Docker shows both)
        ipam_options = str_map(ipam, "Options") if ipam.get("Options") is not None else None
        enable: dict[str, bool | None] = {}
        for key in ("EnableIPv4", "EnableIPv6"):  # absent or null: the driver options decide
            enable[key] = bool_field(body, key) if body.get(key) is not None else None
        net = await asyncio.to_thread(
            lambda: manager.create_network(
                name,
                driver=driver,
                internal=bool_field(body, "Internal"),
                enable_ipv6=enable["EnableIPv6"],
                enable_ipv4=enable["EnableIPv4"],
                attachable=bool_field(body, "Attachable"),
                pools=pools,
                options=options,
                labels=labels,
                ipam_driver=ipam_driver,
                ipam_options=ipam_options,
            )
        )
        return json_response({"Id": net.id, "Warning": ""}, status=201)

    async def remove(req: Request) -> Response:
        await asyncio.to_thread(manager.remove_network, req.params["id"], _names(engine))
        return Response(204, b"", None)

    def _container(body: Any) -> str:
        if not isinstance(body, dict):
            raise BadRequest("invalid request: not a JSON object")
        ref = body.get("Container")
        if not isinstance(ref, str) or not ref:
            raise BadRequest("invalid Container: a container is required")
        return ref

    async def connect(req: Request) -> Response:
        body = req.json()
        ref = _container(body)
        cfg = body.get("EndpointConfig") or {}
        if not isinstance(cfg, dict):
            raise BadRequest("invalid EndpointConfig: must be an object")
        await engine.network_connect(req.params["id"], ref, cfg)
        return Response(200, b"", None)

    async def disconnect(req: Request) -> Response:
        body = req.json()
        ref = _container(body)
        await engine.network_disconnect(req.params["id"], ref, bool_field(body, "Force"))
        return Response(200, b"", None)

    router.add("GET", "/networks", list_networks)
    router.add("POST", "/networks/create", create)
    router.add("GET", "/networks/{id}", inspect)
    router.add("DELETE", "/networks/{id}", remove)
    router.add("POST", "/networks/{id}/connect", connect)
    router.add("POST", "/networks/{id}/disconnect", disconnect)
