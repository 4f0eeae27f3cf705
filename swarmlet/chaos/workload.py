"""The clients and monitors that run while faults are injected, each on a thread of
its own (the API client is blocking) and each appending to the shared History. Times
are ``clock()`` readings: seconds since the run began, one monotonic clock."""
from __future__ import annotations

import base64
import json
import random
import select
import subprocess
import sys
import threading
import time
from typing import Callable

from swarmlet.chaos.history import (READ_ERROR, READ_FOUND, READ_MISSING, WRITE_FAILED, WRITE_OK, WRITE_UNKNOWN,
                                    History, HttpSample, LeaderSample, Read, ReplicaSample, TaskSample, Write)
from swarmlet.cli.client import ApiError, Attempt, Client, ClusterUnreachable

WRITE_TIMEOUT_S = 2.0      # per manager tried; the store's own deadline is 5 s
READ_TIMEOUT_S = 2.0
STATUS_POLL_S = 0.1        # each manager's own view of the leader
STATUS_TIMEOUT_S = 0.5
TASK_POLL_S = 0.5
HTTP_POLL_S = 0.1          # one request every this long, round robin over the URLs
HTTP_TIMEOUT_S = 1.0
PROBER_READY_TIMEOUT_S = 30.0  # a Python process starting in a namespace, on a loaded machine
CHAOS_LABEL = "swarmlet.chaos.run"
PAYLOAD = base64.b64encode(b"chaos").decode()


class ProberError(Exception):
    pass


def write_outcome(error: Exception) -> str:
    """An error's meaning for the checker: certainly not committed, or unknown."""
    if isinstance(error, ApiError) and "no quorum" in str(error) and "not committed" in str(error):
        return WRITE_FAILED
    if isinstance(error, ApiError) and error.status == 400:
        return WRITE_FAILED  # refused as invalid: never proposed
    return WRITE_UNKNOWN


class Workload:
    """``writers`` clients creating configs with unique names (the request ID is the
    name), a reader re-reading acknowledged names linearisably through a random
    manager, one status poller per manager, a task-table poller, and with HTTP URLs
    the prober (swarmlet/chaos/probe.py, a process run through ``client_command``:
    where the target's outside clients are)."""

    def __init__(self, history: History, clock: Callable[[], float], make_client: Callable[..., Client],
                 managers: list[str], run_id: str, writers: int = 4, seed: int = 0,
                 service: str | None = None, http_urls: list[str] | None = None,
                 client_command: Callable[[list[str]], list[str]] = lambda argv: argv):
        self.history = history
        self.clock = clock
        self.make_client = make_client
        self.managers = managers
        self.run_id = run_id
        self.writers = writers
        self.service = service
        self.http_urls = list(http_urls or [])
        self.client_command = client_command
        self.prober: subprocess.Popen | None = None
        self.rng = random.Random(seed)
        self.acked: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start every client and monitor; returns once the HTTP prober (if any) has begun."""
        if self.http_urls:
            self._start_prober()
        for number in range(self.writers):
            self._spawn(self._writer, number)
        self._spawn(self._reader)
        for host in self.managers:
            self._spawn(self._status_poller, host)
        self._spawn(self._task_poller)
        if self.prober is not None:
            self._spawn(self._http_reader, self.prober)

    def _start_prober(self) -> None:
        self.prober = subprocess.Popen(
            self.client_command([sys.executable, "-m", "swarmlet.chaos.probe", "--interval", str(HTTP_POLL_S),
                                 "--timeout", str(HTTP_TIMEOUT_S), *self.http_urls]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.prober.stdout], [], [], PROBER_READY_TIMEOUT_S)
        first = self.prober.stdout.readline() if ready else ""
        if '"ready"' not in first:
            self.prober.kill()
            _, error = self.prober.communicate()
            self.prober = None
            raise ProberError(f"the HTTP prober did not start within {PROBER_READY_TIMEOUT_S:g}s: "
                              f"{error.strip()[-300:] or first.strip() or 'no output'}")

    def stop(self, timeout: float = 15.0) -> None:
        self.stopping.set()
        if self.prober is not None:
            self.prober.stdin.close()  # the prober's signal to stop; it answers what it began
            try:
                self.prober.wait(HTTP_TIMEOUT_S + 5)
            except subprocess.TimeoutExpired:
                self.prober.kill()
                self.prober.wait()
            self.prober.stderr.close()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"chaos-{target.__name__}")
        self.threads.append(thread)
        thread.start()

    # -- writes and reads ----------------------------------------------------------------------
    def _writer(self, number: int) -> None:
        # Each writer starts its list at another manager, so one stuck manager slows one writer.
        hosts = self.managers[number % len(self.managers):] + self.managers[:number % len(self.managers)]
        client = self.make_client(hosts, timeout=WRITE_TIMEOUT_S)
        counter = 0
        while not self.stopping.is_set():
            name = f"chaos-{self.run_id}-{number}-{counter}"
            counter += 1
            start = self.clock()
            attempts: list[Attempt] = []
            try:
                answer = client.call("POST", "/v1/configs", {"name": name, "data": PAYLOAD, "request_id": name,
                                                             "labels": {CHAOS_LABEL: self.run_id}},
                                     attempts=attempts)
            except (ApiError, ClusterUnreachable) as err:
                self._append_write(Write(name, start, self.clock(), write_outcome(err), str(err)[:200],
                                         self._attempts(attempts)))
                continue
            end = self.clock()
            self._append_write(Write(name, start, end, WRITE_OK, attempts=self._attempts(attempts),
                                     index=(answer or {}).get("index")))
            with self.lock:
                self.acked.append(name)

    def _attempts(self, attempts: list[Attempt]) -> tuple:
        """The client's attempts on the run's clock."""
        offset = time.monotonic() - self.clock()
        return tuple({"host": a.host, "start": round(a.start - offset, 3), "end": round(a.end - offset, 3),
                      "status": a.status, "error": a.error} for a in attempts)

    def _append_write(self, write: Write) -> None:
        with self.lock:
            self.history.writes.append(write)

    def _reader(self) -> None:
        clients = {host: self.make_client([host], timeout=READ_TIMEOUT_S) for host in self.managers}
        while not self.stopping.is_set():
            with self.lock:
                name = self.rng.choice(self.acked) if self.acked else None
            if name is None:
                self.stopping.wait(0.01)
                continue
            host = self.rng.choice(self.managers)
            start = self.clock()  # after the name was acknowledged: it was in `acked`
            try:
                clients[host].call("GET", f"/v1/configs/{name}?consistent=1")
                outcome = READ_FOUND
            except ApiError as err:
                outcome = READ_MISSING if err.status == 404 else READ_ERROR
            except ClusterUnreachable:
                outcome = READ_ERROR
            with self.lock:
                self.history.reads.append(Read(name, start, self.clock(), outcome, host))

    # -- monitors -----------------------------------------------------------------------------------
    def _status_poller(self, host: str) -> None:
        client = self.make_client([host], timeout=STATUS_TIMEOUT_S)
        while not self.stopping.is_set():
            t = self.clock()
            try:
                status = client.call("GET", "/v1/cluster/status?local=1")
                sample = LeaderSample(t, status.get("answered_by"), status.get("leader"), status.get("term"))
                with self.lock:
                    self.history.leaders.append(sample)
            except (ApiError, ClusterUnreachable):
                pass  # down, frozen or partitioned: no view from it
            self.stopping.wait(STATUS_POLL_S)

    def _task_poller(self) -> None:
        client = self.make_client(self.managers, timeout=2.0)
        keys = ("id", "service_id", "slot", "node_id", "desired_state", "state")
        while not self.stopping.is_set():
            t = self.clock()
            try:
                tasks = client.call("GET", "/v1/tasks")
                sample = TaskSample(t, tuple({k: task.get(k) for k in keys} for task in tasks))
                replicas = None
                if self.service:
                    service = client.call("GET", f"/v1/services/{self.service}")
                    replicas = ReplicaSample(self.clock(), service["replicas"], service["running"])
                with self.lock:
                    self.history.tasks.append(sample)
                    if replicas:
                        self.history.replicas.append(replicas)
            except (ApiError, ClusterUnreachable):
                pass
            self.stopping.wait(TASK_POLL_S)

    def _http_reader(self, prober: subprocess.Popen) -> None:
        # The prober stamps each request with the machine's monotonic clock, which the
        # run's clock counts from.
        began = time.monotonic() - self.clock()
        for line in prober.stdout:
            try:
                answer = json.loads(line)
                sample = HttpSample(round(answer["t"] - began, 4), bool(answer["ok"]), answer.get("error", ""),
                                    answer.get("url", ""))
            except (ValueError, KeyError, TypeError):
                continue
            with self.lock:
                self.history.http.append(sample)
        prober.stdout.close()
