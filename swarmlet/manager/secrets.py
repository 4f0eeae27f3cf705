"""Secrets: small named files the cluster keeps sealed, as Swarm's.

A secret's value is sealed on its own (AES-GCM, ``ca/sealing.py``) with a key derived
from the cluster key, before it is proposed: on top of the sealing of the Raft journal
and snapshots, so that a store dump, a backup, a dry-run plan or a log line only ever
holds the sealed blob. It is opened in two places only: by the dispatcher, when it
builds the assignment set of a node that runs a task using it (``SecretBox.open``,
then sent over the node's mutual-TLS session), and by a stack deploy that compares a
secret it would create with the one of that name (secrets are immutable).

The stored spec is ``{"name", "labels", "sealed": bytes}``. A secret written before
sealing existed holds ``"data"`` in clear; it still opens.

The API never shows a secret's value (``secret_public``), and a secret a service uses
cannot be removed (``remove`` names the services): rotation is a new secret and
``service update --secret-rm OLD --secret-add NEW``, as in Swarm.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from swarmlet.api import errors
from swarmlet.api.names import check_labels, check_name
from swarmlet.api.references import resolve_in
from swarmlet.api.views import Secret, Service
from swarmlet.ca.sealing import Sealer, derive_key
from swarmlet.store import ClusterStore

MAX_SECRET_SIZE = 500 * 1024  # SwarmKit's limit
SEALED = "sealed"
_PURPOSE = "secret value"


class SecretBox:
    """Seals and opens secret values with a key derived from the cluster key."""

    def __init__(self, cluster_key: str):
        self._sealer = Sealer(derive_key(cluster_key.encode(), _PURPOSE), _PURPOSE)

    def spec(self, name: str, data: bytes, labels: Mapping[str, str]) -> dict:
        """The stored spec of a new secret: its value sealed."""
        return {"name": name, "labels": dict(labels), SEALED: self._sealer.seal(bytes(data))}

    def open(self, secret: Secret) -> bytes:
        spec = secret.spec
        if SEALED in spec:
            return self._sealer.open(bytes(spec[SEALED]))
        return bytes(spec["data"])  # stored before secrets were sealed


def services_using(name: str, services: Iterable[Service]) -> list[str]:
    """The names of the services whose tasks mount the secret ``name``."""
    return sorted(s.name for s in services
                  if any(ref["source"] == name for ref in s.raw_spec["container"].get("secrets") or ()))


def secret_public(secret: Secret) -> dict:
    """What the API shows of a secret: never its value, sealed or not."""
    spec = secret.spec
    return {"id": secret.id, "version": secret.version, "created_at": secret.created_at,
            "updated_at": secret.raw.get("updated_at"), "name": secret.name, "labels": dict(spec.get("labels") or {})}


class SecretService:
    def __init__(self, store: ClusterStore, box: SecretBox):
        self.store = store
        self.box = box

    def resolve(self, ref: str) -> Secret:
        return resolve_in(self.store, Secret, "secret", ref)

    def list_public(self) -> list[dict]:
        return [secret_public(s) for s in sorted(self.store.list(Secret), key=lambda s: s.name)]

    def public(self, ref: str) -> dict:
        return secret_public(self.resolve(ref))

    async def create(self, name: str, data: bytes, labels: dict, request_id: str | None) -> dict:
        check_name("secret name", name)
        labels = check_labels("secret labels", labels)
        if not data:
            raise errors.Invalid(f"secret {name}: the data is empty (Swarm refuses an empty secret too)")
        if len(data) > MAX_SECRET_SIZE:
            raise errors.TooLarge(f"secret {name} is {len(data)} bytes; a secret holds at most "
                                  f"{MAX_SECRET_SIZE // 1024} KB")
        # The name is the ID, so two creates of one name conflict inside the state machine.
        result = await self.store.commit([{"op": "create", "kind": Secret.kind, "id": name,
                                           "spec": self.box.spec(name, data, labels)}], request_id=request_id)
        return {"id": name, "version": result["versions"].get(name), "index": result["index"]}

    async def remove(self, ref: str) -> None:
        secret = self.resolve(ref)
        users = services_using(secret.name, self.store.list(Service))
        if users:
            raise errors.Conflict(f"secret {secret.name} is in use by the service(s) {', '.join(users)}: "
                                  "remove it from them first (service update --secret-rm, or deploy their stack "
                                  "without it); nothing was removed")
        # The check and the delete are not one transaction: a service given the secret in
        # between gets tasks that fail with "missing secret", naming it.
        await self.store.commit([{"op": "delete", "kind": Secret.kind, "id": secret.id, "version": secret.version}])
