"""A node's identity on disk: the root CA certificate, its own certificate and key.

File names follow Docker Swarm's (swarm-root-ca.crt, swarm-node.crt, swarm-node.key).
Every file is owner-only (certificates too: nothing under a data dir is for others),
and every write goes to a temporary file in the same directory and is renamed into
place, so a reader never sees a half-written file.

On a locked manager (autolock, swarmlet/ca/unlock.py) the key file is sealed under the
node's key-encryption key, as Swarm encrypts its TLS key: the data dir passes
``seal_key`` (the sealer to write the key with, or None for plain PEM) and
``open_key`` (the sealer that opens a sealed key file)."""

import os
from pathlib import Path
from typing import Callable

from swarmlet.private import make_private_dir, write_private

from .errors import CertificateError
from .identity import load_certificate
from .keys import key_matches_certificate
from .layout import CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE
from .sealing import Sealer, is_sealed

CONSISTENT_READ_ATTEMPTS = 20


class NodeCertStore:
    def __init__(self, directory: str | os.PathLike, seal_key: Callable[[], Sealer | None] | None = None,
                 open_key: Callable[[], Sealer] | None = None):
        self.directory = Path(directory)
        self._seal_key = seal_key or (lambda: None)
        self._open_key = open_key
        self.ca_path = self.directory / CA_CERT_FILE
        self.cert_path = self.directory / NODE_CERT_FILE
        self.key_path = self.directory / NODE_KEY_FILE
        # The key of a certificate being installed (see save()).
        self.next_key_path = self.directory / f"{NODE_KEY_FILE}.next"

    def exists(self) -> bool:
        return all(path.exists() for path in (self.ca_path, self.cert_path, self.key_path))

    def save(self, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        certificate = load_certificate(cert_pem)
        if not key_matches_certificate(key_pem, certificate):
            raise CertificateError("refusing to save a key that does not match its certificate")
        make_private_dir(self.directory)
        write_private(self.ca_path, ca_pem)
        # Two files cannot be replaced at once. The new key waits beside the old one
        # until the certificate is in place, then takes its name; at every moment in
        # between, load() finds a key that matches the certificate (the current key,
        # or the waiting one), so neither a concurrent reader nor a crash ever sees a
        # mismatched pair.
        sealer = self._seal_key()
        write_private(self.next_key_path, sealer.seal(key_pem) if sealer else key_pem)
        write_private(self.cert_path, cert_pem)
        os.replace(self.next_key_path, self.key_path)

    def load(self) -> tuple[bytes, bytes, bytes]:
        """(ca_pem, cert_pem, key_pem); FileNotFoundError if no identity is stored,
        CertificateError if the stored key and certificate do not belong together."""
        ca_pem = self.ca_path.read_bytes()
        # A concurrent save() may replace the pair between our reads: read it again
        # then. A mismatch that persists is real (a corrupted or foreign file).
        for _ in range(CONSISTENT_READ_ATTEMPTS):
            cert_pem = self.cert_path.read_bytes()
            certificate = load_certificate(cert_pem)
            for path in (self.key_path, self.next_key_path):
                try:
                    key_pem = self._key_from(path.read_bytes())
                except FileNotFoundError:
                    continue  # the waiting key was just renamed into place
                if key_matches_certificate(key_pem, certificate):
                    return ca_pem, cert_pem, key_pem
        raise CertificateError(f"{self.key_path} does not match {self.cert_path}")

    def _key_from(self, blob: bytes) -> bytes:
        if not is_sealed(blob):
            return blob
        if self._open_key is None:
            raise CertificateError(f"{self.key_path} is sealed (a locked manager's) and nothing here can open it")
        return self._open_key().open(blob)

    def rewrite_key(self) -> None:
        """Write the key file again as ``seal_key`` now says (sealed or plain)."""
        ca_pem, cert_pem, key_pem = self.load()
        self.save(ca_pem, cert_pem, key_pem)
