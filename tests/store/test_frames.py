"""Raft frames are pickles sealed with the cluster key, no longer compressed (what is
big in them is sealed at rest, so incompressible; ``zlib.compress`` cost the leader's
Raft thread its GIL turn: docs/performance.md, ninth session). Frames from managers
that still compress are read all the same."""
from __future__ import annotations

import pickle
import zlib

from cryptography.fernet import Fernet

from swarmlet.store.transport import TlsConnection, TlsPolicy


def connection(key) -> TlsConnection:
    conn = TlsConnection(poller=None, policy=TlsPolicy(lambda: None, lambda: None, lambda der: "none"), timeout=5.0)
    conn.encryptor = key  # not connected: send only buffers, and a read takes what is put in its buffer
    return conn


MESSAGE = {"type": "append_entries", "term": 2, "commit_index": 7, "entries": [(b"\x9c" * 4096, 5, 2)],
           "prevLogIdx": 4, "prevLogTerm": 2}


def test_a_frame_is_a_sealed_pickle_and_reads_back():
    key = Fernet(Fernet.generate_key())
    sender, reader = connection(key), connection(key)
    sender.send(MESSAGE)
    frame = bytes(sender._write_buffer)
    assert pickle.loads(key.decrypt(frame[4:])) == MESSAGE  # sealed, not compressed
    reader._read_buffer += frame
    assert reader._next_message() == MESSAGE


def test_a_compressed_frame_from_an_older_manager_is_read_too():
    key = Fernet(Fernet.generate_key())
    body = key.encrypt(zlib.compress(pickle.dumps(MESSAGE, protocol=pickle.HIGHEST_PROTOCOL), 1))
    reader = connection(key)
    reader._read_buffer += len(body).to_bytes(4, "big") + body
    assert reader._next_message() == MESSAGE
