"""The control API's one mapping from domain refusals to HTTP: statuses and JSON bodies,
through the real app (aiohttp's test client) in front of a fake manager."""
from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from swarmlet.api import errors
from swarmlet.api.limits import MIN_REQUEST_BODY_BYTES, Limits
from swarmlet.manager.caserver import JoinRefused
from swarmlet.manager.controlapi.server import build_app, http_status
from swarmlet.store import AlreadyExists, CommitTimeout, Conflict, InvalidTransaction, NoQuorum, NotFound, StoreError

JOIN_BODY = {"token": "t", "csr": "c", "advertise_addr": "10.0.0.2", "hostname": "w", "api_port": 2377,
             "raft_port": 2378}


@pytest.mark.parametrize("error, status", [
    (errors.NotFound("x"), 404), (NotFound("x"), 404),
    (errors.Conflict("x"), 409), (Conflict("x"), 409), (AlreadyExists("x"), 409), (errors.Ambiguous("x"), 409),
    (errors.Invalid("x"), 400), (InvalidTransaction("x"), 400), (errors.TooLarge("x"), 400),
    (errors.OverLimit("x", "limits.y"), 400), (errors.BodyTooLarge("x", "limits.request_body_bytes"), 413),
    (errors.Forbidden("x"), 403), (JoinRefused("x"), 403),
    (errors.Unavailable("x"), 503), (NoQuorum("x"), 503),
    (errors.Timeout("x"), 504), (CommitTimeout("x"), 504),
    (StoreError("x"), 500), (errors.SwarmletError("x"), 500),
])
def test_each_refusal_has_its_status(error, status):
    assert http_status(error) == status


class FakeCA:
    """What the anonymous routes call; ``join`` raises whatever the test sets."""

    ca_pem = b"CA"

    def __init__(self):
        self.refusal: Exception | None = None

    async def join(self, **fields) -> dict:
        if self.refusal is not None:
            raise self.refusal
        return {"joined": fields["hostname"]}


class FakeSettings:
    def __init__(self):
        self.current = Limits()

    def limits(self) -> Limits:
        return self.current


class FakeManager:
    def __init__(self):
        self.ca = FakeCA()
        self.settings = FakeSettings()


@pytest.fixture
async def api():
    manager = FakeManager()
    async with TestClient(TestServer(build_app(manager))) as client:
        client.manager = manager
        yield client


async def test_an_answer_is_json(api):
    response = await api.get("/v1/ca")
    assert response.status == 200 and await response.json() == {"ca_cert": "CA"}
    response = await api.post("/v1/join", json=JOIN_BODY)
    assert response.status == 200 and await response.json() == {"joined": "w"}


@pytest.mark.parametrize("refusal, status, code", [
    (JoinRefused("invalid join token"), 403, "forbidden"),
    (NoQuorum("no quorum: this manager reaches 1 of 3 managers"), 503, "no_quorum"),
    (errors.Unavailable("this manager has not yet received the cluster state"), 503, "unavailable"),
    (CommitTimeout("timed out, outcome unknown"), 504, "timeout"),
])
async def test_a_domain_refusal_becomes_its_status_with_message_and_code(api, refusal, status, code):
    api.manager.ca.refusal = refusal
    response = await api.post("/v1/join", json=JOIN_BODY)
    assert response.status == status
    assert await response.json() == {"error": str(refusal), "code": code}


@pytest.mark.parametrize("body, message", [
    (b"{not json", "request body is not valid JSON"),
    (b"[1, 2]", "request body must be a JSON object"),
    (b'{"token": 5}', "field 'token' must be str, found int"),
])
async def test_a_malformed_request_is_invalid(api, body, message):
    response = await api.post("/v1/join", data=body, headers={"Content-Type": "application/json"})
    answer = await response.json()
    assert response.status == 400 and answer["code"] == "invalid" and answer["error"].startswith(message)


async def test_a_caller_without_a_certificate_is_refused(api):
    response = await api.get("/v1/nodes")
    assert response.status == 401 and (await response.json())["code"] == "forbidden"


async def test_a_body_over_the_limit_is_refused_413_naming_the_setting(api):
    api.manager.settings.current = Limits(request_body_bytes=MIN_REQUEST_BODY_BYTES)
    padding = "x" * MIN_REQUEST_BODY_BYTES
    response = await api.post("/v1/join", json=dict(JOIN_BODY, hostname=padding))
    answer = await response.json()
    assert response.status == 413 and answer["code"] == "body_too_large"
    assert "is over the limit of 65536 bytes (cluster setting limits.request_body_bytes)" in answer["error"]
    # The same body is welcome once the limit is raised: the setting is read per request.
    api.manager.settings.current = Limits()
    assert (await api.post("/v1/join", json=dict(JOIN_BODY, hostname=padding))).status == 200


async def test_a_body_without_a_length_is_cut_off_at_the_limit(api):
    api.manager.settings.current = Limits(request_body_bytes=MIN_REQUEST_BODY_BYTES)

    async def endless():  # chunked: no Content-Length to refuse up front
        for _ in range(10_000):
            yield b" " * 4096

    response = await api.post("/v1/join", data=endless(), headers={"Content-Type": "application/json"})
    answer = await response.json()
    assert response.status == 413 and "(at least)" in answer["error"] and "limits.request_body_bytes" in answer["error"]
