"""A node's live TLS identity: its certificates, the SSL contexts built from them,
and their renewal. Contexts are rebuilt when the certificate changes, and every new
connection asks for the current one, so a renewed certificate takes effect at once."""
from __future__ import annotations

import ssl

from swarmlet.ca import NodeCertStore, NodeIdentity, client_context, identity_of, server_context


class NodeTls:
    def __init__(self, certs: NodeCertStore):
        self._certs = certs
        self.reload()

    def reload(self) -> None:
        self.ca_pem, self.cert_pem, self.key_pem = self._certs.load()
        self.identity: NodeIdentity = identity_of(self.cert_pem)
        # The API accepts connections without a client certificate (joining nodes have
        # none yet); each route then demands the roles it needs.
        self._api_server = server_context(self.ca_pem, self.cert_pem, self.key_pem, require_client_cert=False)
        self._peer_server = server_context(self.ca_pem, self.cert_pem, self.key_pem, require_client_cert=True)
        self._client = client_context(self.ca_pem, self.cert_pem, self.key_pem)

    def replace(self, cert_pem: bytes, key_pem: bytes) -> None:
        self._certs.save(self.ca_pem, cert_pem, key_pem)
        self.reload()

    def api_server_context(self) -> ssl.SSLContext:
        return self._api_server

    def peer_server_context(self) -> ssl.SSLContext:
        return self._peer_server

    def client_context(self) -> ssl.SSLContext:
        return self._client
