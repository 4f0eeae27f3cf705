"""A node's live TLS identity: its certificates, the SSL contexts built from them,
and their renewal. Each context is built once, on first use; a renewed certificate is
loaded into the same context objects, because a listening server (aiohttp's site, the Raft
listener) keeps the context it started with and must present the new certificate."""
from __future__ import annotations

import ssl

from swarmlet.ca import NodeCertStore, NodeIdentity, client_context, identity_of, server_context
from swarmlet.ca.tls import load_cert_chain_from_memory


class NodeTls:
    def __init__(self, certs: NodeCertStore):
        self._certs = certs
        self.ca_pem, self.cert_pem, self.key_pem = certs.load()
        self.identity: NodeIdentity = identity_of(self.cert_pem)
        # Built on first use: a worker listens on nothing and needs only the client
        # context (a hollow host holds hundreds of workers' identities in one process).
        self._contexts: dict[str, ssl.SSLContext] = {}

    def _context(self, kind: str) -> ssl.SSLContext:
        context = self._contexts.get(kind)
        if context is None:
            if kind == "client":
                context = client_context(self.ca_pem, self.cert_pem, self.key_pem)
            else:
                # The API accepts connections without a client certificate (joining nodes
                # have none yet); each route then demands the roles it needs.
                context = server_context(self.ca_pem, self.cert_pem, self.key_pem,
                                         require_client_cert=kind == "peer_server")
            self._contexts[kind] = context
        return context

    def replace(self, cert_pem: bytes, key_pem: bytes) -> None:
        """Store a renewed certificate and present it on every new connection."""
        self._certs.save(self.ca_pem, cert_pem, key_pem)
        for context in self._contexts.values():
            load_cert_chain_from_memory(context, cert_pem, key_pem)
        self.cert_pem, self.key_pem = cert_pem, key_pem
        self.identity = identity_of(cert_pem)

    def api_server_context(self) -> ssl.SSLContext:
        return self._context("api_server")

    def peer_server_context(self) -> ssl.SSLContext:
        return self._context("peer_server")

    def client_context(self) -> ssl.SSLContext:
        return self._context("client")
