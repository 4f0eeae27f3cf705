"""Raft traffic between managers over mutual TLS.

pysyncobj hands every frame it receives to ``pickle.loads`` before it knows who sent
it. This transport replaces its plain TCP connections with TLS ones that run on
pysyncobj's own poller thread, and only decode frames once the TLS handshake has
proved the peer holds a *manager* certificate of this cluster that is not revoked.
pysyncobj's Fernet password (the cluster key) still applies inside the tunnel, so a
frame must pass both checks before it is unpickled.

The connection implements the duck-typed interface pysyncobj's ``TCPTransport``
expects of a ``TcpConnection`` (connect, send, disconnect, state, fileno, the
callbacks and the ``encryptor``/``sendRandKey``/``recvRandKey`` fields), so the
transport subclass only changes where connections come from.
"""
from __future__ import annotations

import errno
import functools
import logging
import pickle
import socket
import ssl
import struct
import time
import zlib
from typing import Callable

from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

log = logging.getLogger("swarmlet.raft.tls")

_FRAME_HEADER = struct.Struct("!I")
# A frame bigger than this is an attack or a bug; snapshots travel in 64 KiB chunks.
MAX_FRAME_BYTES = 64 * 1024 * 1024
_READ_CHUNK = 256 * 1024


_PICKLE = b"\x80"  # how every pickle of protocol 2 and later begins; a zlib stream begins 0x78


def _decode(frame: bytes) -> bytes:
    """A frame's pickle: sent as it is, or compressed (zlib) by managers before this
    one. Frames are no longer compressed: what is big in them (entries, snapshot
    chunks) is sealed at rest (AES-GCM), so incompressible, and ``zlib.compress``
    releases the GIL, after which the Raft thread waited for the event loop to give it
    back (0.35 s of the leader's Raft thread for 3,000 frames, 2.3 MB, in a 10,000-task
    deploy; 1.7 ms of CPU per 100 KB besides)."""
    return frame if frame[:1] == _PICKLE else zlib.decompress(frame)


class TlsPolicy:
    """What the transport needs from the node: fresh TLS contexts (certificates
    renew) and a verdict on each peer certificate."""

    def __init__(self, server_context: Callable[[], ssl.SSLContext],
                 client_context: Callable[[], ssl.SSLContext],
                 authorize_peer: Callable[[bytes], str | None], source_address: str | None = None):
        self.server_context = server_context
        self.client_context = client_context
        # Outgoing connections leave from the node's own address, as they would from
        # its own host (and so that partitions between loopback addresses work).
        self.source_address = source_address
        # Returns None when the DER certificate may speak Raft, else the reason.
        self.authorize_peer = authorize_peer


class TlsConnection:
    """One TLS connection driven by pysyncobj's poller."""

    def __init__(self, poller, policy: TlsPolicy, timeout: float, sock: ssl.SSLSocket | None = None,
                 peer: str = "?"):
        self.encryptor = None
        self.sendRandKey = None
        self.recvRandKey = None
        self.recvLastTimestamp = 0
        self._poller = poller
        self._policy = policy
        self._timeout = timeout
        self._peer = peer
        self._on_message = None
        self._on_connected = None
        self._on_disconnected = None
        self._read_buffer = bytearray()
        self._write_buffer = bytearray()
        self._last_read = time.monotonic()
        self._tcp_connecting = False
        self._handshaking = False
        self._sock: socket.socket | None = None
        self._fileno: int | None = None
        self._state = CONNECTION_STATE.DISCONNECTED
        if sock is not None:  # accepted by the server: handshake first
            self._adopt(sock, handshaking=True)

    # -- the interface pysyncobj uses ------------------------------------------------
    @property
    def state(self):
        return self._state

    def fileno(self):
        return self._fileno

    def setOnConnectedCallback(self, cb):
        self._on_connected = cb

    def setOnMessageReceivedCallback(self, cb):
        self._on_message = cb

    def setOnDisconnectedCallback(self, cb):
        self._on_disconnected = cb

    def getSendBufferSize(self):
        return len(self._write_buffer)

    def connect(self, host, port) -> bool:
        if host is None:
            return False
        self._reset()
        self._peer = f"{host}:{port}"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        raw = socket.socket(family, socket.SOCK_STREAM)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setblocking(False)
        try:
            if self._policy.source_address:
                raw.bind((self._policy.source_address, 0))
            raw.connect((host, port))
        except OSError as err:
            if err.errno not in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                raw.close()
                return False
        self._sock = raw
        self._fileno = raw.fileno()
        self._tcp_connecting = True
        self._state = CONNECTION_STATE.CONNECTING
        self._last_read = time.monotonic()
        self._subscribe(write=True)
        return True

    def send(self, message) -> None:
        if self.sendRandKey:
            message = (self.sendRandKey, message)
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)  # not compressed: see _decode
        if self.encryptor:
            data = self.encryptor.encrypt_at_time(data, int(time.monotonic()))
        self._write_buffer += _FRAME_HEADER.pack(len(data)) + data
        if self._state == CONNECTION_STATE.CONNECTED:
            self._flush()

    def disconnect(self) -> None:
        notify = self._on_disconnected is not None and self._state != CONNECTION_STATE.DISCONNECTED
        self._reset()
        if notify:
            self._on_disconnected()

    # -- internals ---------------------------------------------------------------------
    def _reset(self) -> None:
        self.sendRandKey = None
        self.recvRandKey = None
        self.recvLastTimestamp = 0
        if self._fileno is not None:
            self._poller.unsubscribe(self._fileno)
            self._fileno = None
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        self._read_buffer = bytearray()
        self._write_buffer = bytearray()
        self._tcp_connecting = False
        self._handshaking = False
        self._state = CONNECTION_STATE.DISCONNECTED

    def _adopt(self, sock: ssl.SSLSocket, handshaking: bool) -> None:
        self._sock = sock
        self._fileno = sock.fileno()
        self._handshaking = handshaking
        self._state = CONNECTION_STATE.CONNECTING
        self._last_read = time.monotonic()
        self._subscribe(write=True)

    def _subscribe(self, write: bool) -> None:
        mask = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR
        if write:
            mask |= POLL_EVENT_TYPE.WRITE
        self._poller.subscribe(self._fileno, self._on_event, mask)

    def _on_event(self, descr, event_type) -> None:
        if descr != self._fileno:
            self._poller.unsubscribe(descr)
            return
        if event_type & POLL_EVENT_TYPE.ERROR:
            self.disconnect()
            return
        if time.monotonic() - self._last_read > self._timeout:
            self.disconnect()
            return
        if self._tcp_connecting:
            if self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.disconnect()
                return
            self._tcp_connecting = False
            try:
                self._sock = self._policy.client_context().wrap_socket(
                    self._sock, server_side=False, do_handshake_on_connect=False)
            except (OSError, ssl.SSLError) as err:
                log.warning("raft: TLS setup towards %s failed: %s", self._peer, err)
                self.disconnect()
                return
            self._handshaking = True
        if self._handshaking:
            self._continue_handshake()
            return
        self._pump()

    def _continue_handshake(self) -> None:
        try:
            self._sock.do_handshake()
        except ssl.SSLWantReadError:
            self._subscribe(write=False)
            return
        except ssl.SSLWantWriteError:
            self._subscribe(write=True)
            return
        except (ssl.SSLError, OSError) as err:
            log.warning("raft: TLS handshake with %s refused: %s", self._peer, err)
            self.disconnect()
            return
        self._handshaking = False
        der = self._sock.getpeercert(binary_form=True)
        reason = "no certificate" if not der else self._policy.authorize_peer(der)
        if reason is not None:
            log.warning("raft: refusing connection with %s: %s", self._peer, reason)
            self.disconnect()
            return
        self._state = CONNECTION_STATE.CONNECTED
        self._last_read = time.monotonic()
        if self._on_connected is not None:  # outgoing: pysyncobj introduces us now
            self._on_connected()
        if self._state == CONNECTION_STATE.CONNECTED:
            self._pump()

    def _pump(self) -> None:
        self._flush()
        if self._state != CONNECTION_STATE.CONNECTED:
            return
        self._read_available()
        if self._state != CONNECTION_STATE.CONNECTED:
            return
        while self._state == CONNECTION_STATE.CONNECTED:
            message = self._next_message()
            if message is None:
                break
            if self._on_message is not None:
                self._on_message(message)
        if self._state == CONNECTION_STATE.CONNECTED:
            self._subscribe(write=bool(self._write_buffer))

    def _flush(self) -> None:
        while self._write_buffer and self._sock is not None:
            try:
                sent = self._sock.send(self._write_buffer[:_READ_CHUNK])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                self._subscribe(write=True)
                return
            except OSError:
                self.disconnect()
                return
            if sent <= 0:
                return
            del self._write_buffer[:sent]

    def _read_available(self) -> None:
        while self._sock is not None:
            try:
                chunk = self._sock.recv(_READ_CHUNK)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            except (ssl.SSLError, OSError):
                self.disconnect()
                return
            if not chunk:
                self.disconnect()
                return
            self._read_buffer += chunk
            self._last_read = time.monotonic()

    def _next_message(self):
        if len(self._read_buffer) < _FRAME_HEADER.size:
            return None
        (length,) = _FRAME_HEADER.unpack_from(self._read_buffer)
        if length > MAX_FRAME_BYTES:
            log.warning("raft: %s sent a %d-byte frame; dropping the connection", self._peer, length)
            self.disconnect()
            return None
        if len(self._read_buffer) < _FRAME_HEADER.size + length:
            return None
        data = bytes(self._read_buffer[_FRAME_HEADER.size:_FRAME_HEADER.size + length])
        del self._read_buffer[:_FRAME_HEADER.size + length]
        try:
            if self.encryptor:
                stamp = self.encryptor.extract_timestamp(data)
                if stamp < self.recvLastTimestamp:
                    raise ValueError("replayed frame")
                self.recvLastTimestamp = stamp
                data = self.encryptor.decrypt(data)
            message = pickle.loads(_decode(data))
            if self.recvRandKey:
                rand_key, message = message
                if rand_key != self.recvRandKey:
                    raise ValueError("session key mismatch")
        except Exception as err:  # an authenticated peer sent garbage: drop it, loudly
            log.warning("raft: undecodable frame from %s (%s); dropping the connection", self._peer, err)
            self.disconnect()
            return None
        return message


class _TlsServer:
    """Accepts Raft connections on pysyncobj's poller and wraps them in TLS."""

    def __init__(self, poller, host: str, port: int, policy: TlsPolicy, on_new_connection, timeout: float):
        self._poller = poller
        self._address = (host, int(port))
        self._policy = policy
        self._on_new_connection = on_new_connection
        self._timeout = timeout
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        try:
            sock.bind(self._address)
            sock.listen(16)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._poller.subscribe(sock.fileno(), self._on_accept, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)

    def unbind(self) -> None:
        if self._sock is not None:
            self._poller.unsubscribe(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _on_accept(self, descr, event_type) -> None:
        if self._sock is None:
            return
        while True:
            try:
                raw, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("raft: accept failed: %s", err)
                return
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.setblocking(False)
            try:
                tls = self._policy.server_context().wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            except (OSError, ssl.SSLError) as err:
                log.warning("raft: TLS setup for %s failed: %s", addr, err)
                raw.close()
                continue
            conn = TlsConnection(self._poller, self._policy, self._timeout, sock=tls, peer=f"{addr[0]}:{addr[1]}")
            self._on_new_connection(conn)


class TlsTransport(TCPTransport):
    """pysyncobj's TCP transport with every connection made of :class:`TlsConnection`.

    The SyncObj using it must carry a ``tls_policy`` attribute (set before
    ``SyncObj.__init__`` runs, which constructs the transport).
    """

    def _createServer(self):
        conf = self._syncObj.conf
        address = conf.bindAddress or self._selfNode.address
        host, port = address.rsplit(":", 1)
        self._server = _TlsServer(self._syncObj._poller, host, int(port), self._syncObj.tls_policy,
                                  self._onNewIncomingConnection, conf.connectionTimeout)

    def addNode(self, node):
        self._nodes.add(node)
        self._nodeAddrToNode[node.address] = node
        if self._shouldConnect(node):
            conn = TlsConnection(self._syncObj._poller, self._syncObj.tls_policy,
                                 self._syncObj.conf.connectionTimeout, peer=node.address)
            conn.encryptor = self._syncObj.encryptor
            conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
            conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
            self._connections[node] = conn
