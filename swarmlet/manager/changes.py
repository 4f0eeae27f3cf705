"""Changes to services, before they are made (pure).

``apply_service_changes(spec, changes)`` is ``docker service update``'s flags applied to
a stored service spec: the new spec, validated, or ``Invalid`` naming the flag.

``plan(ops, existing, tasks)`` is what a dry run prints: for the transaction a deploy
(or an update) would commit, each object created, removed or updated, field by field
(old → new), and for a service which of its tasks would be replaced, in how many
batches of its update_config. It reads nothing but its arguments.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from swarmlet.api import specs
from swarmlet.api.errors import Invalid
from swarmlet.api.objects import ACTIVE_DESIRED_STATES, spec_digest
from swarmlet.api.views import StoredObject, Task

# The flags of `swarmlet service update`, by the key the API takes them under: where
# each goes in the spec (update_config/rollback_config ones) or a rule of its own.
_CONFIG_FIELDS = {
    "parallelism": int, "delay": (int, float), "failure_action": str, "monitor": (int, float),
    "max_failure_ratio": (int, float), "order": str,
}
_EXTENSION_FIELDS = {"canary": int, "auto_promote": bool, "blue_green": bool, "hold": (int, float)}
UPDATE_CHANGE_KEYS = ("image", "env_add", "env_rm", "replicas", "force", "update_config", "rollback_config",
                      "secret_add", "secret_rm")
_FILE_REF_FIELDS = {"source": str, "target": str, "uid": str, "gid": str, "mode": int}


def _secret_refs(current: list, add: Any, remove: Any) -> list[dict]:
    """``--secret-rm NAME`` (by source) first, then ``--secret-add`` ({source, target,
    uid, gid, mode}; the target defaults to the source, under /run/secrets)."""
    if not isinstance(remove, list) or not all(isinstance(n, str) for n in remove):
        raise Invalid("secret_rm must be a list of secret names")
    if not isinstance(add, list) or not all(isinstance(r, dict) for r in add):
        raise Invalid("secret_add must be a list of {source, target, uid, gid, mode} objects")
    absent = sorted(set(remove) - {ref["source"] for ref in current})
    if absent:
        raise Invalid(f"secret_rm: the service does not use the secret(s) {', '.join(absent)}")
    refs = [dict(ref) for ref in current if ref["source"] not in remove]
    for entry in add:
        for key, value in entry.items():
            kind = _FILE_REF_FIELDS.get(key)
            if kind is None:
                raise Invalid(f"secret_add: unknown field {key!r}; expected one of {', '.join(_FILE_REF_FIELDS)}")
            if isinstance(value, bool) or not isinstance(value, kind):
                raise Invalid(f"secret_add.{key}: {value!r} is not a valid value")
        if not entry.get("source"):
            raise Invalid("secret_add: each entry needs a source (the secret's name)")
        ref = specs.FileRef(source=entry["source"], target=specs.file_target("secret", entry.get("target") or
                                                                                entry["source"]),
                            **{k: entry[k] for k in ("uid", "gid", "mode") if k in entry}).to_dict()
        clash = next((r for r in refs if r["target"] == ref["target"]), None)
        if clash is not None:
            raise Invalid(f"secret_add: secrets {clash['source']!r} and {ref['source']!r} have the same target "
                          f"{ref['target']}")
        refs.append(ref)
    return refs


def check_file_sources(spec: Mapping, known: Mapping[str, set[str]]) -> None:
    """Every secret and config a service spec mounts exists (``known``: "secrets" and
    "configs" -> the names in the cluster)."""
    container = spec["container"]
    missing = [f"{kind.rstrip('s')} {ref['source']!r}" for kind in ("secrets", "configs")
               for ref in container.get(kind) or () if ref["source"] not in known[kind]]
    if missing:
        raise Invalid(f"service {spec['name']}: no such {', '.join(missing)} in the cluster; nothing was changed")


def _config(current: Mapping, changes: Any, what: str, actions: tuple[str, ...]) -> dict:
    if not isinstance(changes, dict):
        raise Invalid(f"{what} must be an object")
    config = dict(current)
    for key, value in changes.items():
        kind = _CONFIG_FIELDS.get(key)
        if kind is None and what == "update_config":  # swarmlet's extensions
            kind = _EXTENSION_FIELDS.get(key)
        if kind is None:
            raise Invalid(f"{what}: unknown field {key!r}; expected one of {', '.join(_CONFIG_FIELDS)}")
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise Invalid(f"{what}.{key}: {value!r} is not a valid value")
        if key == "failure_action" and value not in actions:
            raise Invalid(f"{what}.failure_action: {value!r}; expected one of {', '.join(actions)}")
        if key == "order" and value not in specs.UPDATE_ORDERS:
            raise Invalid(f"{what}.order: {value!r}; expected one of {', '.join(specs.UPDATE_ORDERS)}")
        if key == "max_failure_ratio" and not 0 <= value <= 1:
            raise Invalid(f"{what}.max_failure_ratio: {value!r}; expected a ratio from 0 to 1")
        if key in ("parallelism", "delay", "monitor", "canary", "hold") and value < 0:
            raise Invalid(f"{what}.{key}: {value!r}; expected 0 or more")
        config[key] = float(value) if key in ("delay", "monitor", "max_failure_ratio", "hold") else value
    if config.get("blue_green") and config.get("canary"):
        raise Invalid(f"{what}: canary and blue_green cannot be used together (a blue-green update starts the "
                      "whole new set beside the old one)")
    return config


def apply_service_changes(spec: Mapping, changes: Mapping) -> dict:
    """``changes``: ``{"image", "env_add": {NAME: value}, "env_rm": [NAME], "replicas",
    "force": bool, "update_config": {...}, "rollback_config": {...}, "secret_add": [{source,
    target, uid, gid, mode}], "secret_rm": [NAME]}``, each optional."""
    unknown = sorted(set(changes) - set(UPDATE_CHANGE_KEYS))
    if unknown:
        raise Invalid(f"unknown change {unknown[0]!r}; expected one of {', '.join(UPDATE_CHANGE_KEYS)}")
    new = specs.ServiceSpec.from_dict(dict(spec)).to_dict()  # a copy, normalised
    container = new["container"]
    if "image" in changes:
        if not isinstance(changes["image"], str) or not changes["image"].strip():
            raise Invalid("image must be a non-empty string")
        container["image"] = changes["image"]
    env = dict(container["env"])
    for name in changes.get("env_rm") or []:
        env.pop(name, None)
    env_add = changes.get("env_add") or {}
    if not isinstance(env_add, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env_add.items()):
        raise Invalid("env_add must map names to string values")
    env.update(env_add)
    container["env"] = {k: env[k] for k in sorted(env)}
    if "replicas" in changes:
        replicas = changes["replicas"]
        if new["mode"] not in ("replicated", "replicated-job"):
            raise Invalid(f"service {new['name']} is {new['mode']}: replicas apply to replicated services only")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise Invalid(f"replicas: {replicas!r}; expected 0 or more")
        new["replicas"] = replicas
    if changes.get("force"):
        new["force_update"] = int(new.get("force_update") or 0) + 1  # a new digest: every task is replaced
    if "update_config" in changes:
        new["update_config"] = _config(new["update_config"], changes["update_config"], "update_config",
                                       specs.UPDATE_FAILURE_ACTIONS)
    if "secret_add" in changes or "secret_rm" in changes:
        container["secrets"] = _secret_refs(container.get("secrets") or [], changes.get("secret_add") or [],
                                            changes.get("secret_rm") or [])
    if "rollback_config" in changes:
        new["rollback_config"] = _config(new["rollback_config"], changes["rollback_config"], "rollback_config",
                                         specs.ROLLBACK_FAILURE_ACTIONS)
    return new


# -- the plan of a change -------------------------------------------------------------------------

def field_changes(old: Any, new: Any, prefix: str = "") -> list[dict]:
    """Every leaf that differs, as ``{"field": "container.image", "old", "new"}``
    (mappings are walked; lists are compared whole)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += field_changes(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return found
    if _plain(old) == _plain(new):
        return []
    return [{"field": prefix, "old": _plain(old), "new": _plain(new)}]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(bytes(value))} bytes>"
    return value


def _service_plan(old: Mapping | None, new: Mapping | None, tasks: list[Task]) -> dict:
    name = (new or old)["name"]
    if new is None:
        active = [t for t in tasks if t.spec.desired_state in ACTIVE_DESIRED_STATES]
        return {"kind": "service", "name": name, "action": "remove", "tasks_removed": len(active)}
    if old is None:
        return {"kind": "service", "name": name, "action": "create", "replicas": new.get("replicas")}
    plan = {"kind": "service", "name": name, "action": "update", "fields": field_changes(old, new)}
    digest = spec_digest(new)
    active = [t for t in tasks if t.spec.desired_state in ACTIVE_DESIRED_STATES]
    replaced = sorted(t.id for t in active if t.spec.spec_digest != digest)
    config = specs.UpdateConfig.from_dict(dict(new.get("update_config") or {}))
    plan["tasks_replaced"] = replaced
    parallelism = config.parallelism or len(replaced)
    plan["batches"] = math.ceil(len(replaced) / parallelism) if replaced else 0
    plan["parallelism"], plan["order"] = config.parallelism, config.order
    if config.canary and replaced:
        plan["canary"] = config.canary
    return plan


def plan(ops: list[dict], existing: Mapping[str, list[StoredObject]], tasks: list[Task]) -> list[dict]:
    """What ``ops`` would change, one entry per object, in the order of the ops."""
    by_id = {(kind, o.id): o for kind, objects in existing.items() for o in objects}
    tasks_by_service: dict[str, list[Task]] = {}
    for task in tasks:
        tasks_by_service.setdefault(task.spec.service_id, []).append(task)
    entries = []
    for op in ops:
        current = by_id.get((op["kind"], op["id"]))
        old = dict(current.raw["spec"]) if current is not None else None
        new = op.get("spec", old) if op["op"] != "delete" else None
        if op["kind"] == "service":
            entries.append(_service_plan(old, new, tasks_by_service.get(op["id"], [])))
            continue
        name = (new or old or {}).get("name", op["id"])
        entry = {"kind": op["kind"], "name": name, "action": {"create": "create", "delete": "remove"}.get(op["op"],
                                                                                                         "update")}
        if entry["action"] == "update":
            entry["fields"] = field_changes(old, new)
        entries.append(entry)
    return entries
