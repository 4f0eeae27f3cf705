"""The OpenAPI document stays true to the app: every route documented and nothing
documented that has no route; roles taken from the routes' guards; the document a
valid OpenAPI 3 description that schemathesis can load."""
from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from swarmlet.manager.controlapi import openapi
from swarmlet.manager.controlapi.dashboard import DASHBOARD_READS, DASHBOARD_ROLE
from swarmlet.manager.controlapi.server import ANONYMOUS, build_app, requires


def app() -> web.Application:
    return build_app(object())


def sync_problems(document: dict, router) -> list[str]:
    """What the sync test reports: routes without documentation, documentation without routes."""
    documented, routed = openapi.documented_operations(document), openapi.routed_operations(router)
    return ([f"route {m} {p} is not in openapi.yaml" for m, p in sorted(routed - documented)]
            + [f"openapi.yaml documents {m} {p}, which has no route" for m, p in sorted(documented - routed)])


def test_every_route_is_documented_and_every_documented_path_is_a_route():
    assert sync_problems(openapi.written_document(), app().router) == []


def test_the_sync_check_flags_a_new_route_without_documentation_and_a_stale_entry():
    extended = app()

    @requires(ANONYMOUS)
    async def undocumented(request):
        return web.Response()

    extended.router.add_post("/v1/new-thing", undocumented)
    stale = {**openapi.written_document(), "paths": {**openapi.written_document()["paths"], "/v1/gone": {"get": {}}}}
    assert sync_problems(stale, extended.router) == [
        "route POST /v1/new-thing is not in openapi.yaml", "openapi.yaml documents GET /v1/gone, which has no route"]


def test_each_operation_carries_the_roles_its_guard_accepts():
    paths = openapi.document(app().router)["paths"]
    assert paths["/v1/nodes"]["get"]["x-roles"] == ["admin", DASHBOARD_ROLE]
    assert paths["/v1/backup"]["get"]["x-roles"] == ["admin"]
    assert paths["/v1/node/renew"]["post"]["x-roles"] == ["worker", "manager"]
    assert paths["/v1/ca"]["get"]["x-roles"] == [ANONYMOUS]
    every = [op for item in paths.values() for method, op in item.items() if method in openapi.HTTP_METHODS]
    assert all(op.get("x-roles") for op in every)
    # A dashboard session reads only GET routes, and never the backup or the join tokens.
    assert all(method == "GET" for method, _ in DASHBOARD_READS)
    assert not {("GET", "/v1/backup"), ("GET", "/v1/join-tokens"), ("GET", "/v1/cluster/settings")} & DASHBOARD_READS


def test_the_document_is_a_valid_openapi_3_description():
    import schemathesis  # in the test extra
    schema = schemathesis.openapi.from_dict(openapi.document(app().router))
    operations = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert operations == openapi.routed_operations(app().router)


async def test_the_document_is_served_to_anyone():
    async with TestClient(TestServer(app())) as client:
        response = await client.get("/v1/openapi.json")
        assert response.status == 200
        served = await response.json()
    assert served["openapi"].startswith("3.") and "/v1/services/{ref}/scale" in served["paths"]
