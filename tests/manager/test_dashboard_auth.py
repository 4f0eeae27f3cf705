"""Dashboard logins and sessions: the pure rules (one-time tokens, expiry, the cap),
and through the real app (aiohttp's test client, a fake manager): the cookie's flags,
the dashboard role reading only what the pages show, refusals in JSON."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest
from aiohttp.test_utils import TestClient, TestServer

from swarmlet.ca.identity import NodeIdentity
from swarmlet.manager.controlapi import dashboard
from swarmlet.manager.controlapi.dashboard import DashboardSessions
from swarmlet.manager.controlapi.server import build_app

ADMIN_DER = b"admin-certificate"


def test_a_login_token_opens_one_session_once():
    sessions = DashboardSessions()
    token = sessions.issue_login(ADMIN_DER, now=100.0)
    session_id = sessions.redeem(token, now=101.0)
    assert session_id and sessions.session(session_id, now=102.0).admin_der == ADMIN_DER
    assert sessions.redeem(token, now=102.0) is None  # spent


def test_a_login_token_expires():
    sessions = DashboardSessions()
    token = sessions.issue_login(ADMIN_DER, now=100.0)
    assert sessions.redeem(token, now=100.0 + dashboard.LOGIN_TOKEN_SECONDS) is None
    assert sessions.redeem("", now=100.0) is None and sessions.redeem("guess", now=100.0) is None


def test_a_session_expires_and_can_be_ended():
    sessions = DashboardSessions()
    session_id = sessions.redeem(sessions.issue_login(ADMIN_DER, 0.0), 0.0)
    assert sessions.session(session_id, dashboard.SESSION_SECONDS - 1) is not None
    assert sessions.session(session_id, dashboard.SESSION_SECONDS) is None
    other = sessions.redeem(sessions.issue_login(ADMIN_DER, 0.0), 0.0)
    sessions.end(other)
    assert sessions.session(other, 1.0) is None


def test_sessions_are_capped_oldest_first():
    sessions = DashboardSessions()
    ids = [sessions.redeem(sessions.issue_login(ADMIN_DER, 0.0), 0.0) for _ in range(dashboard.MAX_SESSIONS + 1)]
    assert len(sessions.sessions) == dashboard.MAX_SESSIONS
    assert sessions.session(ids[0], 1.0) is None and sessions.session(ids[-1], 1.0) is not None


IDENTITY = NodeIdentity(node_id="admin-x", role="admin", cluster_id="c", serial=1,
                        not_before=datetime(2020, 1, 1, tzinfo=timezone.utc),
                        not_after=datetime(2099, 1, 1, tzinfo=timezone.utc))


class FakeCA:
    def __init__(self):
        self.refusal: str | None = None

    def check_certificate(self, der: bytes):
        assert der == ADMIN_DER
        return (None, self.refusal) if self.refusal else (IDENTITY, None)


class FakeStacks:
    def stacks(self):
        return [{"name": "demo", "services": 1}]


class FakeManager:
    def __init__(self):
        self.ca = FakeCA()
        self.stacks = FakeStacks()


@pytest.fixture
async def api():
    manager = FakeManager()
    app = build_app(manager)
    async with TestClient(TestServer(app)) as client:
        client.manager, client.sessions = manager, app["dashboard"]
        yield client


async def login(api) -> None:
    token = api.sessions.issue_login(ADMIN_DER, now=__import__("time").time())
    response = await api.get(f"/dashboard/login?token={token}", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/dashboard/"
    cookie = response.cookies[dashboard.SESSION_COOKIE]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    # The test server is plain HTTP, where a client keeps no Secure cookie: send it by hand.
    api.session.cookie_jar.update_cookies({dashboard.SESSION_COOKIE: cookie.value})


async def test_a_session_reads_what_the_dashboard_shows(api):
    await login(api)
    response = await api.get("/v1/stacks")
    assert response.status == 200 and await response.json() == [{"name": "demo", "services": 1}]


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/backup"), ("GET", "/v1/join-tokens"), ("GET", "/v1/cluster/settings"),
    ("POST", "/v1/services/x/scale"), ("DELETE", "/v1/stacks/demo"), ("POST", "/v1/dashboard/login"),
])
async def test_a_session_cannot_write_or_read_secrets(api, method, path):
    await login(api)
    response = await api.request(method, path, json={"replicas": 0})
    answer = await response.json()
    assert response.status == 403 and answer["code"] == "forbidden" and "dashboard session" in answer["error"]


async def test_a_session_dies_with_its_admin_certificate(api):
    await login(api)
    api.manager.ca.refusal = "certificate revoked: node admin-x was removed from the cluster"
    response = await api.get("/v1/stacks")
    assert response.status == 403 and "revoked" in (await response.json())["error"]


async def test_a_used_or_unknown_login_link_is_refused_in_json(api):
    token = api.sessions.issue_login(ADMIN_DER, now=__import__("time").time())
    assert (await api.get(f"/dashboard/login?token={token}", allow_redirects=False)).status == 303
    for url in (f"/dashboard/login?token={token}", "/dashboard/login?token=guess", "/dashboard/login"):
        response = await api.get(url, allow_redirects=False)
        answer = await response.json()
        assert response.status == 403 and "swarmlet dashboard" in answer["error"], url


async def test_without_cookie_or_certificate_the_api_refuses_401(api):
    response = await api.get("/v1/stacks")
    assert response.status == 401 and "swarmlet dashboard" in (await response.json())["error"]


async def test_the_pages_are_served_and_only_the_known_files(api):
    page = await api.get("/dashboard/")
    assert page.status == 200 and page.content_type == "text/html" and "app.js" in await page.text()
    script = await api.get("/dashboard/app.js")
    assert script.status == 200 and "/v1/events?follow=0&limit=50" in await script.text()
    missing = await api.get("/dashboard/..%2Fserver.py")
    assert missing.status == 404 and (await missing.json())["code"] == "not_found"


@pytest.mark.parametrize("method, path, status, code", [
    ("GET", "/v1/no-such-route", 404, "not_found"),
    ("PUT", "/v1/ca", 405, "method_not_allowed"),
])
async def test_aiohttp_own_refusals_are_json_too(api, method, path, status, code):
    response = await api.request(method, path)
    answer = await response.json()
    assert response.status == status and answer["code"] == code and path in answer["error"]


async def test_an_unexpected_failure_is_a_json_500_not_a_text_page(api):
    api.manager.stacks = None  # list_stacks then fails with AttributeError: a bug, as it would be
    await login(api)
    response = await api.get("/v1/stacks")
    answer = await response.json()
    assert response.status == 500 and answer["code"] == "internal" and "AttributeError" in answer["error"]


async def test_a_wrong_method_says_which_methods_the_route_has(api):
    """RFC 9110: a 405 names the allowed methods (found by schemathesis: the JSON refusal dropped them)."""
    response = await api.request("TRACE", "/v1/openapi.json")
    assert response.status == 405 and set(response.headers["Allow"].split(",")) >= {"GET"}
    assert (await response.json())["code"] == "method_not_allowed"
