"""schemathesis against a live one-manager cluster, through every operation of the API's
own OpenAPI document (fetched from /v1/openapi.json), with the admin certificate.

For every generated request: no 5xx, no hang (a request timeout fails the case), the
answer conforms to the document (status, content type, schema), and every refusal is
a JSON ``{"error": message, "code": kind}`` with a message. After the run the manager
is still alive and still answers. The number of examples per operation is bounded
(``EXAMPLES``) so the whole module stays within its minute.

Left out, and why (each is exercised by its own tests):

- ``POST /v1/nodes/{ref}/demote``, ``POST /v1/nodes/{ref}/update`` and
  ``DELETE /v1/nodes/{ref}``: a reference is also any unique ID prefix, so a generated
  "0" may name the one manager; draining, demoting or removing it would end the run
  (tests/cluster/test_nodes.py);
- ``POST /v1/cluster/settings``: new limits would change what every later case runs
  under (tests/manager/test_limits.py, tests/cluster/test_limits.py);
- ``GET /v1/services/{ref}/logs?follow=1`` and ``GET /v1/events?follow=1`` are meant never to end:
  ``follow`` is forced off.

Destructive for a real cluster but harmless here, so fuzzed: joining, renewal, leave and
the Raft membership routes (an admin certificate is refused before anything happens),
rotating join tokens (nothing joins this cluster later). Service operations get the
name of a real service half of the time, so their bodies are fuzzed against something
that exists; deletes keep their generated reference. The cluster's limits are lowered
first, so a generated scale or deploy cannot start thousands of processes.
"""
from __future__ import annotations

import json
import os
import ssl
import urllib.request
import zlib

import pytest

from ..conftest import running_in_ci

try:
    import schemathesis
except ImportError:
    if running_in_ci():  # CI installs the test extra: a missing fuzzer is a failure there, never a skip
        raise
    pytest.skip("schemathesis is not installed (pip install -e '.[test]')", allow_module_level=True)
from hypothesis import HealthCheck, settings  # noqa: E402  (hypothesis comes with schemathesis)
from schemathesis.checks import positive_data_acceptance  # noqa: E402

from swarmlet.cli.client import Client  # noqa: E402
from swarmlet.local.cluster import process_state  # noqa: E402

from .conftest import FAST_SETTINGS, TestCluster, _ranges, wait_until  # noqa: E402

pytestmark = pytest.mark.cluster

EXAMPLES = 10
# schemathesis's coverage phase makes every boundary case the schema defines, however many:
# it runs locally with SWARMLET_FUZZ_COVERAGE=1; CI runs the bounded phases.
PHASES = ["examples", "fuzzing"] + (["coverage"] if os.environ.get("SWARMLET_FUZZ_COVERAGE") == "1" else [])
REQUEST_TIMEOUT = 15.0
SERVICE = "fz_web"
LEFT_OUT = {("POST", "/v1/nodes/{ref}/demote"), ("POST", "/v1/nodes/{ref}/update"), ("DELETE", "/v1/nodes/{ref}"),
            ("POST", "/v1/cluster/settings")}
# Low enough that no generated request can load the machine; every case runs under them.
FUZZ_LIMITS = {"replicas_per_service": 3, "services_per_stack": 5, "tasks_per_cluster": 20}
STACK = {"services": {"web": {"image": "swarmlet-test/busybox:1", "command": ["sleep", "3600"],
                              "deploy": {"replicas": 1}}}}


@pytest.fixture(scope="module")
def fuzz_cluster(tmp_path_factory):
    cluster = TestCluster(tmp_path_factory.mktemp("fuzz") / "cluster", f"127.0.{next(_ranges) % 250}.2")
    try:
        cluster.up(1, 0, FAST_SETTINGS)
        admin = Client(cluster.env["SWARMLET_HOST"].split(","), cluster.local.admin_dir)
        admin.call("POST", "/v1/cluster/settings", {"limits": FUZZ_LIMITS})
        compose = tmp_path_factory.mktemp("fuzzstack") / "stack.yml"
        compose.write_text(json.dumps(STACK))
        cluster.cli("stack", "deploy", "--detach", "-c", str(compose), "fz")
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def fuzzed_service_id(fuzz_cluster) -> str:
    admin = Client(fuzz_cluster.env["SWARMLET_HOST"].split(","), fuzz_cluster.local.admin_dir)
    return next(s["id"] for s in admin.call("GET", "/v1/services") if s["name"] == SERVICE)


def tls_files(cluster: TestCluster) -> tuple[str, tuple[str, str]]:
    admin = cluster.local.admin_dir
    return str(admin / "swarm-root-ca.crt"), (str(admin / "swarm-node.crt"), str(admin / "swarm-node.key"))


@pytest.fixture(scope="module")
def api_schema(fuzz_cluster):
    base_url = "https://" + fuzz_cluster.env["SWARMLET_HOST"].split(",")[0]
    ca, _ = tls_files(fuzz_cluster)
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False  # peers are named by node ID, not host name (docs/security.md)
    with urllib.request.urlopen(f"{base_url}/v1/openapi.json", context=context, timeout=REQUEST_TIMEOUT) as answer:
        document = json.load(answer)
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=base_url)
    schema.config.generation.update(max_examples=EXAMPLES)
    schema.config.phases.update(phases=PHASES)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")
for _method, _path in sorted(LEFT_OUT):
    schema = schema.exclude(method=_method, path=_path)


def refusal_is_json_with_a_message(ctx, response, case):
    """Every refusal is the API's JSON error: {"error": non-empty message, "code": kind}."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"HTTP {response.status_code} answered with a body that is not JSON: "
                             f"{response.content[:200]!r}") from None
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip(), \
        f"HTTP {response.status_code} without an error message: {body!r}"
    assert isinstance(body.get("code"), str) and body["code"], f"HTTP {response.status_code} without a code: {body!r}"
    return None


def constrain(case, service_id: str) -> None:
    if (case.path.endswith("/logs") or case.path == "/v1/events") and case.query:
        case.query.pop("follow", None)
    if case.path.startswith("/v1/services/{ref}") and case.path_parameters:
        ref = str(case.path_parameters.get("ref", ""))
        if case.method.upper() != "DELETE":
            if zlib.crc32(json.dumps(case.body, sort_keys=True, default=str).encode()) % 2:
                case.path_parameters["ref"] = SERVICE
        elif ref == SERVICE or (ref and service_id.startswith(ref)):
            # A reference is also any unique ID prefix, and the service's ID is new each
            # run: a generated prefix of it removed the service the last test looks for
            # in one CI run of five. A reference no ID starts with is still fuzzed.
            case.path_parameters["ref"] = "~" + ref


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_under_fuzzing(case, fuzz_cluster, fuzzed_service_id):
    constrain(case, fuzzed_service_id)
    ca, cert = tls_files(fuzz_cluster)
    case.call_and_validate(verify=ca, cert=cert, timeout=REQUEST_TIMEOUT,
                           excluded_checks=[positive_data_acceptance],  # a valid shape may still name nothing
                           additional_checks=[refusal_is_json_with_a_message])


def test_the_manager_survived_the_fuzzing(fuzz_cluster):
    """Runs after the operations (same module, defined last): the node process is alive
    and the API still answers with the cluster it had."""
    manager = fuzz_cluster.local.find("manager-1")
    assert process_state(fuzz_cluster.local.pid_of(manager)) == "running", "the manager's process is gone"
    client = Client(fuzz_cluster.env["SWARMLET_HOST"].split(","), fuzz_cluster.local.admin_dir)
    status = wait_until(lambda: client.call("GET", "/v1/cluster/status"), 10, "the manager to answer after the fuzzing")
    assert status["leader"] and len(status["managers"]) == 1
    assert SERVICE in {s["name"] for s in client.call("GET", "/v1/services")}


class Answer:
    def __init__(self, status_code: int, content: bytes):
        self.status_code, self.content = status_code, content


@pytest.mark.parametrize("answer", [
    Answer(404, b"404: Not Found"), Answer(400, b'{"error": "", "code": "invalid"}'),
    Answer(403, b'{"code": "forbidden"}'), Answer(409, b'{"error": "taken"}'), Answer(400, b'["invalid"]'),
])
def test_the_refusal_check_flags_what_is_not_a_json_error(answer):
    with pytest.raises(AssertionError):
        refusal_is_json_with_a_message(None, answer, None)


def test_the_refusal_check_passes_a_json_error_and_any_success():
    refusal_is_json_with_a_message(None, Answer(404, b'{"error": "no service \'x\'", "code": "not_found"}'), None)
    refusal_is_json_with_a_message(None, Answer(200, b"not even json"), None)
