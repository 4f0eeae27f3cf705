"""How the unlock key reaches a locked manager: the node, started on a locked data dir,
starts neither Raft nor its API (its TLS key is sealed, so it could not present its
certificate anyway) and listens on one Unix socket, ``unlock.sock`` in its data dir
(0600 in a 0700 directory: only the node's own account, or root, reaches it), for the
key. ``swarmlet unlock`` (or ``agent --unlock-key-file``, ``local start``) writes the
key as one line and reads one JSON line back: ``{"ok": true}`` or ``{"error": …}``.
A wrong key is refused, logged, and the node keeps waiting. This is Swarm's shape:
``docker swarm unlock`` talks to the local engine's socket, never over the network.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
import tempfile
import time
from pathlib import Path

from swarmlet.ca.unlock import UnlockKeyError
from swarmlet.node.config import DataDir
from swarmlet.private import make_private_dir

log = logging.getLogger("swarmlet.node")

# A Unix socket's path is at most 107 bytes (sun_path); a data dir deeper than this
# gets its socket in a private directory under the system's temporary one instead.
MAX_SOCKET_PATH = 100
MAX_KEY_LINE = 256
UNLOCK_TIMEOUT = 10.0


class UnlockFailed(Exception):
    """The key was refused, or no locked node listens; the message says which."""


def socket_path(data_dir: DataDir) -> Path:
    path = data_dir.unlock_socket_path
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(data_dir.path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"swarmlet-unlock-{digest}" / "unlock.sock"


async def wait_for_unlock(data_dir: DataDir, stop: asyncio.Event) -> bool:
    """Serve the unlock socket until the right key arrives (True) or ``stop`` is set (False)."""
    path = socket_path(data_dir)
    make_private_dir(path.parent)
    path.unlink(missing_ok=True)  # left by a node that was killed while locked
    unlocked = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), UNLOCK_TIMEOUT)
            if not line.endswith(b"\n") or len(line) > MAX_KEY_LINE:
                raise UnlockKeyError("send the unlock key as one line")
            data_dir.unlock(line.decode(errors="replace").strip())
            reply = {"ok": True}
            log.info("unlocked: the key-encryption key is open; starting")
            unlocked.set()
        except (UnlockKeyError, asyncio.TimeoutError, OSError) as err:
            log.warning("refused an unlock attempt: %s", err or "no key within the time")
            reply = {"error": str(err) or "no key sent"}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            writer.close()
        except OSError:
            pass

    server = await asyncio.start_unix_server(answer, path=str(path))
    path.chmod(0o600)
    log.warning("this manager is locked (autolock): Raft and the API start once it is given its unlock key; "
                "run `swarmlet unlock --data-dir %s`", data_dir.path)
    try:
        waiters = [asyncio.ensure_future(unlocked.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
    finally:
        server.close()
        await server.wait_closed()
        path.unlink(missing_ok=True)
    return unlocked.is_set()


def send_unlock_key(data_dir: DataDir, unlock_key: str, timeout: float = UNLOCK_TIMEOUT) -> None:
    """Give the locked node of ``data_dir`` its key; waits up to ``timeout`` for the node
    to listen (it may just be starting). UnlockFailed with the node's answer otherwise."""
    path = socket_path(data_dir)
    deadline = time.monotonic() + timeout
    while True:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(timeout)
        try:
            client.connect(str(path))
            break
        except (FileNotFoundError, ConnectionRefusedError):
            client.close()
            if time.monotonic() > deadline:
                raise UnlockFailed(f"no locked node of {data_dir.path} is waiting for its key (nothing listens on "
                                   f"{path}): is it running, and locked?") from None
            time.sleep(0.05)
    try:
        client.sendall(unlock_key.strip().encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = client.recv(4096)
            if not chunk:
                break
            answer += chunk
    except OSError as err:
        raise UnlockFailed(f"the node of {data_dir.path} did not answer: {err}") from None
    finally:
        client.close()
    try:
        reply = json.loads(answer)
    except ValueError:
        raise UnlockFailed(f"the node of {data_dir.path} sent no answer") from None
    if not reply.get("ok"):
        raise UnlockFailed(reply.get("error") or "refused")
