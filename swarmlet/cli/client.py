"""How the CLI reaches a cluster.

Managers come from ``--host`` / ``SWARMLET_HOST`` (comma-separated), else from the
context directory's ``hosts`` file; the admin certificate from the context directory
(``--context`` / ``SWARMLET_CONTEXT``, default ``~/.config/swarmlet``), laid out as a
node's certs (swarm-root-ca.crt, swarm-node.crt, swarm-node.key). Given several
managers, a call that cannot reach one tries the next, so the CLI keeps working
while any manager is up.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import click

from swarmlet.api.paging import MAX_PAGE_ITEMS
from swarmlet.ca.layout import CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE
from swarmlet.ca.tls import client_context_from_files
from swarmlet.api.addresses import DEFAULT_API_PORT, split_address

DEFAULT_CONTEXT = Path.home() / ".config" / "swarmlet"


class ClusterUnreachable(click.ClickException):
    pass


class ApiError(click.ClickException):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, hosts: list[str], context_dir: Path, timeout: float = 10.0):
        if not hosts:
            raise click.UsageError("no manager to talk to: pass --host, set SWARMLET_HOST, or put a 'hosts' file in "
                                   f"the context directory ({context_dir})")
        self.hosts = hosts
        self.timeout = timeout
        self._kept = threading.local()  # host -> connection, per thread (http.client's are not thread-safe)
        directory = Path(context_dir)
        try:
            self._ssl = client_context_from_files(directory / CA_CERT_FILE, directory / NODE_CERT_FILE,
                                                  directory / NODE_KEY_FILE)
        except FileNotFoundError:
            raise click.UsageError(f"no admin certificate in {context_dir}: point --context/SWARMLET_CONTEXT at the "
                                   "admin directory that `swarmlet init` created") from None
        except ssl.SSLError:
            # A pair being replaced (`admin renew`) or a broken one: the store's careful
            # read waits out the first and names the second (it needs cryptography, so
            # only this path pays for importing it).
            self._ssl = self._context_from_store(directory)

    @staticmethod
    def _context_from_store(directory: Path) -> ssl.SSLContext:
        from swarmlet.ca import CertificateError, NodeCertStore, client_context

        try:
            return client_context(*NodeCertStore(directory).load())
        except CertificateError as err:
            raise click.UsageError(f"the admin certificate in {directory} cannot be used: {err}") from None

    def call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None,
             raw: bool = False, attempts: list | None = None):
        """The JSON answer of the first manager that answers (its bytes with ``raw``).

        A manager that does not answer in time is passed over for the next one, the
        same request again (a write carrying a request ID stays applied once). With
        ``attempts``, one :class:`Attempt` per manager tried is appended to it: the
        chaos checker reports where a write went and what each manager said."""
        errors = []
        payload = json.dumps(body).encode() if body is not None else None
        for host in self.hosts:
            began = time.monotonic()
            try:
                response, payload_bytes = self._exchange(host, method, path, payload, timeout or self.timeout)
            except (OSError, socket.timeout, ssl.SSLError, http.client.HTTPException) as err:
                errors.append(f"{host}: {err}")
                _note(attempts, host, began, None, str(err) or type(err).__name__)
                continue
            if raw and response.status < 400:
                _note(attempts, host, began, response.status, "")
                return payload_bytes
            data = json.loads(payload_bytes) if payload_bytes else None
            if response.status >= 400:
                message = (data or {}).get("error", f"HTTP {response.status}")
                _note(attempts, host, began, response.status, message)
                if response.status in (502, 503) and "not yet received" in message:
                    errors.append(f"{host}: {message}")
                    continue
                raise ApiError(response.status, message)
            _note(attempts, host, began, response.status, "", data)
            return data
        raise ClusterUnreachable("no manager answered: " + "; ".join(errors))

    def _exchange(self, host: str, method: str, path: str, payload: bytes | None, timeout: float):
        """One request to one manager over this thread's kept connection to it (a TLS
        handshake per request was two thirds of a leader's loop under an API-heavy
        load), or a new one. A kept connection the manager closed meanwhile (its
        keep-alive timeout, a restart) is replaced once; any other failure closes it."""
        kept = self._kept.__dict__.setdefault("connections", {})
        connection = kept.pop(host, None)
        if connection is not None:
            connection.timeout = timeout
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            try:
                return self._request(kept, host, connection, method, path, payload)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                pass  # closed by the manager while kept: once more on a new connection
        ip, port = split_address(host, DEFAULT_API_PORT)
        connection = http.client.HTTPSConnection(ip, port, context=self._ssl, timeout=timeout)
        return self._request(kept, host, connection, method, path, payload)

    @staticmethod
    def _request(kept: dict, host: str, connection, method: str, path: str, payload: bytes | None):
        """(response, its body); the connection kept for ``host`` if it stays open, else closed."""
        try:
            connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            payload_bytes = response.read()
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            kept[host] = connection
        return response, payload_bytes

    def close(self) -> None:
        """Close this thread's kept connections (others close when their threads end)."""
        for connection in self._kept.__dict__.pop("connections", {}).values():
            connection.close()

    def list_all(self, path: str, timeout: float | None = None) -> list[dict]:
        """Every object of a paged listing (``/v1/tasks``, ``/v1/nodes``, ``/v1/services``),
        a page of ``MAX_PAGE_ITEMS`` at a time (api/paging.py), in ID order; a manager
        from before paging answers the whole list at once, which is taken as it is."""
        items: list[dict] = []
        cursor = None
        separator = "&" if "?" in path else "?"
        while True:
            query = f"limit={MAX_PAGE_ITEMS}" + (f"&cursor={quote(cursor, safe='')}" if cursor else "")
            answer = self.call("GET", f"{path}{separator}{query}", timeout=timeout)
            if isinstance(answer, list):
                return answer
            items += answer["items"]
            cursor = answer["next"]
            if cursor is None:
                return items

    def connection(self, host: str, timeout: float | None = None) -> http.client.HTTPSConnection:
        """A connection to one manager (for streams that pick their manager themselves)."""
        ip, port = split_address(host, DEFAULT_API_PORT)
        return http.client.HTTPSConnection(ip, port, context=self._ssl, timeout=timeout)

    def stream(self, path: str, timeout: float | None = None):
        """The lines of a streamed text answer (service logs), from the first manager
        that answers."""
        errors = []
        for host in self.hosts:
            ip, port = split_address(host, DEFAULT_API_PORT)
            connection = http.client.HTTPSConnection(ip, port, context=self._ssl, timeout=timeout or self.timeout)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
            except (OSError, socket.timeout, ssl.SSLError, http.client.HTTPException) as err:
                errors.append(f"{host}: {err}")
                connection.close()
                continue
            try:
                if response.status >= 400:
                    raw = response.read()
                    raise ApiError(response.status, (json.loads(raw) if raw else {}).get("error", f"HTTP {response.status}"))
                for raw_line in response:
                    yield raw_line.decode("utf-8", errors="replace").rstrip("\n")
                return
            finally:
                connection.close()
        raise ClusterUnreachable("no manager answered: " + "; ".join(errors))


@dataclass(frozen=True)
class Attempt:
    """One manager tried by ``Client.call``: when (``time.monotonic()``), its HTTP status
    (None: no answer, ``error`` says why) and, for a success, the answer."""

    host: str
    start: float
    end: float
    status: int | None
    error: str = ""
    answer: object = None


def _note(attempts: list | None, host: str, began: float, status: int | None, error: str, answer=None) -> None:
    if attempts is not None:
        attempts.append(Attempt(host, began, time.monotonic(), status, error[:200], answer))


def resolve_hosts(host_option: str | None, context_dir: Path) -> list[str]:
    raw = host_option or os.environ.get("SWARMLET_HOST")
    if not raw and (context_dir / "hosts").exists():
        raw = ",".join((context_dir / "hosts").read_text().split())
    return [h.strip() for h in (raw or "").split(",") if h.strip()]


def resolve_context(context_option: str | None) -> Path:
    return Path(context_option or os.environ.get("SWARMLET_CONTEXT") or DEFAULT_CONTEXT)


def client_options(command):
    """--host/--context on every command that talks to a cluster."""
    command = click.option("--context", "context_dir", envvar="SWARMLET_CONTEXT", default=None,
                           help="Directory with the admin certificate (and a 'hosts' file).")(command)
    command = click.option("--host", "-H", envvar="SWARMLET_HOST", default=None,
                           help="Manager API addresses, comma-separated (IP[:PORT]).")(command)
    return command


def make_client(host: str | None, context_dir: str | None) -> Client:
    context = resolve_context(context_dir)
    return Client(resolve_hosts(host, context), context)
