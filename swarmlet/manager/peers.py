"""Calls from this manager to another one, over the API with this node's certificate and
from its own address (what a partition of the node's address must cut, cuts these too)."""
from __future__ import annotations

import ssl
from typing import Callable

from swarmlet.node.rpc import api_call

DEFAULT_PEER_TIMEOUT = 10.0


class PeerCalls:
    def __init__(self, client_context: Callable[[], ssl.SSLContext], source: str):
        self.client_context = client_context
        self.source = source

    async def __call__(self, address: str, method: str, path: str, body: dict | None = None,
                       timeout: float = DEFAULT_PEER_TIMEOUT):
        return await api_call(self.client_context(), address, method, path, body, timeout=timeout,
                              source=self.source)
