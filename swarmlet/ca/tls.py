"""TLS contexts for mutual authentication inside the cluster (stdlib ssl).

Peers are verified against the cluster's root CA only. Hostname checking is off:
nodes are identified by node ID, not DNS name, so after the handshake a caller checks
`identity_of(sslobject.getpeercert(binary_form=True))` itself.

Key loading: ssl can only read a certificate chain from files. Each context builder
copies the PEM it is given into a fresh private directory (mode 0700, in RAM under
/dev/shm when available), as 0600 files, loads them and deletes the directory before
returning, so no private key is ever world-readable or left behind. A caller that
already keeps its key on disk (NodeCertStore) can equally call
`context.load_cert_chain(store.cert_path, store.key_path)`."""

import os
import ssl
import tempfile
from pathlib import Path

from swarmlet.private import write_private

MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2
# asyncio gives every TLS connection a read buffer of SSLProtocol.max_size (256 KiB),
# zero-filled and so resident: a leader with 1,000 node sessions held 256 MB of them,
# a hollow host 64 MB per 250 nodes. Session frames are a few KB; a larger one is only
# read in more calls.
TLS_READ_BUFFER_BYTES = 64 * 1024


def bound_tls_read_buffers(size: int = TLS_READ_BUFFER_BYTES) -> None:
    """Every asyncio TLS connection made from now on in this process reads into ``size``
    bytes (a node process calls it once at start)."""
    import asyncio.sslproto  # here, not at the top: the CLI imports this module and needs no asyncio

    asyncio.sslproto.SSLProtocol.max_size = size
RAM_BACKED_TMP = "/dev/shm"


def private_tmp_root() -> str | None:
    """Where to create the throw-away key directory; None means the system default."""
    if os.path.isdir(RAM_BACKED_TMP) and os.access(RAM_BACKED_TMP, os.W_OK):
        return RAM_BACKED_TMP
    return None


def load_cert_chain_from_memory(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # mkdtemp creates the directory with mode 0700, readable by this user only.
    with tempfile.TemporaryDirectory(prefix="swarmlet-tls-", dir=private_tmp_root()) as directory:
        cert_path = Path(directory) / "cert.pem"
        key_path = Path(directory) / "key.pem"
        write_private(cert_path, cert_pem)
        write_private(key_path, key_pem)
        context.load_cert_chain(cert_path, key_path)


def trust_only(context: ssl.SSLContext, ca_pem: bytes) -> None:
    """Trust the cluster's root CA and nothing else (no system CAs)."""
    context.minimum_version = MINIMUM_TLS_VERSION
    context.load_verify_locations(cadata=ca_pem.decode("ascii"))


def server_context(ca_pem: bytes, cert_pem: bytes, key_pem: bytes,
                   require_client_cert: bool = True) -> ssl.SSLContext:
    """Without `require_client_cert` (the join endpoint, where new nodes have no
    certificate yet) a client certificate is still verified if one is presented."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trust_only(context, ca_pem)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    load_cert_chain_from_memory(context, cert_pem, key_pem)
    return context


def client_context(ca_pem: bytes, cert_pem: bytes | None = None,
                   key_pem: bytes | None = None) -> ssl.SSLContext:
    """Verifies the server against the CA; presents a client certificate if given one."""
    if (cert_pem is None) != (key_pem is None):
        raise ValueError("give both cert_pem and key_pem, or neither")
    context = _verifying_client(ca_pem)
    if cert_pem is not None:
        load_cert_chain_from_memory(context, cert_pem, key_pem)
    return context


def client_context_from_files(ca_path: Path, cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """``client_context`` for an identity that is already on disk as plain PEM files (the
    CLI's admin context): ssl reads them itself, and refuses (ssl.SSLError) a key that
    does not match its certificate or is not plain PEM. FileNotFoundError if one is
    missing."""
    context = _verifying_client(Path(ca_path).read_bytes())
    context.load_cert_chain(cert_path, key_path)
    return context


def _verifying_client(ca_pem: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    trust_only(context, ca_pem)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def insecure_fetch_context() -> ssl.SSLContext:
    """For the one join-time request that fetches the root CA certificate before it
    can be trusted. The caller MUST then check the fetched certificate's digest
    against the join token's before using it for anything."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_TLS_VERSION
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
