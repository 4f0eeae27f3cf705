"""Stack revisions (pure): every ``stack deploy`` that changes a stack is recorded, in the
same transaction, as a numbered revision: the stack's services and networks (their
stored specs), the names of its secrets and configs, who deployed it, and how it went.
``stack rollback`` turns every object of the stack back to a revision's, as ONE
transaction, and records that as a new revision (``rollback_of``).

Secrets and configs are immutable and never deleted by a deploy, so a revision keeps
their names, not their data: a rollback needs them still there (and says which is
missing otherwise), and removes the stack's ones the revision did not have once nothing
uses them. The last ``REVISION_HISTORY_LIMIT`` revisions of a stack are kept (as
Kubernetes keeps 10 ReplicaSets of a Deployment by default).
"""
from __future__ import annotations

from typing import Iterable, Mapping

from swarmlet.api.errors import Invalid, NotFound
from swarmlet.api.objects import STACK_NAMESPACE_LABEL, spec_digest
from swarmlet.api.traffic import rollback_update
from swarmlet.api.views import StackRevision, StoredObject
from swarmlet.node.config import new_id
from swarmlet.store.state import PREVIOUS_SPEC

REVISION_HISTORY_LIMIT = 10
OUTCOME_DEPLOYED = "deployed"  # written; the CLI's wait reports "converged" or "failed: …" after
# The stack's kinds a revision restores: specs for services and networks, names for the rest.
SPEC_KINDS = {"service": "services", "network": "networks"}
NAME_KINDS = {"secret": "secrets", "config": "configs"}


def revision_id(stack: str, number: int) -> str:
    return f"{stack}@{number}"


def _stack_of(spec: Mapping) -> str | None:
    return (spec.get("labels") or {}).get(STACK_NAMESPACE_LABEL)


def contents_after(stack: str, existing: Mapping[str, list[StoredObject]], ops: list[dict]) -> dict:
    """The stack's objects once ``ops`` are applied: ``{"services": {name: spec},
    "networks": {name: spec}, "secrets": [name], "configs": [name]}``."""
    objects = {(o.kind, o.id): o.raw["spec"] for kind in (*SPEC_KINDS, *NAME_KINDS) for o in existing.get(kind, [])}
    for op in ops:
        key = (op["kind"], op["id"])
        if op["kind"] not in SPEC_KINDS and op["kind"] not in NAME_KINDS:
            continue
        if op["op"] == "delete":
            objects.pop(key, None)
        elif "spec" in op:
            objects[key] = op["spec"]
    contents: dict = {plural: {} for plural in SPEC_KINDS.values()} | {plural: [] for plural in NAME_KINDS.values()}
    for (kind, _), spec in sorted(objects.items(), key=lambda item: (item[0][0], item[1]["name"])):
        if _stack_of(spec) != stack:
            continue
        if kind in SPEC_KINDS:
            contents[SPEC_KINDS[kind]][spec["name"]] = spec
        else:
            contents[NAME_KINDS[kind]].append(spec["name"])
    return contents


def of_stack(stack: str, revisions: Iterable[StackRevision]) -> list[StackRevision]:
    return sorted((r for r in revisions if r.stack == stack), key=lambda r: r.number)


def record_ops(stack: str, contents: dict, revisions: list[StackRevision], by: str,
               rollback_of: int | None = None) -> tuple[list[dict], int]:
    """The ops that record a new revision (and drop the oldest past the limit), and its number."""
    mine = of_stack(stack, revisions)
    number = (mine[-1].number if mine else 0) + 1
    ops = [{"op": "create", "kind": StackRevision.kind, "id": revision_id(stack, number),
            "spec": dict(contents, stack=stack, number=number, by=by, rollback_of=rollback_of),
            "status": {"outcome": OUTCOME_DEPLOYED}}]
    ops += [{"op": "delete", "kind": StackRevision.kind, "id": r.id, "version": r.version}
            for r in mine[:max(0, len(mine) - (REVISION_HISTORY_LIMIT - 1))]]
    return ops, number


def choose_target(stack: str, revisions: list[StackRevision], to: int | None) -> StackRevision:
    mine = of_stack(stack, revisions)
    if not mine:
        raise NotFound(f"stack {stack} has no revisions (it was never deployed, or removed)")
    numbers = ", ".join(str(r.number) for r in mine)
    if to is None:
        if len(mine) < 2:
            raise Invalid(f"stack {stack} has only revision {mine[0].number}: nothing to roll back to")
        return mine[-2]
    target = next((r for r in mine if r.number == to), None)
    if target is None:
        raise Invalid(f"stack {stack} has no revision {to} (it has {numbers})")
    if target is mine[-1]:
        raise Invalid(f"stack {stack} is at revision {to} already")
    return target


def rollback_ops(stack: str, target: StackRevision, existing: Mapping[str, list[StoredObject]], now: float) -> list[dict]:
    """Every service, network, secret and config of the stack back to ``target``'s, as
    one transaction (without the new revision's record). A service that changes is
    rolled back as ``service rollback`` does: its rollback_config, its previous spec kept."""
    wanted = target.spec
    ops: list[dict] = []
    by_name = {kind: {o.raw["spec"]["name"]: o for o in existing.get(kind, [])} for kind in (*SPEC_KINDS, *NAME_KINDS)}
    missing = [f"{kind} {name!r}" for kind, plural in NAME_KINDS.items() for name in wanted.get(plural, ())
               if name not in by_name[kind]]
    if missing:
        raise Invalid(f"stack {stack} cannot go back to revision {target.number}: " + ", ".join(missing)
                      + " no longer exist(s); nothing was changed")
    for name, spec in sorted((wanted.get("networks") or {}).items()):
        current = by_name["network"].get(name)
        if current is None:
            ops.append({"op": "create", "kind": "network", "id": name, "spec": spec})
        elif current.raw["spec"] != spec:
            ops.append({"op": "update", "kind": "network", "id": current.id, "version": current.version, "spec": spec})
    kept = set(wanted.get("services") or {})
    for name, spec in sorted((wanted.get("services") or {}).items()):
        current = by_name["service"].get(name)
        if current is None:
            ops.append({"op": "create", "kind": "service", "id": new_id(), "spec": spec, "status": {}})
        elif current.raw["spec"] != spec:
            update = rollback_update((current.raw.get("status") or {}).get("update"), spec_digest(spec), now,
                                     f"stack rollback to revision {target.number}")
            ops.append({"op": "update", "kind": "service", "id": current.id, "version": current.version,
                        "spec": spec, PREVIOUS_SPEC: current.raw["spec"],
                        "status": dict(current.raw.get("status") or {}, update=update)})
    ops += [{"op": "delete", "kind": "service", "id": o.id, "version": o.version}
            for name, o in sorted(by_name["service"].items()) if _stack_of(o.raw["spec"]) == stack and name not in kept]
    # Files the revision did not have go once no service (after this change) uses them.
    services_after = [spec for name, spec in (wanted.get("services") or {}).items()] + [
        o.raw["spec"] for o in existing.get("service", []) if _stack_of(o.raw["spec"]) != stack]
    for kind, plural in NAME_KINDS.items():
        used = {ref["source"] for spec in services_after for ref in spec["container"].get(plural) or ()}
        ops += [{"op": "delete", "kind": kind, "id": o.id, "version": o.version}
                for name, o in sorted(by_name[kind].items())
                if _stack_of(o.raw["spec"]) == stack and name not in wanted.get(plural, ()) and name not in used]
    networks_used = {n["name"] for spec in services_after for n in spec.get("networks") or ()}
    ops += [{"op": "delete", "kind": "network", "id": o.id, "version": o.version}
            for name, o in sorted(by_name["network"].items())
            if _stack_of(o.raw["spec"]) == stack and name not in (wanted.get("networks") or {})
            and name not in networks_used]
    return ops


def public(revision: StackRevision) -> dict:
    spec = revision.spec
    return {"stack": revision.stack, "number": revision.number, "created_at": revision.created_at,
            "by": spec.get("by"), "rollback_of": spec.get("rollback_of"),
            "outcome": revision.status.get("outcome"), "services": sorted(spec.get("services") or {}),
            "networks": sorted(spec.get("networks") or {}), "secrets": list(spec.get("secrets") or ()),
            "configs": list(spec.get("configs") or ())}
