"""The operators' certificates: several named identities, each ``admin`` (everything)
or ``read-only`` (looks only; the rule is in controlapi/server.py), renewable by their
holder and revocable by an admin.

A certificate's CN is its identity's name; the cluster object's status records each
identity (``admins``: name -> role, the serials issued to it, whether it is revoked)
and the serials revoked one by one (``revoked_serials``). Every channel's certificate
check (caserver.certificate_refusal) refuses both kinds of revocation.
"""
from __future__ import annotations

import logging
import re

from swarmlet.api import errors
from swarmlet.api.objects import CLUSTER_ID
from swarmlet.api.views import Cluster
from swarmlet.ca import OPERATOR_ROLES, NodeIdentity, identity_of
from swarmlet.ca.pki import ADMIN_CERT_VALIDITY
from swarmlet.manager import caserver
from swarmlet.manager.retry import retry_on_conflict
from swarmlet.manager.settings import cluster_of
from swarmlet.store import ClusterStore

log = logging.getLogger("swarmlet.manager")

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def serial_hex(cert_pem: bytes) -> str:
    return format(identity_of(cert_pem).serial, "x")


def admin_record(role: str, serials: list[str], revoked: bool = False) -> dict:
    return {"role": role, "serials": list(serials), "revoked": revoked}


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise errors.Invalid(f"admin identity name {name!r}: 1-63 lower-case letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")


def revocation(cluster: Cluster, ref: str, caller: NodeIdentity) -> dict:
    """The cluster status after revoking ``ref``: an identity's name (every certificate
    it holds, now and renewed) or one certificate's serial (hex)."""
    status = dict(cluster.status)
    admins = dict(cluster.admins)
    own_serial = format(caller.serial, "x")
    if ref in admins:
        if ref == caller.node_id:
            raise errors.Invalid(f"{ref!r} is the identity you are calling with: revoke it from another admin identity")
        admins[ref] = dict(admins[ref], revoked=True)
        status["admins"] = admins
        return status
    serial = ref.lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]{1,40}", serial):
        raise errors.NotFound(f"no admin identity named {ref!r}, and it is not a certificate serial (hex)")
    if serial == own_serial:
        raise errors.Invalid(f"serial {serial} is the certificate you are calling with: revoke it from another one")
    status["revoked_serials"] = sorted(cluster.revoked_serials | {serial})
    return status


class AdminCerts:
    def __init__(self, store: ClusterStore):
        self.store = store

    def list_public(self) -> list[dict]:
        cluster = cluster_of(self.store)
        return [{"name": name, **record} for name, record in sorted(cluster.admins.items())]

    async def create(self, name: str, role: str, csr: bytes) -> dict:
        check_name(name)
        if role not in OPERATOR_ROLES:
            raise errors.Invalid(f"role must be one of {', '.join(OPERATOR_ROLES)}, not {role!r}")
        issued: list[bytes] = []

        def ops() -> list[dict]:
            cluster = cluster_of(self.store)
            if name in cluster.admins:
                state = "revoked" if cluster.admins[name].get("revoked") else "in use"
                raise errors.Conflict(f"an admin identity named {name!r} exists ({state}): choose another name")
            cert = caserver.issue_certificate(cluster, csr, name, role, [], ADMIN_CERT_VALIDITY)
            issued[:] = [cert]
            admins = dict(cluster.admins, **{name: admin_record(role, [serial_hex(cert)])})
            return [{"op": "update", "kind": Cluster.kind, "id": CLUSTER_ID, "version": cluster.version,
                     "status": dict(cluster.status, admins=admins)}]

        await retry_on_conflict(self.store, ops)
        log.info("issued a %s certificate to the new identity %s", role, name)
        return {"name": name, "role": role, "cert": issued[0].decode(), "ca_cert": caserver.root_ca(cluster_of(self.store)).cert_pem.decode()}

    async def renew(self, identity: NodeIdentity, csr: bytes) -> dict:
        """A new certificate for the caller's own identity and role (the old one stays
        valid until it expires, unless revoked)."""
        issued: list[bytes] = []

        def ops() -> list[dict]:
            cluster = cluster_of(self.store)
            cert = caserver.issue_certificate(cluster, csr, identity.node_id, identity.role, [], ADMIN_CERT_VALIDITY)
            issued[:] = [cert]
            record = cluster.admins.get(identity.node_id) or admin_record(identity.role, [format(identity.serial, "x")])
            admins = dict(cluster.admins, **{identity.node_id: dict(record, serials=[*record["serials"],
                                                                                     serial_hex(cert)])})
            return [{"op": "update", "kind": Cluster.kind, "id": CLUSTER_ID, "version": cluster.version,
                     "status": dict(cluster.status, admins=admins)}]

        await retry_on_conflict(self.store, ops)
        log.info("renewed the %s certificate of %s", identity.role, identity.node_id)
        return {"cert": issued[0].decode()}

    async def revoke(self, ref: str, caller: NodeIdentity) -> dict:
        def ops() -> list[dict]:
            cluster = cluster_of(self.store)
            return [{"op": "update", "kind": Cluster.kind, "id": CLUSTER_ID, "version": cluster.version,
                     "status": revocation(cluster, ref, caller)}]

        await retry_on_conflict(self.store, ops)
        log.warning("revoked %s (by %s %s)", ref, caller.role, caller.node_id)
        return {"revoked": ref}
