"""The CLI's API client keeps one TLS connection per manager and thread (a handshake per
request was two thirds of a leader's loop under an API-heavy load), and replaces a kept
connection that the manager closed meanwhile. A real TLS server on 127.0.0.1 with the
cluster CA's certificates; it counts the connections it accepts."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from swarmlet.ca import ROLE_ADMIN, ROLE_MANAGER, NodeCertStore, RootCA, generate_key_pem, make_csr, server_context
from swarmlet.cli.client import Client


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.accepted += 1
            self.server.open.append(self.connection)

    def do_GET(self):
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    ca = RootCA.create("client-connections")
    key = generate_key_pem()
    server_cert = ca.issue(make_csr(key), "manager-1", ROLE_MANAGER, ["127.0.0.1"])
    admin_key = generate_key_pem()
    NodeCertStore(tmp_path / "admin").save(ca.cert_pem, ca.issue(make_csr(admin_key), "admin-1", ROLE_ADMIN), admin_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.accepted, server.open, server.lock = 0, [], threading.Lock()
    server.socket = server_context(ca.cert_pem, server_cert, key).wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, Client([f"127.0.0.1:{server.server_address[1]}"], tmp_path / "admin", timeout=5)
    server.shutdown()
    server.server_close()


def test_calls_share_one_connection_and_survive_the_manager_closing_it(served):
    server, client = served
    assert [client.call("GET", f"/v1/x{i}")["path"] for i in range(5)] == [f"/v1/x{i}" for i in range(5)]
    assert server.accepted == 1
    with server.lock:  # the manager closes the idle kept connection (a keep-alive timeout, a restart)
        for connection in server.open:
            connection.shutdown(2)
            connection.close()
    assert client.call("GET", "/v1/after")["path"] == "/v1/after"
    assert server.accepted == 2
    client.close()
    assert client.call("GET", "/v1/again")["path"] == "/v1/again" and server.accepted == 3


def test_each_thread_has_its_own_connection(served):
    server, client = served
    answers = []
    threads = [threading.Thread(target=lambda: answers.extend(client.call("GET", "/v1/t")["path"] for _ in range(3)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == ["/v1/t"] * 9 and server.accepted == 3
