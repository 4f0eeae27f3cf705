"""Safe changes through the stack API, against an in-memory store: `service update`'s
changes (applied and refused), the previous spec kept, `service rollback` and
`service promote`, and dry runs that change nothing at all."""
from __future__ import annotations

import base64

import msgpack
import pytest

from swarmlet.api import errors, specs
from swarmlet.api.objects import spec_digest
from swarmlet.api.views import Config, Service, StackRevision
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
    blue_green = apply_service_changes(spec, {"update_config": {"blue_green": True, "hold": 90}})["update_config"]
    assert (blue_green["blue_green"], blue_green["hold"]) == (True, 90.0)
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
    ({"update_config": {"blue_green": True, "canary": 1}}, "canary and blue_green cannot be used together"),
    ({"update_config": {"hold": -1}}, "update_config.hold: -1; expected 0 or more"),
    ({"update_config": {"blue_green": "yes"}}, "update_config.blue_green: 'yes' is not a valid value"),
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
    before = dump(store)
    assert (await api.update_service("app_web", {"image": "busybox:1"}))["changed"] is False
    assert dump(store) == before  # the same spec: nothing written, no previous spec made
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


# -- stack revisions ---------------------------------------------------------------------------------

def two_services(web_image="busybox:1", extra=False) -> dict:
    services = {"web": specs.ServiceSpec(name="web", container=specs.ContainerSpec(image=web_image)),
                "db": specs.ServiceSpec(name="db", container=specs.ContainerSpec(image="postgres"))}
    if extra:
        services["cache"] = specs.ServiceSpec(name="cache", container=specs.ContainerSpec(image="redis"))
    return specs.StackSpec(services=services, networks={"back": specs.NetworkSpec(name="back")}).to_dict()


def specs_by_name(store) -> dict:
    return {s.name: dict(s.raw_spec) for s in store.list(Service)}


async def test_every_deploy_is_a_revision_and_rollback_returns_the_whole_stack_in_one_change(store):
    api = StackApi(store)
    assert (await api.deploy("app", two_services(), {}, prune=False, by="admin x"))["revision"] == 1
    first = specs_by_name(store)
    assert (await api.deploy("app", two_services("busybox:2", extra=True), {}, prune=False))["revision"] == 2
    assert (await api.deploy("app", two_services("busybox:2", extra=True), {}, prune=False))["operations"] == 0
    assert [r["number"] for r in api.history("app")] == [1, 2]  # an unchanged deploy is no revision
    assert api.history("app")[0]["by"] == "admin x" and api.history("app")[0]["outcome"] == "deployed"
    commits = len(store.commits)
    answer = await api.rollback_stack("app", to=1, now=7.0)
    assert len(store.commits) == commits + 1  # one transaction
    assert answer == {"stack": "app", "revision": 3, "rollback_of": 1, "changed_services": ["app_cache", "app_web"],
                      "operations": 2}
    assert specs_by_name(store) == first  # cache (added in 2) is gone, web is back
    web_service = web(store)
    assert web_service.status["update"]["state"] == "rollback_started"
    assert web_service.status["update"]["message"] == "stack rollback to revision 1"
    history = api.history("app")
    assert [(r["number"], r["rollback_of"]) for r in history] == [(1, None), (2, None), (3, 1)]
    assert history[2]["services"] == ["app_db", "app_web"]
    await api.set_outcome("app", 3, "converged")
    assert api.history("app")[2]["outcome"] == "converged"
    # without --to: the one before the latest (2); then the stack is removed with its history
    await api.rollback_stack("app", to=None, now=8.0)
    assert set(specs_by_name(store)) == {"app_web", "app_db", "app_cache"}
    await api.remove_stack("app")
    assert not store.list(StackRevision)


@pytest.mark.parametrize("to, complaint", [(9, "stack app has no revision 9 (it has 1, 2)"),
                                           (2, "stack app is at revision 2 already")])
async def test_a_bad_rollback_target_is_refused_and_changes_nothing(store, to, complaint):
    api = StackApi(store)
    await api.deploy("app", two_services(), {}, prune=False)
    await api.deploy("app", two_services("busybox:2"), {}, prune=False)
    before = dump(store)
    with pytest.raises(errors.Invalid) as raised:
        await api.rollback_stack("app", to=to, now=1.0)
    assert complaint in str(raised.value) and dump(store) == before
    with pytest.raises(errors.NotFound, match="stack other has no revisions"):
        await api.rollback_stack("other", to=None, now=1.0)


async def test_a_rollback_needs_the_revisions_configs_and_drops_the_newer_ones(store):
    api = StackApi(store)
    await api.deploy("app", stack(), FILES, prune=False)
    newer = specs.StackSpec(services={"web": specs.ServiceSpec(name="web", container=specs.ContainerSpec(
        image="busybox:1", configs=[specs.FileRef("site2", "/site")]))},
        configs={"site2": specs.ConfigSpec(name="site2", content="y")}).to_dict()
    await api.deploy("app", newer, {"configs": {"site2": base64.b64encode(b"y").decode()}}, prune=True)
    await api.rollback_stack("app", to=1, now=1.0)
    assert {c.name for c in store.list(Config)} == {"app_site"}  # site2 only served revision 2
    site = store.get(Config, "app_site")
    await store.commit([{"op": "delete", "kind": "config", "id": site.id, "version": site.version}])
    before = dump(store)
    with pytest.raises(errors.Invalid, match="config 'app_site' no longer exist"):
        await api.rollback_stack("app", to=1, now=2.0)  # wait: 1 is not the latest (3 is)
    assert dump(store) == before


async def test_only_the_last_revisions_are_kept_and_a_dry_run_records_none(store):
    from swarmlet.manager.revisions import REVISION_HISTORY_LIMIT

    api = StackApi(store)
    for n in range(REVISION_HISTORY_LIMIT + 3):
        await api.deploy("app", two_services(f"busybox:{n}"), {}, prune=False)
    numbers = [r["number"] for r in api.history("app")]
    assert numbers == list(range(4, REVISION_HISTORY_LIMIT + 4))
    await api.deploy("app", two_services("busybox:new"), {}, prune=False, dry_run=True)
    assert [r["number"] for r in api.history("app")] == numbers
