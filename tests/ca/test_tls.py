"""Real handshakes on 127.0.0.1: a server thread accepts one connection and reports
what happened through a queue; the client runs in the test itself."""

import queue
import socket
import ssl
import threading
from contextlib import contextmanager

import pytest

from swarmlet.ca import NodeCertStore, client_context, identity_of, insecure_fetch_context, server_context
from swarmlet.ca import tls as tls_module
from swarmlet.ca.tls import client_context_from_files

TIMEOUT = 10


def accept_one(listener: socket.socket, context: ssl.SSLContext, outcome: queue.Queue) -> None:
    """Greets the client with its node ID ("" if it showed no certificate)."""
    try:
        connection, _ = listener.accept()
        with context.wrap_socket(connection, server_side=True) as tls:
            peer = tls.getpeercert(binary_form=True)
            client_node_id = identity_of(peer).node_id if peer else ""
            tls.sendall(f"hello {client_node_id}".encode())
            outcome.put(client_node_id)
    except Exception as exc:  # reported to the test, which asserts on it
        outcome.put(exc)


@contextmanager
def serving(context: ssl.SSLContext):
    """Yields (port, outcome queue) of a server accepting a single connection."""
    outcome: queue.Queue = queue.Queue()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        thread = threading.Thread(target=accept_one, args=(listener, context, outcome), daemon=True)
        thread.start()
        yield listener.getsockname()[1], outcome
        thread.join(TIMEOUT)


def talk(port: int, context: ssl.SSLContext) -> tuple[bytes, str, bytes]:
    """(server certificate DER, TLS version, greeting)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw) as tls:
            greeting = tls.recv(100)
            if not greeting:
                raise ConnectionError("server closed the connection without a greeting")
            return tls.getpeercert(binary_form=True), tls.version(), greeting


def server_for(ca, node, **options) -> ssl.SSLContext:
    return server_context(ca.cert_pem, node.cert_pem, node.key_pem, **options)


def test_same_ca_handshake_identifies_both_sides(cluster_ca, manager, worker):
    with serving(server_for(cluster_ca, manager)) as (port, outcome):
        server_cert, version, greeting = talk(port, client_context(cluster_ca.cert_pem, worker.cert_pem, worker.key_pem))
        assert outcome.get(timeout=TIMEOUT) == "worker-node-1"
    assert greeting == b"hello worker-node-1"
    assert identity_of(server_cert).node_id == "manager-node-1"
    assert version == "TLSv1.3"


def test_client_certificate_from_another_ca_is_refused(cluster_ca, manager, foreign_worker):
    client = client_context(cluster_ca.cert_pem, foreign_worker.cert_pem, foreign_worker.key_pem)
    with serving(server_for(cluster_ca, manager)) as (port, outcome):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            talk(port, client)
        server_error = outcome.get(timeout=TIMEOUT)
    assert isinstance(server_error, ssl.SSLError)
    assert "certificate verify failed" in str(server_error)


def test_missing_client_certificate_is_refused_when_required(cluster_ca, manager):
    with serving(server_for(cluster_ca, manager)) as (port, outcome):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            talk(port, client_context(cluster_ca.cert_pem))
        server_error = outcome.get(timeout=TIMEOUT)
    assert isinstance(server_error, ssl.SSLError)
    assert "peer did not return a certificate" in str(server_error)


def test_client_certificate_is_optional_when_not_required(cluster_ca, manager):
    with serving(server_for(cluster_ca, manager, require_client_cert=False)) as (port, outcome):
        _, _, greeting = talk(port, client_context(cluster_ca.cert_pem))
        assert outcome.get(timeout=TIMEOUT) == ""
    assert greeting == b"hello "


def test_optional_client_certificate_is_still_verified(cluster_ca, manager, foreign_worker):
    client = client_context(cluster_ca.cert_pem, foreign_worker.cert_pem, foreign_worker.key_pem)
    with serving(server_for(cluster_ca, manager, require_client_cert=False)) as (port, outcome):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            talk(port, client)
        assert isinstance(outcome.get(timeout=TIMEOUT), ssl.SSLError)


def test_client_refuses_a_server_from_another_ca(cluster_ca, foreign_ca, foreign_worker, worker):
    client = client_context(cluster_ca.cert_pem, worker.cert_pem, worker.key_pem)
    with serving(server_for(foreign_ca, foreign_worker)) as (port, outcome):
        with pytest.raises(ssl.SSLCertVerificationError):
            talk(port, client)
        assert isinstance(outcome.get(timeout=TIMEOUT), (ssl.SSLError, ConnectionError))


def test_insecure_fetch_context_reaches_any_server_so_the_caller_can_pin_it(foreign_ca, foreign_worker):
    with serving(server_for(foreign_ca, foreign_worker, require_client_cert=False)) as (port, outcome):
        server_cert, _, greeting = talk(port, insecure_fetch_context())
        assert outcome.get(timeout=TIMEOUT) == ""
    assert identity_of(server_cert).cluster_id == "cluster-two"


def test_contexts_require_at_least_tls_1_2(cluster_ca, manager):
    contexts = [server_for(cluster_ca, manager), client_context(cluster_ca.cert_pem), insecure_fetch_context()]
    assert all(context.minimum_version == ssl.TLSVersion.TLSv1_2 for context in contexts)


def files_of(tmp_path, ca, node) -> NodeCertStore:
    store = NodeCertStore(tmp_path / "context")
    store.save(ca.cert_pem, node.cert_pem, node.key_pem)
    return store


def test_a_context_from_files_presents_its_certificate_and_verifies_the_server(tmp_path, cluster_ca, manager, worker):
    store = files_of(tmp_path, cluster_ca, worker)
    client = client_context_from_files(store.ca_path, store.cert_path, store.key_path)
    with serving(server_for(cluster_ca, manager)) as (port, outcome):
        server_cert, version, greeting = talk(port, client)
        assert outcome.get(timeout=TIMEOUT) == "worker-node-1"
    assert identity_of(server_cert).node_id == "manager-node-1" and greeting == b"hello worker-node-1"
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2 and client.verify_mode == ssl.CERT_REQUIRED


def test_a_context_from_files_refuses_a_server_from_another_ca(tmp_path, cluster_ca, foreign_worker, worker, foreign_ca):
    store = files_of(tmp_path, cluster_ca, worker)
    client = client_context_from_files(store.ca_path, store.cert_path, store.key_path)
    with serving(server_for(foreign_ca, foreign_worker)) as (port, outcome):
        with pytest.raises(ssl.SSLCertVerificationError):
            talk(port, client)
        outcome.get(timeout=TIMEOUT)


def test_a_context_from_files_refuses_a_key_that_is_not_its_certificates(tmp_path, cluster_ca, manager, worker):
    store = files_of(tmp_path, cluster_ca, worker)
    store.key_path.write_bytes(manager.key_pem)
    with pytest.raises(ssl.SSLError):
        client_context_from_files(store.ca_path, store.cert_path, store.key_path)
    with pytest.raises(FileNotFoundError):
        client_context_from_files(store.ca_path, store.cert_path, tmp_path / "missing.key")


def test_client_needs_both_certificate_and_key_or_neither(cluster_ca, worker):
    with pytest.raises(ValueError, match="both"):
        client_context(cluster_ca.cert_pem, worker.cert_pem, None)


def test_key_material_is_loaded_from_private_files_then_removed(tmp_path, monkeypatch, cluster_ca, manager):
    written = []

    def recording_write(path, data, mode=0o600):
        written.append((path, data, mode))
        real_write(path, data, mode)

    real_write = tls_module.write_private
    monkeypatch.setattr(tls_module, "write_private", recording_write)
    monkeypatch.setattr(tls_module, "private_tmp_root", lambda: str(tmp_path))
    server_for(cluster_ca, manager)

    key_files = [(path, mode) for path, data, mode in written if data == manager.key_pem]
    assert len(key_files) == 1
    key_path, key_mode = key_files[0]
    assert key_mode == 0o600
    assert key_path.is_relative_to(tmp_path) and not key_path.exists()
    assert list(tmp_path.iterdir()) == []


async def test_bounded_tls_read_buffers_still_carry_a_frame_far_larger_than_one(cluster_ca, manager, worker,
                                                                               monkeypatch):
    import asyncio
    import asyncio.sslproto

    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", asyncio.sslproto.SSLProtocol.max_size)
    tls_module.bound_tls_read_buffers()
    payload = bytes(range(256)) * (4 * 1024 * 1024 // 256)  # 4 MiB: 64 buffers' worth
    received = asyncio.get_running_loop().create_future()
    buffers: list[int] = []

    async def serve(reader, writer):
        buffers.append(len(writer.transport._ssl_protocol._ssl_buffer))
        received.set_result(await reader.readexactly(len(payload)))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_for(cluster_ca, manager))
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(cluster_ca.cert_pem, worker.cert_pem, worker.key_pem))
    buffers.append(len(writer.transport._ssl_protocol._ssl_buffer))
    writer.write(payload)
    await writer.drain()
    assert await asyncio.wait_for(received, TIMEOUT) == payload
    assert buffers == [tls_module.TLS_READ_BUFFER_BYTES] * 2  # each end: 64 KiB resident, not 256 KiB
    writer.close()
    server.close()
    await server.wait_closed()
