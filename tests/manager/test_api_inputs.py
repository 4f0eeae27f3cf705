"""Bugs schemathesis found in the API (tests/cluster/test_api_fuzz.py), each reproduced
here through the real app in front of a fake manager, with plain aiohttp requests:

- ``{"replicas": false}`` scaled a service (a JSON boolean passed as an integer:
  ``isinstance(False, int)``), and ``"dry_run": {}`` / ``"prune": "no"`` were taken
  for booleans;
- query flags (``?local=``, ``?consistent=``, ``?force=``, ``?follow=``) took any value
  silently for "off";
- the logs of a service that does not exist answered 200 and then wrote a 404 inside
  the already started chunked body (a broken HTTP answer)."""
from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from swarmlet.api import errors
from swarmlet.ca import ROLE_ADMIN, ROLE_MANAGER, RootCA, client_context, server_context
from swarmlet.manager.controlapi.server import build_app
from swarmlet.manager.logs import ServiceLogs

from ..ca.conftest import issue_node
from .test_controlapi import FakeSettings
from .test_dashboard_auth import IDENTITY


class FakeStacks:
    def __init__(self):
        self.calls: list[tuple] = []

    async def scale(self, ref, replicas):
        self.calls.append(("scale", ref, replicas))
        return {"service": ref, "replicas": replicas}

    async def update_service(self, ref, changes, dry_run=False):
        self.calls.append(("update", ref, changes, dry_run))
        return {"service": ref, "dry_run": dry_run}

    async def deploy(self, stack, spec, files, prune, dry_run, by):
        self.calls.append(("deploy", stack, prune, dry_run))
        return {"stack": stack}


class FakeMembership:
    async def status(self, forward):
        return {"forwarded": forward}


class FakeStore:
    is_leader = True


def no_such_service(ref):
    raise errors.NotFound(f"no service {ref!r}")


async def no_task_logs(tasks, tail, follow):
    return
    yield


class FakeManager:
    def __init__(self):
        self.stacks = FakeStacks()
        self.membership = FakeMembership()
        self.store = FakeStore()
        self.logs = ServiceLogs(self.store, no_such_service, no_task_logs)
        self.ca = AdminCA()
        self.settings = FakeSettings()


class AdminCA:
    """Every presented certificate is the admin's (the guard itself is tested elsewhere)."""

    def check_certificate(self, der):
        return IDENTITY, None


@pytest.fixture(scope="module")
def tls():
    """A real CA, the server's certificate and an admin client certificate: the routes
    under test are admin-only, so requests go over TLS with a client certificate."""
    ca = RootCA.create("inputs")
    server, admin = (issue_node(ca, name, role) for name, role in (("manager-1", ROLE_MANAGER), ("admin-x", ROLE_ADMIN)))
    return (server_context(ca.cert_pem, server.cert_pem, server.key_pem, require_client_cert=False),
            client_context(ca.cert_pem, admin.cert_pem, admin.key_pem))


@pytest.fixture
async def api(tls):
    server_ssl, client_ssl = tls
    manager = FakeManager()
    server = TestServer(build_app(manager))
    await server.start_server(ssl=server_ssl)
    async with TestClient(server, connector=aiohttp.TCPConnector(ssl=client_ssl)) as client:
        client.manager = manager
        yield client


@pytest.mark.parametrize("body", [{"replicas": False}, {"replicas": True}, {"replicas": "2"}, {"replicas": 1.5}])
async def test_replicas_must_be_an_integer_not_a_boolean(api, body):
    response = await api.post("/v1/services/web/scale", json=body)
    answer = await response.json()
    assert response.status == 400 and "field 'replicas' must be int" in answer["error"], answer
    assert api.manager.stacks.calls == []


@pytest.mark.parametrize("path, body, name", [
    ("/v1/services/web/update", {"changes": {}, "dry_run": {}}, "dry_run"),
    ("/v1/stacks/demo", {"stack": {}, "dry_run": 1}, "dry_run"),
    ("/v1/stacks/demo", {"stack": {}, "prune": "no"}, "prune"),
])
async def test_flags_in_a_body_must_be_booleans(api, path, body, name):
    response = await api.post(path, json=body)
    answer = await response.json()
    assert response.status == 400 and f"field {name!r} must be bool" in answer["error"], answer
    assert api.manager.stacks.calls == []


async def test_boolean_flags_still_work(api):
    assert (await api.post("/v1/services/web/update", json={"changes": {}, "dry_run": True})).status == 200
    assert (await api.post("/v1/stacks/demo", json={"stack": {}, "prune": True})).status == 200
    assert api.manager.stacks.calls == [("update", "web", {}, True), ("deploy", "demo", True, False)]


@pytest.mark.parametrize("url, name", [
    ("/v1/cluster/status?local=AAA", "local"), ("/v1/cluster/status?local=true", "local"),
    ("/v1/services/web/logs?follow=yes", "follow"),
])
async def test_query_flags_are_0_or_1(api, url, name):
    response = await api.get(url)
    answer = await response.json()
    assert response.status == 400 and f"query parameter {name!r} must be 0 or 1" in answer["error"], answer


async def test_query_flags_still_work(api):
    assert await (await api.get("/v1/cluster/status?local=1")).json() == {"forwarded": False}
    assert await (await api.get("/v1/cluster/status?local=0")).json() == {"forwarded": True}
    assert await (await api.get("/v1/cluster/status")).json() == {"forwarded": True}


async def test_logs_of_a_missing_service_are_a_plain_404(api):
    response = await api.get("/v1/services/nope/logs")
    assert response.status == 404 and response.headers.get("Transfer-Encoding") != "chunked"
    assert (await response.json()) == {"error": "no service 'nope'", "code": "not_found"}
