"""Safe changes through the stack API, against an in-memory store: `service update`'s
changes (applied and refused), the previous spec kept, `service rollback` and
`service promote`, and dry runs that change nothing at all."""
from __future__ import annotations

import base64

import msgpack
import pytest

from swarmlet.api import errors, specs
from swarmlet.api.objects import spec_digest
from swarmlet.api.views import Service
from swarmlet.manager.changes import apply_service_changes, field_changes, plan
from swarmlet.manager.stacks import StackApi


def stack(image="busybox:1", replicas=2, env=None, **update) -> dict:
    return specs.StackSpec(
        services={"web": specs.ServiceSpec(name="web", replicas=replicas, update_config=specs.UpdateConfig(**update),
                                           container=specs.ContainerSpec(image=image, env=env or {})),
                  "db": specs.ServiceSpec(name="db", container=specs.ContainerSpec(image="postgres"))},
        configs={"site": specs.ConfigSpec(name="site", content="x")}).to_dict()


FILES = {"configs": {"site": base64.b64encode(b"x").decode()}}


def dump(store) -> bytes:
    """The whole store, byte for byte (what a snapshot holds)."""
    return msgpack.packb(store.state.snapshot(), use_bin_type=True, default=dict)


def web(store) -> Service:
    return next(s for s in store.list(Service) if s.name == "app_web")


async def test_service_changes_are_applied_like_docker_service_update():
    spec = specs.ServiceSpec(name="web", container=specs.ContainerSpec(image="a", env={"A": "1", "B": "2"})).to_dict()
    new = apply_service_changes(spec, {"image": "b", "env_add": {"C": "3"}, "env_rm": ["A"], "replicas": 4,
                                       "update_config": {"parallelism": 2, "failure_action": "rollback"},
                                       "rollback_config": {"monitor": 1}})
    assert new["container"]["image"] == "b" and new["container"]["env"] == {"B": "2", "C": "3"}
    assert new["replicas"] == 4 and new["update_config"]["parallelism"] == 2
    assert new["update_config"]["failure_action"] == "rollback" and new["rollback_config"]["monitor"] == 1.0
    forced = apply_service_changes(spec, {"force": True})
    assert spec_digest(forced) != spec_digest(apply_service_changes(spec, {}))  # every task is replaced


@pytest.mark.parametrize("changes, complaint", [
    ({"image": ""}, "image must be a non-empty string"),
    ({"replicas": -1}, "replicas: -1; expected 0 or more"),
    ({"imagee": "x"}, "unknown change 'imagee'"),
    ({"update_config": {"failure_action": "explode"}}, "update_config.failure_action: 'explode'"),
    ({"rollback_config": {"failure_action": "rollback"}}, "rollback_config.failure_action: 'rollback'"),
    ({"update_config": {"max_failure_ratio": 2}}, "max_failure_ratio: 2; expected a ratio from 0 to 1"),
    ({"update_config": {"paralelism": 2}}, "update_config: unknown field 'paralelism'"),
    ({"env_add": {"A": 1}}, "env_add must map names to string values"),
])
async def test_bad_changes_are_refused_naming_what_is_wrong_and_change_nothing(store, changes, complaint):
    api = StackApi(store)
    await api.deploy("app", stack(), FILES, prune=False)
    before = dump(store)
    with pytest.raises(errors.Invalid) as raised:
        await api.update_service("app_web", changes)
    assert complaint in str(raised.value)
    assert dump(store) == before


async def test_an_update_keeps_the_previous_spec_and_rollback_swaps_them(store):
    api = StackApi(store)
    await api.deploy("app", stack(), FILES, prune=False)
    first = dict(web(store).raw_spec)
    assert web(store).previous_spec is None
    with pytest.raises(errors.Invalid, match="has no previous spec to roll back to"):
        await api.rollback_service("app_web", now=1.0)
    answer = await api.update_service("app_web", {"image": "busybox:2"})
    assert answer["changed"] and answer["image"] == "busybox:2"
    assert dict(web(store).previous_spec) == first
    db_before = next(s for s in store.list(Service) if s.name == "app_db").version
    second = dict(web(store).raw_spec)
    await api.rollback_service("app_web", now=5.0)
    service = web(store)
    assert dict(service.raw_spec) == first and dict(service.previous_spec) == second  # swapped
    assert service.status["update"] == {"digest": spec_digest(first), "state": "rollback_started", "started_at": 5.0,
                                        "message": "manually requested rollback"}
    assert next(s for s in store.list(Service) if s.name == "app_db").version == db_before  # only that service
    # a stack redeploy keeps the previous spec too
    await api.deploy("app", stack(image="busybox:3"), FILES, prune=False)
    assert dict(web(store).previous_spec) == first


async def test_promote_needs_canaries(store):
    api = StackApi(store)
    await api.deploy("app", stack(), FILES, prune=False)
    with pytest.raises(errors.Invalid, match="has no canaries to promote"):
        await api.promote_service("app_web")
    await api.deploy("app", stack(image="busybox:2", canary=1), FILES, prune=False)
    service = web(store)
    status = {"update": {"digest": spec_digest(service.raw_spec), "state": "awaiting_promotion"}}
    await store.commit([{"op": "update", "kind": "service", "id": service.id, "version": service.version,
                         "status": status}])
    await api.promote_service("app_web")
    assert web(store).status["update"]["promoted"] is True and web(store).status["update"]["state"] == "updating"


async def test_a_dry_run_deploy_reports_exactly_the_changed_fields_and_changes_nothing(store):
    api = StackApi(store)
    await api.deploy("app", stack(), FILES, prune=False)
    before = dump(store)
    answer = await api.deploy("app", stack(image="busybox:2", replicas=3, env={"MODE": "fast"}, parallelism=2),
                              FILES, prune=True, dry_run=True)
    assert dump(store) == before  # byte for byte
    (entry,) = answer["plan"]
    assert (entry["kind"], entry["name"], entry["action"]) == ("service", "app_web", "update")
    assert entry["fields"] == [
        {"field": "container.env.MODE", "old": None, "new": "fast"},
        {"field": "container.image", "old": "busybox:1", "new": "busybox:2"},
        {"field": "replicas", "old": 2, "new": 3},
        {"field": "update_config.parallelism", "old": 1, "new": 2}]
    assert entry["tasks_replaced"] == [] and entry["batches"] == 0  # no task exists in this store
    answer = await api.deploy("app", specs.StackSpec(services={}).to_dict(), {}, prune=True, dry_run=True)
    assert {(e["name"], e["action"]) for e in answer["plan"]} == {("app_web", "remove"), ("app_db", "remove")}
    assert dump(store) == before
    assert (await api.update_service("app_web", {"image": "x"}, dry_run=True))["plan"][0]["fields"] == [
        {"field": "container.image", "old": "busybox:1", "new": "x"}]
    assert dump(store) == before


def test_the_plan_counts_replaced_tasks_and_batches():
    from swarmlet.api.views import Task
    from swarmlet.store.state import freeze

    old = specs.ServiceSpec(name="web", replicas=5, container=specs.ContainerSpec(image="a"),
                            update_config=specs.UpdateConfig(parallelism=2)).to_dict()
    new = dict(old, container=dict(old["container"], image="b"))
    service = Service(freeze({"id": "s1", "kind": "service", "version": 1, "spec": old}))
    tasks = [Task(freeze({"id": f"t{i}", "kind": "task", "spec": {"service_id": "s1", "desired_state": "running",
                                                                  "spec_digest": spec_digest(old)}}))
             for i in range(5)]
    (entry,) = plan([{"op": "update", "kind": "service", "id": "s1", "version": 1, "spec": new}],
                    {"service": [service]}, tasks)
    assert len(entry["tasks_replaced"]) == 5 and entry["batches"] == 3
    scaled = dict(old, replicas=7)
    (entry,) = plan([{"op": "update", "kind": "service", "id": "s1", "version": 1, "spec": scaled}],
                    {"service": [service]}, tasks)
    assert entry["tasks_replaced"] == [] and entry["fields"] == [{"field": "replicas", "old": 5, "new": 7}]
    assert field_changes({"a": [1, 2]}, {"a": [1, 3]}) == [{"field": "a", "old": [1, 2], "new": [1, 3]}]
