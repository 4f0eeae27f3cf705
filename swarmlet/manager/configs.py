"""Configs: small named files kept in the cluster (also what the failover tests write)."""
from __future__ import annotations

from swarmlet.api import errors
from swarmlet.api.names import check_labels, check_name
from swarmlet.api.references import resolve_in
from swarmlet.api.views import Config
from swarmlet.manager.stacks import MAX_CONFIG_SIZE
from swarmlet.store import ClusterStore


def config_public(config: Config) -> dict:
    return {"id": config.id, "version": config.version, "created_at": config.created_at,
            "name": config.name, "labels": config.spec.get("labels", {}), "data": config.spec["data"]}


class ConfigService:
    def __init__(self, store: ClusterStore):
        self.store = store

    def resolve(self, ref: str) -> Config:
        return resolve_in(self.store, Config, "config", ref)

    def list_public(self) -> list[dict]:
        return [config_public(c) for c in sorted(self.store.list(Config), key=lambda c: c.name)]

    def public(self, ref: str) -> dict:
        return config_public(self.resolve(ref))

    async def consistent_public(self, ref: str) -> dict:
        """As ``public``, but linearisable: read after a Raft read barrier, so a config
        whose create was acknowledged before this call began is never missed (the plain
        read answers from this manager's copy, which may trail the leader)."""
        await self.store.read_barrier()
        return self.public(ref)

    async def create(self, name: str, data: bytes, labels: dict, request_id: str | None) -> dict:
        check_name("config name", name)
        labels = check_labels("config labels", labels)
        if len(data) > MAX_CONFIG_SIZE:
            raise errors.TooLarge(f"a config holds at most {MAX_CONFIG_SIZE // 1024} KB")
        # The name is the ID, so two creates of one name conflict inside the state machine.
        result = await self.store.commit([{"op": "create", "kind": Config.kind, "id": name,
                                           "spec": {"name": name, "data": data, "labels": labels}}],
                                         request_id=request_id)
        return {"id": name, "version": result["versions"].get(name), "index": result["index"]}

    async def remove(self, ref: str) -> None:
        config = self.resolve(ref)
        await self.store.commit([{"op": "delete", "kind": Config.kind, "id": config.id, "version": config.version}])

    async def remove_labelled(self, key: str, value: str) -> int:
        """Remove every config labelled ``key=value`` (e.g. one chaos run's writes) in
        bounded transactions; returns how many."""
        doomed = [c for c in self.store.list(Config) if c.spec.get("labels", {}).get(key) == value]
        ops = [{"op": "delete", "kind": Config.kind, "id": c.id, "version": c.version} for c in doomed]
        if ops:
            await self.store.commit_batched(ops)
        return len(ops)
