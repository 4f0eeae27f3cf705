"""Stacks and services through the control API.

``deploy_ops`` (pure) turns a loaded ``StackSpec`` (as a dict) plus the contents of its
secret and config files into ONE transaction over the stack's networks, secrets,
configs and services, as ``docker stack deploy`` names them: ``<stack>_<name>``, each
labelled ``com.docker.stack.namespace=<stack>``. Services whose spec did not change are
not touched; ``prune`` deletes the stack's services no longer in the file. An external
secret or config that does not exist refuses the whole deploy, naming it.

The cluster's limits (``swarmlet.api.limits``) are checked here, on what a deploy or a
scale would leave in the store, before anything is committed (``check_services``).
"""
from __future__ import annotations

import base64
import binascii
import re
import time
from collections import Counter
from typing import Callable, Mapping

from swarmlet.api import specs
from swarmlet.api.errors import Invalid, NotFound, TooLarge
from swarmlet.api.ipam import DATA_PLANE_OVERLAY, OVERLAY_DRIVER, AddressPool
from swarmlet.api.limits import Limits
from swarmlet.api.names import check_stack_names
from swarmlet.api.paging import PageRequest, page
from swarmlet.api.objects import (ACTIVE_DESIRED_STATES, CLUSTER_ID, MAX_OUTCOME_LENGTH, STACK_NAMESPACE_LABEL,
                                  ROLLBACK_STATES, DesiredState, NodeState, ServiceMode, TaskState, UpdateState,
                                  spec_digest)
from swarmlet.api.references import resolve, resolve_in
from swarmlet.api.traffic import in_traffic, rollback_update, switched
from swarmlet.api.views import Cluster, Config, Network, Node, Secret, Service, StackRevision, StoredObject, Task
from swarmlet.manager import changes, revisions
from swarmlet.manager.allocator import (NETWORK_CURSOR, AddressBook, NetworkCursor, allocate_network,
                                       assign_published_ports, ingress_network, ingress_ports)
from swarmlet.node.config import new_id
from swarmlet.store.state import PREVIOUS_SPEC
from swarmlet.manager.retry import retry_on_conflict
from swarmlet.manager.secrets import MAX_SECRET_SIZE, SecretBox
from swarmlet.manager.settings import ClusterSettings
from swarmlet.store import ClusterStore

MAX_CONFIG_SIZE = 1000 * 1024
FILE_KINDS = (("secrets", "secret", MAX_SECRET_SIZE), ("configs", "config", MAX_CONFIG_SIZE))


class DeployError(Invalid):
    """A stack that cannot be deployed as sent; nothing of it was."""


REPLICATED_MODES = (ServiceMode.REPLICATED, ServiceMode.REPLICATED_JOB)
# The kinds a stack is made of, and the order they are listed in.
STACK_KINDS: tuple[type[StoredObject], ...] = (Service, Network, Secret, Config)


def stack_of(obj: StoredObject) -> str | None:
    return stack_of_spec(obj.raw["spec"])


def stack_of_spec(spec: Mapping) -> str | None:
    return (spec.get("labels") or {}).get(STACK_NAMESPACE_LABEL)


def scoped_name(stack: str, name: str, entry: dict) -> str:
    """The cluster-wide name of a stack's network, secret or config."""
    if entry.get("cluster_name"):
        return entry["cluster_name"]
    return name if entry.get("external") else f"{stack}_{name}"


def service_spec_for(stack: str, service: dict, names: dict[str, dict[str, str]]) -> dict:
    """The stored spec of one Compose service: scoped name, namespace label, references
    to the cluster names of its secrets, configs, networks and volumes."""
    spec = specs.ServiceSpec.from_dict(service).to_dict()  # normalised: defaults filled in
    spec["name"] = f"{stack}_{spec['name']}"
    spec["labels"] = dict(spec["labels"], **{STACK_NAMESPACE_LABEL: stack})
    container = spec["container"]
    for kind in ("secrets", "configs"):
        container[kind] = [dict(ref, source=names[kind].get(ref["source"], ref["source"])) for ref in container[kind]]
    spec["networks"] = [dict(n, name=names["networks"].get(n["name"], n["name"])) for n in spec["networks"]]
    # Named volumes as docker stack deploy names them: <stack>_<name>, unless external or named.
    container["mounts"] = [dict(m, source=names["volumes"].get(m["source"], m["source"])) if m["type"] == "volume"
                           else m for m in container["mounts"]]
    return spec


def _decode(stack: str, kind: str, name: str, encoded, limit: int) -> bytes:
    if not isinstance(encoded, str):
        raise DeployError(f"{kind} {name!r} of stack {stack}: its file content was not sent")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise DeployError(f"{kind} {name!r}: the content is not base64") from None
    if len(data) > limit:
        raise TooLarge(f"{kind} {name!r} is {len(data)} bytes; at most {limit // 1024} KB")
    return data


def _stored_file(kind: str, name: str, data: bytes, labels: dict, box: SecretBox | None) -> dict:
    """The stored spec of a new secret (its value sealed) or config."""
    if kind != Secret.kind:
        return {"name": name, "data": data, "labels": labels}
    if box is None:
        raise RuntimeError("a secret to store, and no SecretBox to seal it with")
    return box.spec(name, data, labels)


def _stored_data(obj: StoredObject, box: SecretBox | None) -> bytes:
    if obj.kind != Secret.kind:
        return bytes(obj.spec["data"])
    if box is None:
        raise RuntimeError("a secret to compare, and no SecretBox to open it with")
    return box.open(obj)


def deploy_ops(stack: str, stack_spec: dict, files: dict, prune: bool,
               existing: dict[str, list[StoredObject]], box: SecretBox | None = None) -> list[dict]:
    """``existing``: the store's objects by kind ("service", "network", "secret", "config");
    ``box`` seals the secrets the stack creates (needed only if it has any)."""
    if not isinstance(stack, str):
        raise DeployError(f"invalid stack name {stack!r}")
    by_name = {kind: {o.name: o for o in objects} for kind, objects in existing.items()}
    names = {kind: {n: scoped_name(stack, n, e) for n, e in (stack_spec.get(kind) or {}).items()}
             for kind in ("networks", "secrets", "configs", "volumes")}
    check_stack_names(stack, (stack_spec.get("services") or {}), names)
    ops: list[dict] = []
    missing = []
    for plural, kind, limit in FILE_KINDS:
        for name, entry in sorted((stack_spec.get(plural) or {}).items()):
            cluster_name = names[plural][name]
            current = by_name[kind].get(cluster_name)
            if entry.get("external"):
                if current is None:
                    missing.append(f"external {kind} {cluster_name!r} not found")
                continue
            data = _decode(stack, kind, name, (files.get(plural) or {}).get(name), limit)
            if current is None:
                labels = dict(entry.get("labels") or {}, **{STACK_NAMESPACE_LABEL: stack})
                ops.append({"op": "create", "kind": kind, "id": cluster_name,
                            "spec": _stored_file(kind, cluster_name, data, labels, box)})
            elif _stored_data(current, box) != data:
                raise DeployError(f"{kind} {cluster_name!r} exists with other content; {kind}s are immutable: "
                                  "give the new content another name")
    for name, entry in sorted((stack_spec.get("networks") or {}).items()):
        if entry.get("external") and names["networks"][name] not in by_name["network"]:
            missing.append(f"external network {names['networks'][name]!r} not found (an external network is one "
                           "that another stack created, under that name)")
    if missing:
        raise DeployError("; ".join(missing) + ": nothing was deployed")
    for name, entry in sorted((stack_spec.get("networks") or {}).items()):
        if entry.get("external"):
            continue  # the cluster's network of that name (checked above); the stack does not own it
        cluster_name = names["networks"][name]
        spec = {"name": cluster_name, "driver": entry.get("driver", specs.DEFAULT_NETWORK_DRIVER),
                "driver_opts": entry.get("driver_opts") or {}, "attachable": bool(entry.get("attachable")),
                "internal": bool(entry.get("internal")), "ipam": list(entry.get("ipam") or []),
                "labels": dict(entry.get("labels") or {}, **{STACK_NAMESPACE_LABEL: stack})}
        current = by_name["network"].get(cluster_name)
        if current is None:
            ops.append({"op": "create", "kind": "network", "id": cluster_name, "spec": spec, "status": {}})
        elif current.spec != spec:
            for key in ("driver", "ipam"):
                if current.spec.get(key, spec[key] if key == "driver" else []) != spec[key]:
                    raise DeployError(f"network {cluster_name} exists with another {key}; a network's {key} "
                                      "cannot change while it exists (remove the stack, then deploy it again)")
            ops.append({"op": "update", "kind": "network", "id": current.id, "version": current.version,
                        "spec": spec})
    wanted = set()
    for name, service in sorted((stack_spec.get("services") or {}).items()):
        spec = service_spec_for(stack, service, names)
        wanted.add(spec["name"])
        current = by_name["service"].get(spec["name"])
        if current is None:
            ops.append({"op": "create", "kind": "service", "id": new_id(), "spec": spec, "status": {}})
        elif current.raw_spec != spec:
            ops.append({"op": "update", "kind": "service", "id": current.id, "version": current.version,
                        "spec": spec, PREVIOUS_SPEC: current.raw_spec})
    if prune:
        ops += [{"op": "delete", "kind": "service", "id": s.id, "version": s.version}
                for s in existing["service"] if stack_of(s) == stack and s.name not in wanted]
    return ops


# -- network allocation -----------------------------------------------------------------------------------

def allocate_deploy(ops: list[dict], existing: dict[str, list[StoredObject]], tasks: list[Task],
                    nodes: list[Node], pool: AddressPool, cluster: Cluster | None = None) -> list[dict]:
    """``ops`` (from ``deploy_ops``) with the deploy's network allocation in the same
    transaction (pure, manager/allocator.py): a subnet and VNI for each new overlay
    network, the services' ingress ports published (a left-out port picked from the
    dynamic range, a conflict refused) and their VIPs, each network that gains or loses
    a VIP written with the version read. An ingress port on a cluster whose nodes do not
    all run the overlay data plane is refused, naming them. VNIs and pool subnets are
    taken serially from the ``cluster`` object's cursor (``NetworkCursor``), written back
    with its version when it moved (which also keeps two deploys from taking one VNI)."""
    networks = {n.id: n for n in existing[Network.kind]}
    taken = [(n.name, n.subnet) for n in networks.values() if n.subnet]
    vnis = [n.vni for n in networks.values() if n.vni]
    ops = [dict(op) for op in ops]
    network_ops = {op["id"]: op for op in ops if op["kind"] == Network.kind}
    cursor = NetworkCursor.from_status(cluster.status if cluster is not None else None)
    cursor_before = cursor
    for op in network_ops.values():
        if op["op"] == "create" and op["spec"].get("driver", specs.DEFAULT_NETWORK_DRIVER) == OVERLAY_DRIVER:
            op["status"], cursor = allocate_network(op["spec"]["name"], op["spec"], taken, vnis, pool, cursor)
            taken.append((op["spec"]["name"], op["status"]["subnet"]))
            vnis.append(op["status"]["vni"])
        if op["op"] != "delete":
            current = networks.get(op["id"])
            networks[op["id"]] = Network({"id": op["id"], "version": current.version if current else 0,
                                          "spec": op["spec"], "status": op.get("status", current and current.status)})

    before = {s.id: s.raw_spec for s in existing[Service.kind]}
    changed = {op["id"]: op["spec"] for op in ops if op["kind"] == Service.kind and op["op"] != "delete"}
    after = services_after(before, ops)
    published = assign_published_ports(changed, {i: spec for i, spec in after.items() if i not in changed}, before)
    for op in ops:
        if op["id"] in published and op["kind"] == Service.kind:
            op["spec"] = published[op["id"]]
    # A redeploy that only left out a port the cluster had picked changes nothing.
    ops = [op for op in ops if not (op["kind"] == Service.kind and op["op"] == "update"
                                    and op["spec"] == before.get(op["id"]))]
    written = {op["id"]: op["spec"] for op in ops if op["kind"] == Service.kind and op["op"] != "delete"}
    check_data_plane_for(written, nodes)
    check_mesh_ports(written, {n.name: n for n in networks.values() if n.is_overlay and n.subnet})

    book = AddressBook.build(networks.values(), tasks, services_after(before, ops), (n.id for n in nodes))
    for op in ops:
        if op["kind"] == Service.kind and op["op"] != "delete":
            book.set_vips(op["id"], op["spec"])
    for current in book.written():
        network_id, status = current.id, book.status(current)
        if network_id in network_ops:
            network_ops[network_id]["status"] = status
        else:
            ops.append({"op": "update", "kind": Network.kind, "id": network_id, "version": current.version,
                        "status": status})
    if cluster is not None and cursor != cursor_before:
        ops.append({"op": "update", "kind": Cluster.kind, "id": cluster.id, "version": cluster.version,
                    "status": dict(cluster.status, **{NETWORK_CURSOR: cursor.to_dict()})})
    return ops


MESH_PROTOCOLS = ("tcp", "udp")  # what the routing mesh forwards (nftables DNAT)


def check_mesh_ports(services: Mapping[str, Mapping], overlays: Mapping[str, Network]) -> None:
    """An ingress port needs a protocol the mesh forwards and an overlay network to reach
    the service's tasks on."""
    for spec in sorted(services.values(), key=lambda spec: spec["name"]):
        for port in ingress_ports(spec):
            if port["protocol"] not in MESH_PROTOCOLS:
                raise DeployError(f"service {spec['name']}: port {port['published']}/{port['protocol']}: the routing "
                                  f"mesh forwards {' and '.join(MESH_PROTOCOLS)} only; publish it with mode: host")
            if ingress_network(spec, overlays) is None:
                raise DeployError(f"service {spec['name']}: port {port['published']}/{port['protocol']} is published "
                                  "in ingress mode, but the service is on no overlay network for the routing mesh "
                                  "to reach its tasks on")


def check_data_plane_for(services: Mapping[str, Mapping], nodes: list[Node]) -> None:
    """Refuse ingress-published ports unless every node runs the overlay data plane: the
    routing mesh is what publishes them, and a port silently not published is worse than
    a refusal."""
    without = sorted(n.name or n.id for n in nodes if n.data_plane != DATA_PLANE_OVERLAY)
    if not without:
        return
    for spec in sorted(services.values(), key=lambda spec: spec["name"]):
        ports = ingress_ports(spec)
        if ports:
            port = ports[0]
            raise DeployError(
                f"service {spec['name']} publishes port {port['published']}/{port['protocol']} in ingress mode, "
                f"which needs the routing mesh, but node(s) {', '.join(without)} do not run the overlay data plane "
                "(start nodes with --data-plane overlay, as `swarmlet local up --isolated` does), or publish it "
                "with mode: host; nothing was deployed")


# -- limits --------------------------------------------------------------------------------------------

Specs = Mapping[str, Mapping]  # service ID -> stored spec


def replicas_of(spec: Mapping | None) -> int:
    replicas = (spec or {}).get("replicas") or 0
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise Invalid(f"service {spec['name']}: replicas must be an integer, not {replicas!r}")
    return replicas


def desired_tasks(specs: Specs, nodes: int) -> int:
    """What ``limits.tasks_per_cluster`` counts: the replicas of every replicated service
    and one task per node for every global one (history is not counted: at most
    ``TASK_HISTORY_LIMIT`` per slot)."""
    return sum(replicas_of(spec) if spec["mode"] in REPLICATED_MODES else nodes for spec in specs.values())


def services_after(services: Specs, ops: list[dict]) -> dict[str, Mapping]:
    """The services' specs once ``ops`` are applied."""
    after = dict(services)
    for op in ops:
        if op["kind"] == Service.kind:
            if op["op"] == "delete":
                after.pop(op["id"], None)
            else:
                after[op["id"]] = op["spec"]
    return after


def check_stack_size(limits: Limits, stack: str, services: int, current: int) -> None:
    limits.check("services_per_stack", f"stack {stack}: services", services, current)


def check_services(limits: Limits, before: Specs, after: Specs, nodes: int) -> None:
    """Refuse (``OverLimit``, naming the limit) a change of the cluster's services from
    ``before`` to ``after`` that grows anything past a limit. What is already over a
    limit lowered since may stay so or shrink."""
    changed = {sid: spec for sid, spec in after.items() if spec is not before.get(sid)}
    stacks_before = Counter(stack_of_spec(spec) for spec in before.values())
    stacks_after = Counter(stack_of_spec(spec) for spec in after.values())
    for stack in sorted({stack_of_spec(spec) for spec in changed.values()} - {None}):
        check_stack_size(limits, stack, stacks_after[stack], stacks_before[stack])
    for service_id, spec in sorted(changed.items()):
        if spec["mode"] in REPLICATED_MODES:
            limits.check("replicas_per_service", f"service {spec['name']}: replicas", replicas_of(spec),
                         replicas_of(before.get(service_id)))
    limits.check("tasks_per_cluster", "desired tasks", desired_tasks(after, nodes), desired_tasks(before, nodes))


# -- views ---------------------------------------------------------------------------------------------

def task_public(task: Task, traffic: bool | None = None) -> dict:
    """``traffic``: whether the task takes its service's traffic (``api.traffic.in_traffic``)."""
    spec, status = task.spec, task.status
    return {"id": task.id, "service_id": spec.service_id, "service_name": spec.service_name,
            "stack": spec.stack, "slot": spec.slot, "node_id": spec.node_id,
            "desired_state": spec.desired_state, "state": task.raw["status"].get("state"), "message": status.message,
            "err": status.err, "exit_code": status.exit_code, "timestamp": status.timestamp,
            "spec_digest": spec.spec_digest, "image": spec.raw["container"]["image"], "created_at": task.created_at,
            "network_addresses": dict(spec.network_addresses), "in_traffic": traffic}


def service_public(service: Service, tasks: list[Task], networks: list[Network] = ()) -> dict:
    spec = service.raw_spec
    # Swarm's Endpoint.VirtualIPs: the service's address on each network (allocator.py).
    virtual_ips = [{"network": n.id, "addr": n.vips[service.id], "subnet": n.subnet}
                   for n in sorted(networks, key=lambda n: n.id) if service.id in n.vips]
    mine = [t for t in tasks if t.spec.service_id == service.id]
    running = sum(1 for t in mine if t.spec.desired_state == DesiredState.RUNNING
                  and t.status.state == TaskState.RUNNING)
    desired = spec.get("replicas") if spec["mode"] in REPLICATED_MODES else sum(
        1 for t in mine if t.spec.desired_state in ACTIVE_DESIRED_STATES)
    return {"id": service.id, "name": spec["name"], "stack": stack_of(service), "mode": spec["mode"],
            "replicas": desired, "running": running, "image": spec["container"]["image"],
            "version": service.version, "created_at": service.created_at, "updated_at": service.updated_at,
            "spec": spec, "spec_digest": spec_digest(spec), "previous_spec": service.previous_spec,
            "status": service.status, "virtual_ips": virtual_ips}


class StackApi:
    def __init__(self, store: ClusterStore, limits: Callable[[], Limits] | None = None,
                 secret_box: SecretBox | None = None):
        self.store = store
        self._limits = limits or ClusterSettings(store).limits
        self._secret_box = secret_box  # seals the secrets a deploy creates

    def _check(self, limits: Limits, before: Specs, after: Specs) -> None:
        check_services(limits, before, after, nodes=len(self.store.list(Node)))

    def _existing(self) -> dict[str, list[StoredObject]]:
        return {kind.kind: self.store.list(kind) for kind in STACK_KINDS}

    async def deploy(self, stack: str, stack_spec: dict, files: dict, prune: bool, dry_run: bool = False,
                     by: str = "") -> dict:
        """``dry_run``: every check, nothing committed; the answer's ``plan`` says what
        would change (``swarmlet.manager.changes.plan``). A deploy that changes anything
        is recorded as the stack's next revision, in the same transaction (``by``: who)."""

        def decide() -> tuple[list[dict], list[dict], dict, list[str]]:
            """(the stack's ops, the same with its network allocation, what existed, the
            changed services), from a fresh read."""
            existing = self._existing()
            limits = self._limits()
            # The cheap check first: a stack of a million services is refused before its specs are built.
            check_stack_size(limits, stack, len(stack_spec.get("services") or {}),
                             sum(1 for s in existing[Service.kind] if stack_of(s) == stack))
            ops = deploy_ops(stack, stack_spec, files, prune, existing, self._secret_box)
            cluster = self.store.get(Cluster, CLUSTER_ID)
            allocated = (allocate_deploy(ops, existing, self.store.list(Task), self.store.list(Node),
                                         cluster.address_pool if cluster is not None else AddressPool(), cluster)
                         if ops else ops)
            limits.check("objects_per_request", f"stack {stack}: objects in one transaction", len(allocated))
            before = {s.id: s.raw_spec for s in existing[Service.kind]}
            self._check(limits, before, services_after(before, allocated))
            names = {s.id: s.name for s in existing[Service.kind]}
            changed = sorted(op["spec"]["name"] if "spec" in op else names.get(op["id"], op["id"])
                             for op in ops if op["kind"] == "service")
            return ops, allocated, existing, changed

        if dry_run:  # the plan shows what the file changes; the allocation it implies is checked, not shown
            ops, _, existing, changed = decide()
            return {"stack": stack, "dry_run": True, "changed_services": changed, "operations": len(ops),
                    "plan": changes.plan(ops, existing, self.store.list(Task))}
        made: dict = {}

        def make_ops() -> list[dict]:
            """Decided again from a fresh read when another write raced this one (the
            scheduler writes the networks whenever it places tasks on them)."""
            ops, allocated, existing, changed = decide()
            made.update(changed=changed, operations=len(allocated), revision=None)
            if not allocated:
                return []
            record, number = revisions.record_ops(stack, revisions.contents_after(stack, existing, allocated),
                                                  self.store.list(StackRevision), by)
            made["revision"] = number
            return allocated + record

        result = await retry_on_conflict(self.store, make_ops)
        if not made["operations"]:
            return {"stack": stack, "changed_services": [], "operations": 0, "index": self.store.index,
                    "revision": self._latest_revision(stack)}
        return {"stack": stack, "changed_services": made["changed"], "operations": made["operations"],
                "index": (result or {}).get("index"), "revision": made["revision"]}

    def _latest_revision(self, stack: str) -> int | None:
        mine = revisions.of_stack(stack, self.store.list(StackRevision))
        return mine[-1].number if mine else None

    def history(self, stack: str) -> list[dict]:
        mine = revisions.of_stack(stack, self.store.list(StackRevision))
        if not mine:
            raise NotFound(f"stack {stack} has no revisions (it was never deployed, or removed)")
        return [revisions.public(r) for r in mine]

    async def rollback_stack(self, stack: str, to: int | None, now: float, by: str = "") -> dict:
        """Every service, network, secret and config of the stack back to revision ``to``
        (the one before the latest when None), as ONE transaction, recorded as a new revision."""
        made: dict = {}

        def make_ops() -> list[dict]:
            known = self.store.list(StackRevision)
            target = revisions.choose_target(stack, known, to)
            existing = self._existing()
            ops = revisions.rollback_ops(stack, target, existing, now)
            before = {s.id: s.raw_spec for s in existing[Service.kind]}
            self._check(self._limits(), before, services_after(before, ops))
            record, number = revisions.record_ops(stack, dict(target.spec), known, by, rollback_of=target.number)
            names = {s.id: s.name for s in existing[Service.kind]}
            made.update(revision=number, rollback_of=target.number, operations=len(ops), changed_services=sorted(
                op["spec"]["name"] if "spec" in op else names.get(op["id"], op["id"])
                for op in ops if op["kind"] == "service"))
            return ops + record
        await retry_on_conflict(self.store, make_ops)  # services' statuses change meanwhile
        return {"stack": stack, **made}

    async def set_outcome(self, stack: str, number: int, outcome: str) -> dict:
        """What the deploy's wait found (the CLI reports it): converged, failed: why, …"""
        if not outcome or len(outcome) > MAX_OUTCOME_LENGTH:
            raise Invalid(f"outcome must be a non-empty text of at most {MAX_OUTCOME_LENGTH} characters")
        key = revisions.revision_id(stack, number)

        def make_ops() -> list[dict]:
            revision = self.store.get(StackRevision, key)
            if revision is None:
                raise NotFound(f"stack {stack} has no revision {number}")
            return [{"op": "update", "kind": StackRevision.kind, "id": revision.id, "version": revision.version,
                     "status": dict(revision.status, outcome=outcome)}]
        await retry_on_conflict(self.store, make_ops)
        return revisions.public(self.store.get(StackRevision, key))

    def stacks(self) -> list[dict]:
        counts: dict[str, int] = {}
        for service in self.store.list(Service):
            name = stack_of(service)
            if name:
                counts[name] = counts.get(name, 0) + 1
        return [{"name": name, "services": count} for name, count in sorted(counts.items())]

    def services(self, stack: str | None = None, paged: PageRequest | None = None) -> list[dict] | dict:
        """The services by name, or one page of them in ID order (api/paging.py)."""
        services = [s for s in self.store.list(Service) if stack is None or stack_of(s) == stack]
        networks = self.store.list(Network)

        def public(service: Service) -> dict:
            return service_public(service, self.store.select(Task, service_id=service.id), networks)
        if paged is not None:
            return page(services, paged, lambda s: s.id, public)
        return [public(s) for s in sorted(services, key=lambda s: s.name)]

    def resolve_service(self, ref: str) -> Service:
        return resolve_in(self.store, Service, "service", ref)

    def service(self, ref: str) -> dict:
        service = self.resolve_service(ref)
        return service_public(service, self.store.select(Task, service_id=service.id), self.store.list(Network))

    def tasks(self, service_ref: str | None = None, stack: str | None = None,
              paged: PageRequest | None = None) -> list[dict] | dict:
        """The tasks by service, slot and age, or one page of them in ID order (api/paging.py)."""
        service_id = self.resolve_service(service_ref).id if service_ref else None
        candidates = self.store.list(Task) if service_id is None else self.store.select(Task, service_id=service_id)
        tasks = (t for t in candidates if stack is None or t.spec.stack == stack)
        updates = {s.id: s.status.get("update") for s in self.store.list(Service)}
        live = {n.id for n in self.store.list(Node) if n.status.state != NodeState.DOWN}

        def traffic(task: Task) -> bool:
            return in_traffic(task.raw["spec"], task.raw.get("status") or {}, updates.get(task.spec.service_id),
                              node_live=task.spec.node_id in live)
        if paged is not None:
            return page(tasks, paged, lambda t: t.id, lambda t: task_public(t, traffic(t)))
        return [task_public(t, traffic(t)) for t in sorted(tasks, key=lambda t: (t.spec.service_name, t.spec.slot or 0,
                                                                      t.created_at))]

    async def scale(self, ref: str, replicas: int) -> dict:
        service = self.resolve_service(ref)
        mode = service.raw_spec["mode"]
        if mode not in REPLICATED_MODES:
            raise Invalid(f"service {service.name} is {mode}: only replicated services scale")
        if replicas < 0:
            raise Invalid("replicas must be 0 or more")
        before = {s.id: s.raw_spec for s in self.store.list(Service)}
        self._check(self._limits(), before, dict(before, **{service.id: dict(service.raw_spec, replicas=replicas)}))
        await self.store.commit([{"op": "update", "kind": "service", "id": service.id, "version": service.version,
                                  "spec": dict(service.raw_spec, replicas=replicas)}])
        return self.service(service.id)

    async def update_service(self, ref: str, service_changes: dict, dry_run: bool = False) -> dict:
        """``docker service update``: the changes (``changes.apply_service_changes``)
        become the spec, the current spec the previous one; ``dry_run``: the plan only.
        The orchestrator writes the service's status meanwhile: a write that raced it is
        made again from a fresh read (``retry_on_conflict``)."""
        changed: list[bool] = []

        def make_ops() -> list[dict]:
            service = self.resolve_service(ref)
            spec = changes.apply_service_changes(service.raw_spec, service_changes)
            if spec == dict(service.raw_spec):
                return []
            changes.check_file_sources(spec, {kind: {o.name for o in self.store.list(view)}
                                              for kind, view in (("secrets", Secret), ("configs", Config))})
            before = {s.id: s.raw_spec for s in self.store.list(Service)}
            self._check(self._limits(), before, dict(before, **{service.id: spec}))
            return [{"op": "update", "kind": "service", "id": service.id, "version": service.version, "spec": spec,
                     PREVIOUS_SPEC: service.raw_spec}]
        if dry_run:
            service = self.resolve_service(ref)
            return {"service": service.name, "dry_run": True,
                    "plan": changes.plan(make_ops(), {Service.kind: [service]}, self.store.list(Task))}
        changed.append(await retry_on_conflict(self.store, make_ops) is not None)
        return dict(self.service(ref), changed=changed[0])

    async def rollback_service(self, ref: str, now: float) -> dict:
        """``docker service rollback``: the previous spec and the current one swap, and
        the orchestrator replaces the tasks per the rollback_config (SwarmKit's rule)."""
        def make_ops() -> list[dict]:
            service = self.resolve_service(ref)
            previous = service.previous_spec
            if not previous:
                raise Invalid(f"service {service.name} has no previous spec to roll back to (it was never updated)")
            update = rollback_update(service.status.get("update"), spec_digest(previous), now,
                                     "manually requested rollback")
            return [{"op": "update", "kind": "service", "id": service.id, "version": service.version,
                     "spec": previous, PREVIOUS_SPEC: service.raw_spec, "status": dict(service.status, update=update)}]
        await retry_on_conflict(self.store, make_ops)
        return self.service(ref)

    async def promote_service(self, ref: str, now: float | None = None) -> dict:
        """Let an update held on its canaries go on, or switch a blue-green update's traffic
        to its new set (``auto_promote`` does either by itself)."""
        now = time.time() if now is None else now

        def make_ops() -> list[dict]:
            service = self.resolve_service(ref)
            update = dict(service.status.get("update") or {})
            config = service.spec.update_config
            current = update.get("digest") == spec_digest(service.raw_spec)
            if current and update.get("blue_green") and update.get("state") not in ROLLBACK_STATES:
                if update.get("promoted"):
                    return []
                if update.get("state") != UpdateState.AWAITING_PROMOTION:
                    raise Invalid(f"service {service.name}: the new set of its blue-green update is not ready to "
                                  f"take traffic yet (update state {update.get('state')}: "
                                  f"{update.get('message', '')}); nothing was changed")
                update = switched(update, config.hold, now)
                return [{"op": "update", "kind": "service", "id": service.id, "version": service.version,
                         "status": dict(service.status, update=update)}]
            canary = config.canary
            if (not canary or not current
                    or update.get("state") not in (UpdateState.UPDATING, UpdateState.AWAITING_PROMOTION)):
                raise Invalid(f"service {service.name} has no canaries to promote (update state "
                              f"{update.get('state') or 'none'}, x-canary {canary})")
            if update.get("promoted"):
                return []
            update.update(promoted=True, state=UpdateState.UPDATING, message="canaries promoted")
            return [{"op": "update", "kind": "service", "id": service.id, "version": service.version,
                     "status": dict(service.status, update=update)}]
        await retry_on_conflict(self.store, make_ops)
        return self.service(ref)

    async def remove_service(self, ref: str) -> None:
        service = self.resolve_service(ref)
        await self.store.commit([{"op": "delete", "kind": "service", "id": service.id, "version": service.version}])

    async def remove_stack(self, stack: str) -> dict:
        objects = [o for objects in self._existing().values() for o in objects]
        # A stack is the objects labelled with its name: it has no ID (so no prefix) of its own.
        stack = resolve("stack", stack, {stack_of(o) for o in objects} - {None}, name=str, id_of=None)
        ops = [{"op": "delete", "kind": o.kind, "id": o.id, "version": o.version}
               for o in objects if stack_of(o) == stack]
        networks = {o.name for o in objects if o.kind == Network.kind and stack_of(o) == stack}
        files = {(o.kind, o.name) for o in objects if o.kind in (Secret.kind, Config.kind) and stack_of(o) == stack}
        others = [s for s in objects if s.kind == Service.kind and stack_of(s) != stack]
        users = sorted({(f"network {n['name']}", s.name) for s in others for n in s.raw_spec.get("networks") or []
                        if n["name"] in networks} |
                       {(f"{kind} {ref['source']}", s.name) for s in others for kind in (Secret.kind, Config.kind)
                        for ref in s.raw_spec["container"].get(f"{kind}s") or [] if (kind, ref["source"]) in files})
        if users:  # as Swarm does: what another stack joined or mounts as external stays
            raise Invalid("; ".join(f"{what} is used by service {s} of another stack" for what, s in users)
                          + ": remove those first; nothing was removed")
        removed = len(ops)
        ops += [{"op": "delete", "kind": r.kind, "id": r.id, "version": r.version}
                for r in revisions.of_stack(stack, self.store.list(StackRevision))]  # its history goes with it
        await self.store.commit(ops)
        return {"stack": stack, "removed": removed}
