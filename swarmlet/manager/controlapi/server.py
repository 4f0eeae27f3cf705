"""The managers' HTTPS API (aiohttp). Client certificates from the cluster's CA are
verified by TLS; each route then states which roles may call it:

- anonymous: fetching the CA certificate and joining (a joining node has no
  certificate yet; it proves itself with the join token instead),
- ``node`` (worker or manager certificates): the dispatcher session, renewal, leaving,
- ``manager``: Raft membership,
- ``admin``: everything an operator does through the CLI;
- ``read-only`` (an operator's certificate that only looks): by one rule,
  ``may_call``, every GET of a route open to ``admin`` except those that reveal
  secrets (``requires(..., reveals_secrets=True)``: backup, join tokens, the unlock
  key). A GET route added later is open to read-only certificates unless marked;
- ``dashboard``: a web dashboard session (a cookie bound to an admin certificate, no
  client certificate): only the reads in ``dashboard.DASHBOARD_READS``.

The routes are described by ``openapi.yaml`` (served at ``/v1/openapi.json``); a route
added here needs its entry there (tests/manager/test_openapi.py).

Domain code refuses with the errors of ``swarmlet.api.errors``; this module alone
turns them into HTTP statuses (``HTTP_STATUS``). Every refusal is answered with a JSON
``{"error": message, "code": kind}`` and logged.

Request bodies are read up to the cluster's ``limits.request_body_bytes`` (``read_body``):
a larger one is refused with 413 naming the limit, before it is parsed.

The routes call the Manager's services (``request.app["manager"].nodes``, ``.ca``,
``.membership``, ``.settings``, ``.configs``, ``.secrets``, ``.stacks``, ``.logs``, ``.dispatcher``; see manager.py),
which builds this app: it is not imported here, so that the dependency runs one way.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import json
import logging
import time
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from swarmlet.api import errors
from swarmlet.api.events import DEFAULT_EVENT_LIMIT, EventsGone, check_types, parse_point
from swarmlet.api.paging import page_request
from swarmlet.api.session import SESSION_PATH
from swarmlet.manager.controlapi import dashboard, openapi
from swarmlet.node.rpc import connector

log = logging.getLogger("swarmlet.api")

ANONYMOUS = "anonymous"
NODE_ROLES = ("worker", "manager")
MANAGER_ONLY = ("manager",)
ADMIN_ONLY = ("admin",)
ADMIN_OR_MANAGER = ("admin", "manager")
METRICS_ROLES = ("admin",)  # who may scrape GET /metrics (read-only certificates too, by may_call)
READ_ONLY = "read-only"
OPERATORS = ("admin", READ_ONLY)  # routes an operator calls on their own identity (renewal)
READ_METHODS = frozenset({"GET", "HEAD"})

# The most specific class of a refusal that is listed here decides its status.
HTTP_STATUS: dict[type[errors.SwarmletError], int] = {
    errors.Invalid: 400, errors.Forbidden: 403, errors.NotFound: 404, errors.Conflict: 409,
    errors.BodyTooLarge: 413, errors.Gone: 410, errors.Unavailable: 503, errors.Timeout: 504}
BODY_CHUNK = 64 * 1024


def http_status(err: errors.SwarmletError) -> int:
    """500 for a refusal of no listed kind (a store failure of its own, say)."""
    return next((HTTP_STATUS[cls] for cls in type(err).__mro__ if cls in HTTP_STATUS), 500)


def json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__}")


dumps = functools.partial(json.dumps, default=json_default)  # every JSON answer's encoding


def reply(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=dumps)


async def reply_listing(build: Callable, *args, **kwargs) -> web.Response:
    """A listing that grows with the cluster (every node, service or task), built from the
    store and encoded on a worker thread: 1,000 nodes are about 1 MB of JSON, and on the
    event loop each such request held every other one (and the node sessions) for
    60-110 ms. The store's reads are safe from any thread; a refusal (an unknown
    service) is raised here as on the loop."""
    def encoded() -> bytes:
        return dumps(build(*args, **kwargs)).encode()
    return web.Response(body=await asyncio.to_thread(encoded), content_type="application/json")


def may_call(role: str, roles: tuple[str, ...], method: str, reveals_secrets: bool) -> bool:
    """The role rule: a certificate of one of ``roles`` may call the route; a read-only
    one may also read (GET) what an admin may, unless the route reveals secrets."""
    if role in roles:
        return True
    return role == READ_ONLY and "admin" in roles and method in READ_METHODS and not reveals_secrets


def refusal_for(role: str, roles: tuple[str, ...], method: str) -> str:
    """Why ``may_call`` said no, for the caller."""
    if role == READ_ONLY and "admin" in roles:
        why = "it reveals secrets" if method in READ_METHODS else f"a {method} changes the cluster"
        return f"a read-only certificate cannot call this endpoint ({why}; it needs an admin certificate)"
    return f"a {role} certificate cannot call this endpoint (it needs {' or '.join(roles)})"


def requires(*roles: str, reveals_secrets: bool = False):
    """Guard a handler: the caller's certificate must be valid, unrevoked and allowed by
    ``may_call``. The identity is available to the handler as ``request["identity"]``."""

    def decorate(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            manager = request.app["manager"]
            if roles != (ANONYMOUS,):
                ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
                der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
                # A browser has no certificate: a dashboard session stands in for the admin
                # certificate it is bound to, with the dashboard role (dashboard.py).
                grant = None if der else dashboard_grant(request)
                if not der and grant is None:
                    return _refuse(request, 401, "a client certificate of this cluster is required "
                                                 "(or a dashboard session: run `swarmlet dashboard`)",
                                   errors.Forbidden.code)
                identity, reason = manager.ca.check_certificate(der or grant.admin_der)
                if reason is not None:
                    return _refuse(request, 403, reason, errors.Forbidden.code)
                if grant is not None:
                    identity = dataclasses.replace(identity, role=dashboard.DASHBOARD_ROLE)
                    if not dashboard.may_read(request.method, request.match_info.route.resource.canonical):
                        return _refuse(request, 403, "a dashboard session can only read what the dashboard "
                                                     "shows; use the CLI with the admin certificate",
                                       errors.Forbidden.code)
                elif not may_call(identity.role, roles, request.method, reveals_secrets):
                    return _refuse(request, 403, refusal_for(identity.role, roles, request.method),
                                   errors.Forbidden.code)
                request["identity"] = identity
            try:
                return await handler(request)
            except errors.SwarmletError as err:
                return _refuse(request, http_status(err), str(err), err.code)

        guarded.roles = roles  # read by openapi.document (x-roles)
        guarded.allowed_roles, guarded.reveals_secrets = roles, reveals_secrets  # for tests and docs to read
        return guarded

    return decorate


def dashboard_grant(request: web.Request) -> dashboard.Grant | None:
    session_id = request.cookies.get(dashboard.SESSION_COOKIE)
    return request.app["dashboard"].session(session_id, time.time()) if session_id else None


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
    # JSON's true/false are Python's bools, which are ints too: never take one for a number.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise errors.Invalid(f"field {name!r} must be {kind.__name__}, found {type(value).__name__}")
    return value


def query_flag(request: web.Request, name: str) -> bool:
    """A query flag: 1 (on), 0 or absent (off); anything else is refused, not taken for off."""
    value = request.query.get(name, "0")
    if value not in ("0", "1"):
        raise errors.Invalid(f"query parameter {name!r} must be 0 or 1, found {value!r}")
    return value == "1"


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
    return reply(await request.app["manager"].membership.status(forward=not query_flag(request, "local")))


@routes.get("/v1/cluster/settings")
@requires(*ADMIN_ONLY)
async def cluster_settings(request):
    return reply(request.app["manager"].settings.public())


@routes.post("/v1/cluster/settings")
@requires(*ADMIN_ONLY)
async def update_cluster_settings(request):
    body = await json_body(request)
    unknown = sorted(set(body) - {"limits", "autolock"})
    if unknown:
        raise errors.Invalid(f"only the limits and autolock change after init, not {', '.join(unknown)}")
    manager = request.app["manager"]
    answer = {}
    if "limits" in body:
        answer = await manager.settings.update_limits(field(body, "limits", dict))
    if "autolock" in body:  # the answer holds the new unlock key, shown once
        answer = {**(answer or manager.settings.public()), **await manager.autolock.set(field(body, "autolock", bool))}
    if not answer:
        raise errors.Invalid("nothing to change: give limits or autolock")
    return reply(answer)


@routes.get("/v1/backup")
@requires(*ADMIN_ONLY, reveals_secrets=True)
async def backup(request):
    blob = await request.app["manager"].backup()
    return web.Response(body=blob, content_type="application/octet-stream")


@routes.get("/v1/join-tokens")
@requires(*ADMIN_ONLY, reveals_secrets=True)
async def get_join_tokens(request):
    return reply(request.app["manager"].ca.join_tokens())


@routes.post("/v1/join-tokens/{role}/rotate")
@requires(*ADMIN_ONLY)
async def rotate_join_token(request):
    return reply(await request.app["manager"].ca.rotate_join_token(request.match_info["role"]))


# -- autolock (logic in swarmlet.manager.autolock) and operators' certificates (swarmlet.manager.admins) --

@routes.get("/v1/unlock-key")
@requires(*ADMIN_ONLY, reveals_secrets=True)
async def get_unlock_key(request):
    return reply(request.app["manager"].autolock.unlock_key())


@routes.post("/v1/unlock-key/rotate")
@requires(*ADMIN_ONLY)
async def rotate_unlock_key(request):
    return reply(await request.app["manager"].autolock.rotate())


@routes.get("/v1/admin/certs")
@requires(*ADMIN_ONLY)
async def list_admin_certs(request):
    return reply(request.app["manager"].admins.list_public())


@routes.post("/v1/admin/certs")
@requires(*ADMIN_ONLY)
async def create_admin_cert(request):
    body = await json_body(request)
    return reply(await request.app["manager"].admins.create(
        field(body, "name", str), field(body, "role", str), field(body, "csr", str).encode()), 201)


@routes.post("/v1/admin/renew")
@requires(*OPERATORS)
async def renew_admin_cert(request):
    body = await json_body(request)
    return reply(await request.app["manager"].admins.renew(request["identity"], field(body, "csr", str).encode()))


@routes.post("/v1/admin/revoke")
@requires(*ADMIN_ONLY)
async def revoke_admin_cert(request):
    body = await json_body(request)
    return reply(await request.app["manager"].admins.revoke(field(body, "ref", str), request["identity"]))


@routes.get("/v1/nodes")
@requires(*ADMIN_ONLY)
async def list_nodes(request):
    return await reply_listing(request.app["manager"].nodes.list_public, page_request(request.query))


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
    await request.app["manager"].nodes.remove(request.match_info["ref"], force=query_flag(request, "force"))
    return reply({"ok": True})


@routes.get("/v1/configs")
@requires(*ADMIN_ONLY)
async def list_configs(request):
    configs = request.app["manager"].configs
    if query_flag(request, "consistent"):  # after a Raft read barrier (configs.consistent_public)
        await configs.store.read_barrier()
    return reply(configs.list_public())


@routes.post("/v1/configs")
@requires(*ADMIN_ONLY)
async def create_config(request):
    return reply(await create_named_file(request, request.app["manager"].configs), 201)


async def create_named_file(request, service) -> dict:
    """A config or secret from ``{"name", "data": base64, "labels", "request_id"}``."""
    body = await json_body(request)
    try:
        data = base64.b64decode(field(body, "data", str), validate=True)
    except ValueError:
        raise errors.Invalid("field 'data' must be base64") from None
    return await service.create(field(body, "name", str), data, field(body, "labels", dict, required=False, default={}),
                                request_id=field(body, "request_id", str, required=False))


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
    if query_flag(request, "consistent"):
        return reply(await configs.consistent_public(ref))
    return reply(configs.public(ref))


@routes.delete("/v1/configs/{ref}")
@requires(*ADMIN_ONLY)
async def remove_config(request):
    await request.app["manager"].configs.remove(request.match_info["ref"])
    return reply({"ok": True})


# -- secrets (logic in swarmlet.manager.secrets; no answer ever holds a secret's value) -----------------

@routes.get("/v1/secrets")
@requires(*ADMIN_ONLY)
async def list_secrets(request):
    return reply(request.app["manager"].secrets.list_public())


@routes.post("/v1/secrets")
@requires(*ADMIN_ONLY)
async def create_secret(request):
    return reply(await create_named_file(request, request.app["manager"].secrets), 201)


@routes.get("/v1/secrets/{ref}")
@requires(*ADMIN_ONLY)
async def inspect_secret(request):
    return reply(request.app["manager"].secrets.public(request.match_info["ref"]))


@routes.delete("/v1/secrets/{ref}")
@requires(*ADMIN_ONLY)
async def remove_secret(request):
    await request.app["manager"].secrets.remove(request.match_info["ref"])
    return reply({"ok": True})


# -- stacks, services, tasks (logic in swarmlet.manager.stacks) ---------------------------------------

@routes.post("/v1/stacks/{name}")
@requires(*ADMIN_ONLY)
async def deploy_stack(request):
    body = await json_body(request)
    return reply(await request.app["manager"].stacks.deploy(
        request.match_info["name"], field(body, "stack", dict), field(body, "files", dict, required=False, default={}),
        prune=field(body, "prune", bool, required=False, default=False),
        dry_run=field(body, "dry_run", bool, required=False, default=False), by=who(request)))


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
    return await reply_listing(request.app["manager"].stacks.services, stack=request.match_info["name"])


@routes.get("/v1/stacks/{name}/tasks")
@requires(*ADMIN_ONLY)
async def stack_tasks(request):
    return await reply_listing(request.app["manager"].stacks.tasks, stack=request.match_info["name"])


@routes.delete("/v1/stacks/{name}")
@requires(*ADMIN_ONLY)
async def remove_stack(request):
    return reply(await request.app["manager"].stacks.remove_stack(request.match_info["name"]))


@routes.get("/v1/services")
@requires(*ADMIN_ONLY)
async def list_services(request):
    return await reply_listing(request.app["manager"].stacks.services, paged=page_request(request.query))


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
        request.match_info["ref"], field(body, "changes", dict),
        dry_run=field(body, "dry_run", bool, required=False, default=False)))


@routes.post("/v1/services/{ref}/rollback")
@requires(*ADMIN_ONLY)
async def rollback_service(request):
    return reply(await request.app["manager"].stacks.rollback_service(request.match_info["ref"], time.time()))


@routes.post("/v1/services/{ref}/promote")
@requires(*ADMIN_ONLY)
async def promote_service(request):
    return reply(await request.app["manager"].stacks.promote_service(request.match_info["ref"], time.time()))


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
    follow = query_flag(request, "follow")
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
    return await reply_listing(request.app["manager"].stacks.tasks, service_ref=request.query.get("service") or None,
                               stack=request.query.get("stack") or None, paged=page_request(request.query))


# -- events (logic in swarmlet.manager.events; the vocabulary in swarmlet.api.events) -----------------

@routes.get("/v1/events")
@requires(*ADMIN_ONLY)
async def events(request):
    """follow=0: ``{"events": [...], "cursor": ...}``; follow=1: NDJSON, one event a line,
    until ``until`` or the client leaves (a reader that falls behind the ring gets a
    last line ``{"error", "code": "gone"}``)."""
    query, log_ = request.query, request.app["manager"].events
    now = time.time()
    since = parse_point(query["since"], "since", now) if query.get("since") else None
    until = parse_point(query["until"], "until", now) if query.get("until") else None
    types = check_types(query.getall("type", []))
    follow = query.get("follow", "0")
    if follow not in ("0", "1"):
        raise errors.Invalid(f"follow must be 0 or 1, not {follow!r}")
    limit_text = query.get("limit")
    if limit_text is not None and not limit_text.isdigit():
        raise errors.Invalid(f"limit must be a whole number of events, not {limit_text!r}")
    if follow == "0":
        return reply(log_.read(since, until, types, DEFAULT_EVENT_LIMIT if limit_text is None else int(limit_text)))
    log_.ring.after(since)  # a since the ring no longer covers is refused (410) before the stream starts
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    send_headers = getattr(request.writer, "send_headers", None)  # aiohttp holds them for the first line otherwise
    if send_headers is not None:
        send_headers()
    try:
        async for event in log_.follow(since, until, types, None if limit_text is None else int(limit_text)):
            await response.write(json.dumps(event.to_dict(), default=json_default).encode() + b"\n")
    except EventsGone as err:
        await response.write(json.dumps({"error": str(err), "code": err.code}).encode() + b"\n")
    await response.write_eof()
    return response


@routes.get("/metrics")
@requires(*METRICS_ROLES)
async def metrics(request):
    """Prometheus' text format: this manager's cluster figures and its node's (manager/metrics.py)."""
    return web.Response(body=request.app["manager"].metrics.node.exposition(),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def timed(request: web.Request, handler):
    """API request latency by route template (never the raw path: one series per route)."""
    started, status = time.monotonic(), 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as err:
        status = err.status
        raise
    finally:
        metrics = getattr(request.app["manager"], "metrics", None)
        resource = request.match_info.route.resource
        if metrics is not None:
            metrics.observe_request(request.method, resource.canonical if resource is not None else "unmatched",
                                    status, time.monotonic() - started)


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


@web.middleware
async def json_refusals(request: web.Request, handler) -> web.StreamResponse:
    """aiohttp's own refusals (no such route, wrong method) and any unexpected failure
    answer in the API's JSON form too, never as a text page."""
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        refusal = _refuse(request, err.status, f"{request.method} {request.path}: {err.reason}",
                          {404: errors.NotFound.code, 405: "method_not_allowed"}.get(err.status, errors.Invalid.code))
        if "Allow" in err.headers:  # a 405 names the methods the route has (RFC 9110)
            refusal.headers["Allow"] = err.headers["Allow"]
        return refusal
    except Exception as err:  # a bug: logged with its traceback, answered as JSON
        log.exception("internal error in %s %s", request.method, request.path)
        return _refuse(request, 500, f"internal error: {type(err).__name__}: {err}", "internal")


# -- the API's description and the web dashboard (docs/security.md, "The web dashboard") ------------

STATIC_DIR = Path(__file__).with_name("static")
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}


@routes.get("/v1/openapi.json")
@requires(ANONYMOUS)
async def openapi_document(request):
    return reply(openapi.document(request.app.router))


@routes.post("/v1/dashboard/login")
@requires(*ADMIN_ONLY)
async def dashboard_login_token(request):
    ssl_object = request.transport.get_extra_info("ssl_object")
    token = request.app["dashboard"].issue_login(ssl_object.getpeercert(binary_form=True), time.time())
    return reply({"path": f"/dashboard/login?token={token}", "expires_in": dashboard.LOGIN_TOKEN_SECONDS})


@routes.get("/dashboard/login")
@requires(ANONYMOUS)
async def dashboard_login(request):
    session_id = request.app["dashboard"].redeem(request.query.get("token", ""), time.time())
    if session_id is None:
        raise errors.Forbidden("this dashboard login link is unknown, used or expired: run `swarmlet dashboard` "
                               "for a new one")
    response = web.Response(status=303, headers={"Location": "/dashboard/"})
    response.set_cookie(dashboard.SESSION_COOKIE, session_id, max_age=int(dashboard.SESSION_SECONDS),
                        path="/", secure=True, httponly=True, samesite="Strict")
    return response


@routes.get("/dashboard/")
@requires(ANONYMOUS)
async def dashboard_page(request):
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})


@routes.get("/dashboard/{file}")
@requires(ANONYMOUS)
async def dashboard_file(request):
    name = request.match_info["file"]
    if name not in STATIC_FILES:
        raise errors.NotFound(f"no dashboard file {name!r} (there are {', '.join(sorted(STATIC_FILES))})")
    return web.FileResponse(STATIC_DIR / name, headers={"Content-Type": STATIC_FILES[name]})


def build_app(manager) -> web.Application:
    """The API of ``manager`` (a Manager, see the module's docstring)."""
    # read_body enforces the cluster's body limit; aiohttp's own readers are not used.
    # timed outermost: it sees the status json_refusals answers with
    app = web.Application(middlewares=[timed, json_refusals])
    app["manager"] = manager
    app["dashboard"] = dashboard.DashboardSessions()
    app.add_routes(routes)
    return app
