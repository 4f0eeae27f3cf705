"""The managers' HTTPS API (aiohttp). Client certificates from the cluster's CA are
verified by TLS; each route then states which roles may call it:

- anonymous: fetching the CA certificate and joining (a joining node has no
  certificate yet; it proves itself with the join token instead),
- ``node`` (worker or manager certificates): the dispatcher session, renewal, leaving,
- ``manager``: Raft membership,
- ``admin``: everything an operator does through the CLI.

Every refusal is answered with a JSON ``{"error": ...}`` and logged.
"""
from __future__ import annotations

import base64
import functools
import json
import logging
from typing import TYPE_CHECKING, Awaitable, Callable

from aiohttp import web

from swarmlet.manager.caserver import JoinRefused
from swarmlet.store import StoreError

if TYPE_CHECKING:
    from swarmlet.manager.manager import Manager

log = logging.getLogger("swarmlet.api")

ANONYMOUS = "anonymous"
NODE_ROLES = ("worker", "manager")
MANAGER_ONLY = ("manager",)
ADMIN_ONLY = ("admin",)
ADMIN_OR_MANAGER = ("admin", "manager")

_STATUS_OF_STORE_ERRORS = {"conflict": 409, "not_found": 404, "exists": 409, "invalid": 400,
                           "no_quorum": 503, "timeout": 504}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__}")


def reply(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=functools.partial(json.dumps, default=json_default))


def requires(*roles: str):
    """Guard a handler: the caller's certificate must be valid, unrevoked and of one of
    ``roles``. The identity is available to the handler as ``request["identity"]``."""

    def decorate(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            manager: Manager = request.app["manager"]
            if roles != (ANONYMOUS,):
                ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
                der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
                if not der:
                    return _refuse(request, 401, "a client certificate of this cluster is required")
                identity, reason = manager.check_certificate(der)
                if reason is not None:
                    return _refuse(request, 403, reason)
                if identity.role not in roles:
                    return _refuse(request, 403, f"a {identity.role} certificate cannot call this endpoint "
                                                 f"(it needs {' or '.join(roles)})")
                request["identity"] = identity
            try:
                return await handler(request)
            except ApiError as err:
                return _refuse(request, err.status, str(err))
            except JoinRefused as err:
                return _refuse(request, 403, str(err))
            except StoreError as err:
                return reply({"error": str(err), "code": err.code}, _STATUS_OF_STORE_ERRORS.get(err.code, 500))

        return guarded

    return decorate


def _refuse(request: web.Request, status: int, message: str) -> web.Response:
    log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, message)
    return reply({"error": message}, status)


async def json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def field(body: dict, name: str, kind: type, required: bool = True, default=None):
    value = body.get(name, default)
    if value is None and not required:
        return default
    if not isinstance(value, kind):
        raise ApiError(400, f"field {name!r} must be {kind.__name__}, found {type(value).__name__}")
    return value


# -- routes ------------------------------------------------------------------------------------

routes = web.RouteTableDef()


@routes.get("/v1/ca")
@requires(ANONYMOUS)
async def get_ca(request):
    return reply({"ca_cert": request.app["manager"].ca_cert_pem().decode()})


@routes.post("/v1/join")
@requires(ANONYMOUS)
async def join(request):
    body = await json_body(request)
    answer = await request.app["manager"].join(
        token=field(body, "token", str), csr=field(body, "csr", str).encode(),
        advertise_addr=field(body, "advertise_addr", str), hostname=field(body, "hostname", str),
        api_port=field(body, "api_port", int), raft_port=field(body, "raft_port", int),
        peer_ip=request.remote)
    return reply(answer)


@routes.post("/v1/node/renew")
@requires(*NODE_ROLES)
async def renew(request):
    body = await json_body(request)
    return reply(await request.app["manager"].renew(
        request["identity"], field(body, "csr", str).encode(),
        api_port=field(body, "api_port", int, required=False), raft_port=field(body, "raft_port", int, required=False)))


@routes.post("/v1/node/leave")
@requires(*NODE_ROLES)
async def leave(request):
    await request.app["manager"].node_left(request["identity"].node_id)
    return reply({"ok": True})


@routes.get("/v1/dispatcher/session")
@requires(*NODE_ROLES)
async def session(request):
    return await request.app["manager"].dispatcher.serve_session(request, request["identity"])


@routes.post("/v1/raft/members")
@requires(*MANAGER_ONLY)
async def add_raft_member(request):
    body = await json_body(request)
    await request.app["manager"].add_raft_member(request["identity"].node_id, field(body, "raft_address", str))
    return reply({"ok": True})


@routes.post("/v1/raft/leave")
@requires(*MANAGER_ONLY)
async def remove_raft_member(request):
    body = await json_body(request)
    await request.app["manager"].remove_raft_member(request["identity"].node_id, field(body, "raft_address", str))
    return reply({"ok": True})


@routes.post("/v1/nodes/{ref}/promote")
@requires(*ADMIN_OR_MANAGER)
async def promote_node(request):
    return reply(await request.app["manager"].set_role(request.match_info["ref"], "manager"))


@routes.post("/v1/nodes/{ref}/demote")
@requires(*ADMIN_OR_MANAGER)
async def demote_node(request):
    return reply(await request.app["manager"].set_role(request.match_info["ref"], "worker"))


@routes.get("/v1/cluster/status")
@requires(*ADMIN_OR_MANAGER)
async def cluster_status(request):
    return reply(await request.app["manager"].cluster_status(forward=request.query.get("local") != "1"))


@routes.get("/v1/join-tokens")
@requires(*ADMIN_ONLY)
async def get_join_tokens(request):
    return reply(request.app["manager"].join_tokens())


@routes.post("/v1/join-tokens/{role}/rotate")
@requires(*ADMIN_ONLY)
async def rotate_join_token(request):
    return reply(await request.app["manager"].rotate_join_token(request.match_info["role"]))


@routes.get("/v1/nodes")
@requires(*ADMIN_ONLY)
async def list_nodes(request):
    return reply(request.app["manager"].nodes_view())


@routes.get("/v1/nodes/{ref}")
@requires(*ADMIN_ONLY)
async def inspect_node(request):
    return reply(request.app["manager"].node_view(request.match_info["ref"]))


@routes.post("/v1/nodes/{ref}/update")
@requires(*ADMIN_ONLY)
async def update_node(request):
    body = await json_body(request)
    return reply(await request.app["manager"].update_node(
        request.match_info["ref"], availability=field(body, "availability", str, required=False),
        label_add=field(body, "label_add", dict, required=False, default={}),
        label_rm=field(body, "label_rm", list, required=False, default=[]),
        role=field(body, "role", str, required=False)))


@routes.delete("/v1/nodes/{ref}")
@requires(*ADMIN_ONLY)
async def remove_node(request):
    await request.app["manager"].remove_node(request.match_info["ref"], force=request.query.get("force") == "1")
    return reply({"ok": True})


@routes.get("/v1/configs")
@requires(*ADMIN_ONLY)
async def list_configs(request):
    return reply(request.app["manager"].configs_view())


@routes.post("/v1/configs")
@requires(*ADMIN_ONLY)
async def create_config(request):
    body = await json_body(request)
    try:
        data = base64.b64decode(field(body, "data", str), validate=True)
    except ValueError:
        raise ApiError(400, "field 'data' must be base64") from None
    created = await request.app["manager"].create_config(
        field(body, "name", str), data, field(body, "labels", dict, required=False, default={}),
        request_id=field(body, "request_id", str, required=False))
    return reply(created, 201)


@routes.get("/v1/configs/{ref}")
@requires(*ADMIN_ONLY)
async def inspect_config(request):
    return reply(request.app["manager"].config_view(request.match_info["ref"]))


@routes.delete("/v1/configs/{ref}")
@requires(*ADMIN_ONLY)
async def remove_config(request):
    await request.app["manager"].remove_config(request.match_info["ref"])
    return reply({"ok": True})


# -- stacks, services, tasks (logic in swarmlet.manager.stacks) ---------------------------------------

@routes.post("/v1/stacks/{name}")
@requires(*ADMIN_ONLY)
async def deploy_stack(request):
    body = await json_body(request)
    return reply(await request.app["manager"].stacks.deploy(
        request.match_info["name"], field(body, "stack", dict), field(body, "files", dict, required=False, default={}),
        prune=bool(body.get("prune"))))


@routes.get("/v1/stacks")
@requires(*ADMIN_ONLY)
async def list_stacks(request):
    return reply(request.app["manager"].stacks.stacks())


@routes.get("/v1/stacks/{name}/services")
@requires(*ADMIN_ONLY)
async def stack_services(request):
    return reply(request.app["manager"].stacks.services(stack=request.match_info["name"]))


@routes.get("/v1/stacks/{name}/tasks")
@requires(*ADMIN_ONLY)
async def stack_tasks(request):
    return reply(request.app["manager"].stacks.tasks(stack=request.match_info["name"]))


@routes.delete("/v1/stacks/{name}")
@requires(*ADMIN_ONLY)
async def remove_stack(request):
    return reply(await request.app["manager"].stacks.remove_stack(request.match_info["name"]))


@routes.get("/v1/services")
@requires(*ADMIN_ONLY)
async def list_services(request):
    return reply(request.app["manager"].stacks.services())


@routes.get("/v1/services/{ref}")
@requires(*ADMIN_ONLY)
async def inspect_service(request):
    return reply(request.app["manager"].stacks.service(request.match_info["ref"]))


@routes.post("/v1/services/{ref}/scale")
@requires(*ADMIN_ONLY)
async def scale_service(request):
    body = await json_body(request)
    return reply(await request.app["manager"].stacks.scale(request.match_info["ref"], field(body, "replicas", int)))


@routes.delete("/v1/services/{ref}")
@requires(*ADMIN_ONLY)
async def remove_service(request):
    await request.app["manager"].stacks.remove_service(request.match_info["ref"])
    return reply({"ok": True})


@routes.get("/v1/services/{ref}/logs")
@requires(*ADMIN_OR_MANAGER)
async def service_logs(request):
    """Streamed text, each line prefixed with its task (``web.1.<task>@<node> | …``).
    Only the leader holds the sessions the logs come over: a follower relays."""
    manager = request.app["manager"]
    tail = request.query.get("tail", "all")
    if tail != "all" and not tail.isdigit():
        raise ApiError(400, "tail must be a number or 'all'")
    follow = request.query.get("follow") == "1"
    if not manager.store.is_leader:
        return await manager.relay_to_leader(request)
    lines = manager.service_log_lines(request.match_info["ref"], None if tail == "all" else int(tail), follow)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    async for line in lines:
        await response.write(line.encode() + b"\n")
    await response.write_eof()
    return response


@routes.get("/v1/tasks")
@requires(*ADMIN_ONLY)
async def list_tasks(request):
    return reply(request.app["manager"].stacks.tasks(service_ref=request.query.get("service") or None,
                                                     stack=request.query.get("stack") or None))


def build_app(manager: "Manager") -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app["manager"] = manager
    app.add_routes(routes)
    return app
