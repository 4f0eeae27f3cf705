"""The refusals every role speaks: domain code (nodes, services, stacks, configs, the
store, the dispatcher) raises these; only the HTTP layer (``manager/controlapi``)
turns them into status codes and JSON bodies. ``code`` names the kind of refusal on
the wire, so clients can tell them apart without parsing messages.

The store's own errors (``swarmlet.store``) are subclasses of these.
"""
from __future__ import annotations


class SwarmletError(Exception):
    """A request refused; the message says why and is safe to show the caller."""

    code = "error"


class NotFound(SwarmletError):
    code = "not_found"


class Conflict(SwarmletError):
    """The request collides with the cluster's current state (a stale version, an object
    that exists, an operation the state does not allow now)."""

    code = "conflict"


class AlreadyExists(Conflict):
    code = "exists"


class Ambiguous(Conflict):
    """A reference that names more than one object."""

    code = "ambiguous"


class Invalid(SwarmletError):
    code = "invalid"


class TooLarge(Invalid):
    code = "too_large"


class OverLimit(TooLarge):
    """A request past one of the cluster's limits (``swarmlet.api.limits``); the message
    names the limit, ``limit`` is its setting (``limits.replicas_per_service``)."""

    code = "over_limit"

    def __init__(self, message: str, limit: str):
        super().__init__(message)
        self.limit = limit


class BodyTooLarge(OverLimit):
    """A request body past ``limits.request_body_bytes`` (HTTP 413)."""

    code = "body_too_large"


class Forbidden(SwarmletError):
    """The caller may not do this (a refused join token, a node that is not who it says)."""

    code = "forbidden"


class Unavailable(SwarmletError):
    """This manager cannot answer now (no state yet, no leader); retrying later may work."""

    code = "unavailable"


class NoQuorum(Unavailable):
    code = "no_quorum"


class Gone(SwarmletError):
    """What was asked for is no longer held (an event cursor older than a manager's ring)."""

    code = "gone"


class Timeout(SwarmletError):
    """No answer in time; the outcome may be unknown (the message says)."""

    code = "timeout"
