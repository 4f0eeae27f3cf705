"""The web dashboard's logins and sessions (docs/security.md, "The web dashboard").

A browser holds no client certificate, so an operator who holds the admin certificate
asks a manager for a one-time login token (``swarmlet dashboard``), and the browser
trades it at that manager for a session cookie. Both are bound to the admin
certificate that asked: every request made with the session checks that certificate
again (``manager.ca.check_certificate``), so a session dies with its certificate.

A session acts with the role ``dashboard``: it may call only the read routes in
``DASHBOARD_READS`` (what the pages show), never a write, the backup or the join tokens.

Tokens and sessions live in the memory of the manager that issued them (like a
browser tab, they end with that manager's process); the logic here is pure, with
``now`` passed in.
"""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

DASHBOARD_ROLE = "dashboard"
SESSION_COOKIE = "swarmlet_dashboard"
LOGIN_TOKEN_SECONDS = 60.0          # a login URL is good for one minute, once
SESSION_SECONDS = 8 * 3600.0        # a working day; then `swarmlet dashboard` again
MAX_SESSIONS = 100                  # the oldest go first: logins cannot grow memory without bound
TOKEN_BYTES = 32

# (method, route path) a dashboard session may call: what the pages read. /v1/events is
# served by the events work; until it exists the page says "events not available".
DASHBOARD_READS = frozenset({
    ("GET", "/v1/nodes"), ("GET", "/v1/services"), ("GET", "/v1/tasks"), ("GET", "/v1/stacks"),
    ("GET", "/v1/cluster/status"), ("GET", "/v1/events"),
})


@dataclass
class Grant:
    """A login token's or a session's holder: the admin certificate (DER) that asked."""
    admin_der: bytes
    expires_at: float


@dataclass
class DashboardSessions:
    tokens: dict[str, Grant] = field(default_factory=dict)
    sessions: dict[str, Grant] = field(default_factory=dict)

    def issue_login(self, admin_der: bytes, now: float) -> str:
        self._expire(now)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self.tokens[token] = Grant(admin_der, now + LOGIN_TOKEN_SECONDS)
        return token

    def redeem(self, token: str, now: float) -> str | None:
        """A new session ID for a valid, unused, unexpired token (which is then spent), else None."""
        self._expire(now)
        grant = self.tokens.pop(token, None) if token else None
        if grant is None:
            return None
        while len(self.sessions) >= MAX_SESSIONS:
            self.sessions.pop(next(iter(self.sessions)))
        session_id = secrets.token_urlsafe(TOKEN_BYTES)
        self.sessions[session_id] = Grant(grant.admin_der, now + SESSION_SECONDS)
        return session_id

    def session(self, session_id: str, now: float) -> Grant | None:
        # Compared in constant time against each key: a timing probe learns nothing of a session ID.
        for known, grant in self.sessions.items():
            if hmac.compare_digest(known.encode(), session_id.encode()):
                return grant if grant.expires_at > now else None
        return None

    def end(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)

    def _expire(self, now: float) -> None:
        for table in (self.tokens, self.sessions):
            for key in [k for k, grant in table.items() if grant.expires_at <= now]:
                del table[key]


def may_read(method: str, route_path: str) -> bool:
    return (method, route_path) in DASHBOARD_READS
