"""The shapes of the objects the store keeps, and the defaults they start with.

The store holds plain dicts (see ``swarmlet.store.state``); these helpers name the
fields in one place so every component builds and reads them the same way.
"""
from __future__ import annotations

CLUSTER_ID = "default"  # the one cluster object, as in SwarmKit

NODE_UNKNOWN, NODE_READY, NODE_DOWN = "unknown", "ready", "down"
AVAILABILITIES = ("active", "pause", "drain")

DEFAULT_HEARTBEAT_PERIOD = 1.0
# A node is marked down after this many heartbeat periods without one (~3 s by default).
HEARTBEAT_MISSES_ALLOWED = 3
DEFAULT_CERT_EXPIRY = 90 * 24 * 3600.0


def cluster_object_spec(*, name: str, ca_cert: bytes, ca_key: bytes, worker_secret: str, manager_secret: str,
                        cert_expiry: float = DEFAULT_CERT_EXPIRY,
                        heartbeat_period: float = DEFAULT_HEARTBEAT_PERIOD) -> dict:
    return {"name": name, "ca_cert": ca_cert, "ca_key": ca_key,
            "worker_secret": worker_secret, "manager_secret": manager_secret,
            "cert_expiry": cert_expiry, "heartbeat_period": heartbeat_period}


def node_object_spec(role: str, availability: str = "active", labels: dict | None = None) -> dict:
    return {"role": role, "availability": availability, "labels": dict(labels or {})}


def node_object_status(*, addr: str, hostname: str, state: str = NODE_UNKNOWN, message: str = "",
                       api_address: str | None = None, raft_address: str | None = None,
                       description: dict | None = None, cert_serial: int | None = None) -> dict:
    return {"state": state, "message": message, "addr": addr, "hostname": hostname,
            "api_address": api_address, "raft_address": raft_address,
            "description": dict(description or {}), "cert_serial": cert_serial}


def removed_node_ids(cluster: dict | None) -> set[str]:
    return set((cluster or {}).get("status", {}).get("removed_node_ids", []))


def manager_api_addresses(nodes: list[dict]) -> list[str]:
    return sorted(n["status"]["api_address"] for n in nodes
                  if n["spec"]["role"] == "manager" and n["status"].get("api_address"))
