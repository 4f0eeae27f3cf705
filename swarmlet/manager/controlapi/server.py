"""The managers' HTTPS API (aiohttp). Client certificates from the cluster's CA are
verified by TLS; each route then states which roles may call it:

- anonymous: fetching the CA certificate and joining (a joining node has no
  certificate yet; it proves itself with the join token instead),
- ``node`` (worker or manager certificates): the dispatcher session, renewal, leaving,
- ``manager``: Raft membership,
- ``admin``: everything an operator does through the CLI.

Domain code refuses with the errors of ``swarmlet.api.errors``; this module alone
turns them into HTTP statuses (``HTTP_STATUS``). Every refusal is answered with a JSON
``{"error": message, "code": kind}`` and logged.

Request bodies are read up to the cluster's ``limits.request_body_bytes`` (``read_body``):
a larger one is refused with 413 naming the limit, before it is parsed.

The routes call the Manager's services (``request.app["manager"].nodes``, ``.ca``,
``.membership``, ``.settings``, ``.configs``, ``.stacks``, ``.logs``, ``.dispatcher``; see manager.py),
which builds this app: it is not imported here, so that the dependency runs one way.
"""
from __future__ import annotations

import base64
import functools
import json
import logging
import time
from typing import Awaitable, Callable

import aiohttp
from aiohttp import web

from swarmlet.api import errors
from swarmlet.api.paging import page_request
from swarmlet.api.session import SESSION_PATH
from swarmlet.node.rpc import connector

log = logging.getLogger("swarmlet.api")

ANONYMOUS = "anonymous"
NODE_ROLES = ("worker", "manager")
MANAGER_ONLY = ("manager",)
ADMIN_ONLY = ("admin",)
ADMIN_OR_MANAGER = ("admin", "manager")

# The most specific class of a refusal that is listed here decides its status.
HTTP_STATUS: dict[type[errors.SwarmletError], int] = {
    errors.Invalid: 400, errors.Forbidden: 403, errors.NotFound: 404, errors.Conflict: 409,
    errors.BodyTooLarge: 413, errors.Unavailable: 503, errors.Timeout: 504}
BODY_CHUNK = 64 * 1024


def http_status(err: errors.SwarmletError) -> int:
    """500 for a refusal of no listed kind (a store failure of its own, say)."""
    return next((HTTP_STATUS[cls] for cls in type(err).__mro__ if cls in HTTP_STATUS), 500)


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
            manager = request.app["manager"]
            if roles != (ANONYMOUS,):
                ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
                der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
                if not der:
                    return _refuse(request, 401, "a client certificate of this cluster is required",
                                   errors.Forbidden.code)
                identity, reason = manager.ca.check_certificate(der)
                if reason is not None:
                    return _refuse(request, 403, reason, errors.Forbidden.code)
                if identity.role not in roles:
                    return _refuse(request, 403, f"a {identity.role} certificate cannot call this endpoint "
                                                 f"(it needs {' or '.join(roles)})", errors.Forbidden.code)
                request["identity"] = identity
            try:
                return await handler(request)
            except errors.SwarmletError as err:
                return _refuse(request, http_status(err), str(err), err.code)

        return guarded

    return decorate


def _refuse(request: web.Request, status: int, message: str, code: str) -> web.Response:
    log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, message)
    return reply({"error": message, "code": code}, status)


async def read_body(request: web.Request) -> bytes:
    """The request's body, refused (``BodyTooLarge``) past ``limits.request_body_bytes``:
    at once when its Content-Length says so, else as soon as that much has arrived, so an
    endless body costs no more than the limit. (aiohttp's own ``client_max_size`` is
    fixed when the app is built; the limit is a cluster setting that may change.)"""
    limits = request.app["manager"].settings.limits()
    what = "the request body's size"
    if request.content_length is not None:
        limits.check("request_body_bytes", what, request.content_length, error=errors.BodyTooLarge)
    body = bytearray()
    async for chunk in request.content.iter_chunked(BODY_CHUNK):
        body += chunk
        limits.check("request_body_bytes", f"{what} (at least)", len(body), error=errors.BodyTooLarge)
    return bytes(body)


async def json_body(request: web.Request) -> dict:
    try:
        body = json.loads(await read_body(request))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise errors.Invalid(f"request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise errors.Invalid("request body must be a JSON object")
    return body


def field(body: dict, name: str, kind: type, required: bool = True, default=None):
    value = body.get(name, default)
    if value is None and not required:
        return default
    if not isinstance(value, kind):
        raise errors.Invalid(f"field {name!r} must be {kind.__name__}, found {type(value).__name__}")
    return value


# -- routes ------------------------------------------------------------------------------------

routes = web.RouteTableDef()


@routes.get("/v1/ca")
@requires(ANONYMOUS)
async def get_ca(request):
    return reply({"ca_cert": request.app["manager"].ca.ca_pem.decode()})


@routes.post("/v1/join")
@requires(ANONYMOUS)
async def join(request):
    body = await json_body(request)
    answer = await request.app["manager"].ca.join(
        token=field(body, "token", str), csr=field(body, "csr", str).encode(),
        advertise_addr=field(body, "advertise_addr", str), hostname=field(body, "hostname", str),
        api_port=field(body, "api_port", int), raft_port=field(body, "raft_port", int),
        peer_ip=request.remote)
    return reply(answer)


@routes.post("/v1/node/renew")
@requires(*NODE_ROLES)
async def renew(request):
    body = await json_body(request)
    return reply(await request.app["manager"].ca.renew(
        request["identity"], field(body, "csr", str).encode(),
        api_port=field(body, "api_port", int, required=False), raft_port=field(body, "raft_port", int, required=False)))


@routes.post("/v1/node/leave")
@requires(*NODE_ROLES)
async def leave(request):
    await request.app["manager"].nodes.left(request["identity"].node_id)
    return reply({"ok": True})


@routes.get(SESSION_PATH)
@requires(*NODE_ROLES)
async def session(request):
    return await request.app["manager"].dispatcher.serve_session(request, request["identity"].node_id)


@routes.post("/v1/raft/members")
@requires(*MANAGER_ONLY)
async def add_raft_member(request):
    body = await json_body(request)
    await request.app["manager"].membership.add(request["identity"].node_id, field(body, "raft_address", str))
    return reply({"ok": True})


@routes.post("/v1/raft/leave")
@requires(*MANAGER_ONLY)
async def remove_raft_member(request):
    body = await json_body(request)
    await request.app["manager"].membership.remove(request["identity"].node_id, field(body, "raft_address", str))
    return reply({"ok": True})


@routes.post("/v1/nodes/{ref}/promote")
@requires(*ADMIN_OR_MANAGER)
async def promote_node(request):
    return reply(await request.app["manager"].nodes.set_role(request.match_info["ref"], "manager"))


@routes.post("/v1/nodes/{ref}/demote")
@requires(*ADMIN_OR_MANAGER)
async def demote_node(request):
    return reply(await request.app["manager"].nodes.set_role(request.match_info["ref"], "worker"))


@routes.get("/v1/cluster/status")
@requires(*ADMIN_OR_MANAGER)
async def cluster_status(request):
    return reply(await request.app["manager"].membership.status(forward=request.query.get("local") != "1"))


@routes.get("/v1/cluster/settings")
@requires(*ADMIN_ONLY)
async def cluster_settings(request):
    return reply(request.app["manager"].settings.public())


@routes.post("/v1/cluster/settings")
@requires(*ADMIN_ONLY)
async def update_cluster_settings(request):
    body = await json_body(request)
    unknown = sorted(set(body) - {"limits"})
    if unknown:
        raise errors.Invalid(f"only the limits change after init, not {', '.join(unknown)}")
    return reply(await request.app["manager"].settings.update_limits(field(body, "limits", dict)))


@routes.get("/v1/backup")
@requires(*ADMIN_ONLY)
async def backup(request):
    blob = await request.app["manager"].backup()
    return web.Response(body=blob, content_type="application/octet-stream")


@routes.get("/v1/join-tokens")
@requires(*ADMIN_ONLY)
async def get_join_tokens(request):
    return reply(request.app["manager"].ca.join_tokens())


@routes.post("/v1/join-tokens/{role}/rotate")
@requires(*ADMIN_ONLY)
async def rotate_join_token(request):
    return reply(await request.app["manager"].ca.rotate_join_token(request.match_info["role"]))


@routes.get("/v1/nodes")
@requires(*ADMIN_ONLY)
async def list_nodes(request):
    return reply(request.app["manager"].nodes.list_public(page_request(request.query)))


@routes.get("/v1/nodes/{ref}")
@requires(*ADMIN_ONLY)
async def inspect_node(request):
    return reply(request.app["manager"].nodes.public(request.match_info["ref"]))


@routes.post("/v1/nodes/{ref}/update")
@requires(*ADMIN_ONLY)
async def update_node(request):
    body = await json_body(request)
    return reply(await request.app["manager"].nodes.update(
        request.match_info["ref"], availability=field(body, "availability", str, required=False),
        label_add=field(body, "label_add", dict, required=False, default={}),
        label_rm=field(body, "label_rm", list, required=False, default=[]),
        role=field(body, "role", str, required=False)))


@routes.delete("/v1/nodes/{ref}")
@requires(*ADMIN_ONLY)
async def remove_node(request):
    await request.app["manager"].nodes.remove(request.match_info["ref"], force=request.query.get("force") == "1")
    return reply({"ok": True})


@routes.get("/v1/configs")
@requires(*ADMIN_ONLY)
async def list_configs(request):
    configs = request.app["manager"].configs
    if request.query.get("consistent") == "1":  # after a Raft read barrier (configs.consistent_public)
        await configs.store.read_barrier()
    return reply(configs.list_public())


@routes.post("/v1/configs")
@requires(*ADMIN_ONLY)
async def create_config(request):
    body = await json_body(request)
    try:
        data = base64.b64decode(field(body, "data", str), validate=True)
    except ValueError:
        raise errors.Invalid("field 'data' must be base64") from None
    created = await request.app["manager"].configs.create(
        field(body, "name", str), data, field(body, "labels", dict, required=False, default={}),
        request_id=field(body, "request_id", str, required=False))
    return reply(created, 201)


@routes.delete("/v1/configs")
@requires(*ADMIN_ONLY)
async def remove_labelled_configs(request):
    key, equals, value = request.query.get("label", "").partition("=")
    if not key or not equals:
        raise errors.Invalid("DELETE /v1/configs needs ?label=KEY=VALUE (the configs to remove)")
    return reply({"removed": await request.app["manager"].configs.remove_labelled(key, value)})


@routes.get("/v1/configs/{ref}")
@requires(*ADMIN_ONLY)
async def inspect_config(request):
    configs, ref = request.app["manager"].configs, request.match_info["ref"]
    if request.query.get("consistent") == "1":
        return reply(await configs.consistent_public(ref))
    return reply(configs.public(ref))


@routes.delete("/v1/configs/{ref}")
@requires(*ADMIN_ONLY)
async def remove_config(request):
    await request.app["manager"].configs.remove(request.match_info["ref"])
    return reply({"ok": True})


# -- stacks, services, tasks (logic in swarmlet.manager.stacks) ---------------------------------------

@routes.post("/v1/stacks/{name}")
@requires(*ADMIN_ONLY)
async def deploy_stack(request):
    body = await json_body(request)
    return reply(await request.app["manager"].stacks.deploy(
        request.match_info["name"], field(body, "stack", dict), field(body, "files", dict, required=False, default={}),
        prune=bool(body.get("prune")), dry_run=bool(body.get("dry_run")), by=who(request)))


def who(request) -> str:
    """Who made a change, for the record (a stack's revisions): the caller's certificate."""
    identity = request.get("identity")
    return f"{identity.role} {identity.node_id}" if identity is not None else ""


@routes.get("/v1/stacks/{name}/revisions")
@requires(*ADMIN_ONLY)
async def stack_history(request):
    return reply(request.app["manager"].stacks.history(request.match_info["name"]))


@routes.post("/v1/stacks/{name}/rollback")
@requires(*ADMIN_ONLY)
async def rollback_stack(request):
    body = await json_body(request)
    return reply(await request.app["manager"].stacks.rollback_stack(
        request.match_info["name"], field(body, "to", int, required=False), time.time(), by=who(request)))


@routes.post("/v1/stacks/{name}/revisions/{number}/outcome")
@requires(*ADMIN_ONLY)
async def stack_revision_outcome(request):
    body = await json_body(request)
    try:
        number = int(request.match_info["number"])
    except ValueError:
        raise errors.Invalid(f"revision {request.match_info['number']!r} is not a number") from None
    return reply(await request.app["manager"].stacks.set_outcome(request.match_info["name"], number,
                                                                field(body, "outcome", str)))


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
    return reply(request.app["manager"].stacks.services(paged=page_request(request.query)))


@routes.get("/v1/services/{ref}")
@requires(*ADMIN_ONLY)
async def inspect_service(request):
    return reply(request.app["manager"].stacks.service(request.match_info["ref"]))


@routes.post("/v1/services/{ref}/scale")
@requires(*ADMIN_ONLY)
async def scale_service(request):
    body = await json_body(request)
    return reply(await request.app["manager"].stacks.scale(request.match_info["ref"], field(body, "replicas", int)))


@routes.post("/v1/services/{ref}/update")
@requires(*ADMIN_ONLY)
async def update_service(request):
    body = await json_body(request)
    return reply(await request.app["manager"].stacks.update_service(
        request.match_info["ref"], field(body, "changes", dict), dry_run=bool(body.get("dry_run"))))


@routes.post("/v1/services/{ref}/rollback")
@requires(*ADMIN_ONLY)
async def rollback_service(request):
    return reply(await request.app["manager"].stacks.rollback_service(request.match_info["ref"], time.time()))


@routes.post("/v1/services/{ref}/promote")
@requires(*ADMIN_ONLY)
async def promote_service(request):
    return reply(await request.app["manager"].stacks.promote_service(request.match_info["ref"]))


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
        raise errors.Invalid("tail must be a number or 'all'")
    follow = request.query.get("follow") == "1"
    if not manager.store.is_leader:
        return await relay_to_leader(request, manager)
    lines = manager.logs.lines(request.match_info["ref"], None if tail == "all" else int(tail), follow)
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
                                                     stack=request.query.get("stack") or None,
                                                     paged=page_request(request.query)))


async def relay_to_leader(request: web.Request, manager) -> web.StreamResponse:
    """Stream the leader's answer to the same request (as this manager)."""
    leader_api = manager.membership.leader_api_address()
    if not leader_api:
        raise errors.Unavailable("no leader to ask: the cluster has no quorum")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector(manager.peers.source)) as http:
        async with http.get(f"https://{leader_api}{request.path_qs}", ssl=manager.peers.client_context()) as upstream:
            if upstream.status >= 400:
                return _refuse(request, upstream.status, f"leader {leader_api}: {(await upstream.text())[:300]}",
                               errors.SwarmletError.code)
            response = web.StreamResponse(headers={"Content-Type": upstream.headers.get("Content-Type", "")})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


def build_app(manager) -> web.Application:
    """The API of ``manager`` (a Manager, see the module's docstring)."""
    # read_body enforces the cluster's body limit; aiohttp's own readers are not used.
    app = web.Application()
    app["manager"] = manager
    app.add_routes(routes)
    return app
