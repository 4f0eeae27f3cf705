"""Where a manager listens, named once for every role (the CLI included, which must not
import the node side to learn a port number)."""
from __future__ import annotations

DEFAULT_API_PORT = 2377
# The Raft port is the API port + 1 unless set: one address, two listeners.
RAFT_PORT_OFFSET = 1


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """'IP', 'IP:PORT' or '[v6]:PORT' -> (ip, port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, int(port)
    return address, default_port
