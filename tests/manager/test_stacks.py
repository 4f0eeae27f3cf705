"""A stack deploy as one transaction (``deploy_ops``, pure), and the stack API's
references and refusals against an in-memory store."""
from __future__ import annotations

import base64

import pytest

from swarmlet.api.views import VIEWS
from swarmlet.store.state import freeze
from swarmlet.api import errors, specs
from swarmlet.api.objects import STACK_NAMESPACE_LABEL
from swarmlet.manager.orchestrator.loop import ALL, touched_services
from swarmlet.manager.secrets import SecretBox
from swarmlet.manager.stacks import MAX_SECRET_SIZE, DeployError, StackApi
from swarmlet.manager.stacks import deploy_ops as unsealed_deploy_ops
from swarmlet.store import StoreEvent
from swarmlet.store.state import Change

NOTHING = {"service": [], "network": [], "secret": [], "config": []}
BOX = SecretBox("test cluster key")


def deploy_ops(*args, **kwargs):
    return unsealed_deploy_ops(*args, **kwargs, box=BOX)


def stack(**services) -> dict:
    return specs.StackSpec(
        services={name: specs.ServiceSpec(name=name, container=specs.ContainerSpec(
            image=image, secrets=[specs.FileRef("db", "/run/secrets/db")])) for name, image in services.items()},
        networks={"back": specs.NetworkSpec(name="back")},
        secrets={"db": specs.SecretSpec(name="db", file="/x/db.txt")}).to_dict()


def files(data: bytes = b"pw") -> dict:
    return {"secrets": {"db": base64.b64encode(data).decode()}}


def stored(ops: list[dict]) -> dict[str, list]:
    """The store's objects after ``ops`` (versions 1), as ``deploy_ops`` reads them: views."""
    existing = {kind: [] for kind in NOTHING}
    for op in ops:
        existing[op["kind"]].append(VIEWS[op["kind"]](freeze({"id": op["id"], "kind": op["kind"], "version": 1,
                                                               "spec": op["spec"]})))
    return existing


def test_a_first_deploy_creates_everything_scoped_and_labelled():
    ops = deploy_ops("app", stack(web="nginx"), files(), prune=False, existing=NOTHING)
    assert [(op["op"], op["kind"], op["spec"]["name"]) for op in ops] == [
        ("create", "secret", "app_db"), ("create", "network", "app_back"), ("create", "service", "app_web")]
    assert all(op["spec"]["labels"][STACK_NAMESPACE_LABEL] == "app" for op in ops)
    service = ops[-1]["spec"]
    assert service["container"]["secrets"][0]["source"] == "app_db" and service["networks"] == []


def test_deploying_again_touches_only_what_changed_and_prune_removes_the_rest():
    first = deploy_ops("app", stack(web="nginx", api="python"), files(), prune=False, existing=NOTHING)
    assert deploy_ops("app", stack(web="nginx", api="python"), files(), prune=True, existing=stored(first)) == []
    again = deploy_ops("app", stack(web="nginx:2"), files(), prune=True, existing=stored(first))
    api_id = next(o["id"] for o in first if o["spec"]["name"] == "app_api")
    assert [(op["op"], op["kind"], op["id"] if op["op"] == "delete" else op["spec"]["name"]) for op in again] == [
        ("update", "service", "app_web"), ("delete", "service", api_id)]


@pytest.mark.parametrize("name, spec, sent, error, complaint", [
    ("bad name!", stack(web="nginx"), files(), errors.Invalid, "invalid stack name"),
    ("app", stack(web="nginx"), {}, DeployError, "its file content was not sent"),
    ("app", stack(web="nginx"), {"secrets": {"db": "%%%"}}, DeployError, "not base64"),
    ("app", stack(web="nginx"), files(b"x" * (MAX_SECRET_SIZE + 1)), errors.TooLarge, "at most 500 KB"),
])
def test_a_stack_that_cannot_be_deployed_is_refused_whole(name, spec, sent, error, complaint):
    with pytest.raises(error, match=complaint):
        deploy_ops(name, spec, sent, prune=False, existing=NOTHING)


def test_a_missing_external_secret_and_changed_secret_content_are_refused():
    spec = stack(web="nginx")
    spec["secrets"]["db"] = dict(spec["secrets"]["db"], external=True)
    with pytest.raises(errors.Invalid, match="external secret 'db' not found: nothing was deployed"):
        deploy_ops("app", spec, files(), prune=False, existing=NOTHING)
    first = deploy_ops("app", stack(web="nginx"), files(b"one"), prune=False, existing=NOTHING)
    with pytest.raises(errors.Invalid, match="secrets are immutable"):
        deploy_ops("app", stack(web="nginx"), files(b"two"), prune=False, existing=stored(first))


async def test_the_stack_api_resolves_services_and_stacks_by_the_one_rule(store):
    api = StackApi(store, secret_box=BOX)
    await api.deploy("app", stack(web="nginx", worker="busybox"), files(), prune=False)
    web = api.service("app_web")
    assert api.service(web["id"][:8])["name"] == "app_web"
    with pytest.raises(errors.NotFound, match="no such service: app_we$"):
        api.resolve_service("app_we")  # names are not prefixed
    with pytest.raises(errors.NotFound, match="no such stack: ap$"):
        await api.remove_stack("ap")  # no prefixes for stack names
    assert (await api.remove_stack("app"))["removed"] == 4  # two services, the network, the secret
    assert store.raw_list("service") == [] and store.raw_list("secret") == []


async def test_a_stack_secret_is_sealed_and_stays_while_another_stack_mounts_it(store):
    api = StackApi(store, secret_box=BOX)
    await api.deploy("app", stack(web="nginx"), files(b"hunter2"), prune=False)
    (secret,) = store.list(VIEWS["secret"])
    assert "data" not in secret.spec and b"hunter2" not in bytes(secret.spec["sealed"])
    assert BOX.open(secret) == b"hunter2"
    guest = stack(web="nginx")
    guest["secrets"]["db"] = dict(guest["secrets"]["db"], external=True, cluster_name="app_db")
    await api.deploy("guest", guest, {}, prune=False)
    index = store.index
    with pytest.raises(errors.Invalid, match="secret app_db is used by service guest_web of another stack: remove "
                                             "those first; nothing was removed"):
        await api.remove_stack("app")
    assert store.index == index


async def test_scaling_refuses_what_cannot_scale(store):
    api = StackApi(store, secret_box=BOX)
    spec = stack(web="nginx")
    spec["services"]["web"]["mode"], spec["services"]["web"]["replicas"] = "global", None
    await api.deploy("app", spec, files(), prune=False)
    with pytest.raises(errors.Invalid, match="only replicated services scale"):
        await api.scale("app_web", 3)


def test_touched_services():
    task = Change("update", "task", "t1", {"spec": {"service_id": "s1"}})
    service = Change("delete", "service", "s2", {})
    node = Change("update", "node", "n1", {})
    assert touched_services(StoreEvent(1, [task, service])) == {"s1", "s2"}
    assert touched_services(StoreEvent(2, [task, node])) == {"s1", ALL}
    assert touched_services(StoreEvent(3, [], reset=True)) == {ALL}
