"""The dispatcher in-process: real WebSocket sessions (aiohttp's test server) against an
in-memory store, speaking the protocol of swarmlet.api.session."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from swarmlet.api.views import Node, Task
from swarmlet.store.state import freeze
from swarmlet.api.objects import NODE_DOWN, NODE_READY, TAKEOVER_GRACE_FACTOR
from swarmlet.api.session import (SESSION_PATH, SESSION_PROTOCOL, AssignmentChanges, Assignments, AssignmentSet,
                                  Heartbeat, HeartbeatAck, Hello, Log, LogEnd, Logs,
                                  LogsCancel, Redirect, Status, Welcome, pack, unpack)
from swarmlet.manager.dispatcher.dispatcher import Dispatcher, nodes_to_mark_down
from swarmlet.manager.leaderloop import drain
from swarmlet.store import NoQuorum

LEADER_API = "10.0.0.1:2377"
REPLY_TIMEOUT = 5.0


@pytest.fixture
async def dispatcher(store):
    dispatcher = Dispatcher(store, lambda: LEADER_API)
    yield dispatcher
    await dispatcher.stop()


@pytest.fixture
async def client(dispatcher):
    async def session(request):  # the API layer verified the node's certificate; here the header names it
        return await dispatcher.serve_session(request, request.headers["X-Node"])

    app = web.Application()
    app.router.add_get(SESSION_PATH, session)
    async with TestClient(TestServer(app)) as client:
        yield client


async def connect(client, node_id: str, description: dict | None = None, protocol: int = 1):
    ws = await client.ws_connect(SESSION_PATH, headers={"X-Node": node_id})
    await ws.send_bytes(pack(Hello(description=description or {"hostname": node_id}, protocol=protocol)))
    return ws


async def receive(ws):
    return unpack(await ws.receive_bytes(timeout=REPLY_TIMEOUT))


async def next_change(queue: asyncio.Queue):
    """The next applied transaction, leaving out leadership claims (a leader loop's first write)."""
    while True:
        event = await asyncio.wait_for(queue.get(), REPLY_TIMEOUT)
        if not all(change.kind == "leadership" for change in event.changes):
            return event


def task_spec(node_id: str, **fields) -> dict:
    return {"node_id": node_id, "desired_state": "running", "service_id": "svc", "container": {"image": "busybox"},
            **fields}


async def test_a_follower_redirects_the_node_to_the_leader(store, client):
    store.is_leader = False
    await store.add_node("n1")
    ws = await client.ws_connect(SESSION_PATH, headers={"X-Node": "n1"})
    assert await receive(ws) == Redirect(leader=LEADER_API)
    assert (await ws.receive(timeout=REPLY_TIMEOUT)).type == WSMsgType.CLOSE


async def test_hello_marks_the_node_ready_and_welcomes_it_with_its_assignment_set(store, client):
    node = await store.add_node("n1")
    await store.add("task", "t1", task_spec("n1"), {"state": "assigned"})
    await store.add("task", "t2", task_spec("n2"), {"state": "assigned"})
    ws = await connect(client, "n1", {"hostname": "one", "engine_labels": {}})
    assert await receive(ws) == Welcome(heartbeat_period=0.2, managers=[], node={"spec": node["spec"]})
    assignments = await receive(ws)
    assert isinstance(assignments, Assignments)
    assert [(t["id"], t["phase"]) for t in assignments.tasks] == [("t1", "new")]
    status = store.raw("node", "n1")["status"]
    assert status["state"] == NODE_READY and status["description"] == {"hostname": "one", "engine_labels": {}}


@pytest.mark.parametrize("first_frame", [pack(Heartbeat()), b"\xc1 not msgpack", pack(Logs("r", "t"))])
async def test_a_session_that_does_not_start_with_hello_is_refused(store, client, first_frame):
    await store.add_node("n1")
    ws = await client.ws_connect(SESSION_PATH, headers={"X-Node": "n1"})
    await ws.send_bytes(first_frame)
    closing = await ws.receive(timeout=REPLY_TIMEOUT)
    assert closing.type == WSMsgType.CLOSE and closing.extra == "malformed hello"
    assert store.raw("node", "n1")["status"]["state"] != NODE_READY


async def test_a_heartbeat_is_answered_with_the_nodes_current_spec(store, client):
    await store.add_node("n1")
    ws = await connect(client, "n1")
    await receive(ws), await receive(ws)  # welcome, assignments
    node = store.raw("node", "n1")
    await store.commit([{"op": "update", "kind": "node", "id": "n1", "version": node["version"],
                         "spec": dict(node["spec"], role="manager")}])
    await ws.send_bytes(pack(Heartbeat()))
    ack = await receive(ws)
    assert isinstance(ack, HeartbeatAck) and ack.node["spec"]["role"] == "manager"


async def test_a_heartbeat_brings_a_node_marked_down_back(store, client):
    await store.add_node("n1")
    ws = await connect(client, "n1")
    await receive(ws), await receive(ws)
    node = store.raw("node", "n1")
    await store.commit([{"op": "update", "kind": "node", "id": "n1", "version": node["version"],
                         "status": dict(node["status"], state=NODE_DOWN)}])
    await ws.send_bytes(pack(Heartbeat()))
    await receive(ws)
    assert store.raw("node", "n1")["status"]["state"] == NODE_READY


async def test_store_changes_push_a_new_assignment_set_to_the_nodes_they_touch(store, dispatcher, client):
    await store.add_node("n1")
    await dispatcher.leadership_changed(True)
    ws = await connect(client, "n1")
    await receive(ws), await receive(ws)
    await store.add("task", "elsewhere", task_spec("n2"), {"state": "assigned"})  # not n1's: nothing sent to n1
    await store.add("task", "t1", task_spec("n1"), {"state": "assigned"})
    pushed = await receive(ws)
    assert isinstance(pushed, Assignments) and [t["id"] for t in pushed.tasks] == ["t1"]
    await store.add("secret", "unused", {"name": "unused", "data": b"x"})  # may touch every node: resent only if changed
    await store.add("task", "t2", task_spec("n1"), {"state": "assigned"})
    pushed = await receive(ws)
    assert [t["id"] for t in pushed.tasks] == ["t1", "t2"] and pushed.secrets == {}


async def test_a_protocol_2_node_gets_a_whole_set_then_only_what_changed(store, dispatcher, client):
    await store.add_node("n1")
    for i in range(3):
        await store.add("task", f"t{i}", task_spec("n1"), {"state": "assigned"})
    await dispatcher.leadership_changed(True)
    ws = await connect(client, "n1", protocol=SESSION_PROTOCOL)
    await receive(ws)  # welcome
    whole = await receive(ws)
    assert isinstance(whole, Assignments) and [t["id"] for t in whole.tasks] == ["t0", "t1", "t2"]
    held = AssignmentSet.of(whole)  # what the node holds, kept as the agent keeps it
    await store.add("task", "elsewhere", task_spec("n2"), {"state": "assigned"})  # not n1's: nothing sent to n1
    await store.add("task", "t3", task_spec("n1"), {"state": "assigned"})
    added = await receive(ws)
    assert isinstance(added, AssignmentChanges) and [t["id"] for t in added.tasks] == ["t3"] and not added.removed
    held.apply(added)
    # accepted: the node took t0 up (only its phase moved, and the node itself moved it), then
    # running: neither is sent; the next message is t1's removal, in sequence
    t0 = store.raw("task", "t0")
    await store.commit([{"op": "update", "kind": "task", "id": "t0", "version": t0["version"],
                         "status": dict(t0["status"], state="accepted")}])
    t0 = store.raw("task", "t0")
    await store.commit([{"op": "update", "kind": "task", "id": "t0", "version": t0["version"],
                         "status": dict(t0["status"], state="running")},
                        {"op": "delete", "kind": "task", "id": "t1", "version": store.raw("task", "t1")["version"]}])
    removed = await receive(ws)
    assert isinstance(removed, AssignmentChanges) and removed.removed == ["t1"] and not removed.tasks
    held.apply(removed)  # in sequence throughout
    await store.add("secret", "unused", {"name": "unused", "data": b"x"})  # may touch every node: nothing changed
    await store.add("secret", "db", {"name": "db", "data": b"pw"})
    await store.add("task", "t4", task_spec("n1", container={"image": "busybox", "secrets": [
        {"source": "db", "target": "/run/secrets/db"}]}), {"state": "assigned"})
    secret = await receive(ws)
    assert [t["id"] for t in secret.tasks] == ["t4"] and secret.secrets == {"db": {"data": b"pw", "id": "db"}}
    held.apply(secret)  # four messages, each applying to the one before; the node's set is the store's
    assert held.sequence == 4 and sorted(held.tasks) == ["t0", "t2", "t3", "t4"]
    # (but for the phase of t0, which the node itself took up: a new session's whole set has it)
    assert held.tasks["t0"]["phase"] == "new" and held.tasks["t0"]["spec"] == store.raw("task", "t0")["spec"]
    assert held.secrets == {"db": {"data": b"pw", "id": "db"}}


async def test_a_config_write_reaches_only_the_nodes_that_use_it_and_lists_no_other_config(store, dispatcher, client,
                                                                                             monkeypatch):
    """The hazard (seen in a 3-manager cluster writing configs, as the chaos workload
    does): each config write sent every node its whole set, built from a list of every
    config in the store, so a write cost O(configs) per node; at 30,000 configs the
    leader's loop stayed busy for good. Now a node hears of a config only if its tasks
    use it, and configs are found by name."""
    await store.add_node("n1")
    await store.add_node("n2")
    await store.add("config", "app", {"name": "app", "data": b"v1"})
    await store.add("task", "t1", task_spec("n1", container={"image": "busybox", "configs": [
        {"source": "app", "target": "/app.conf"}]}), {"state": "assigned"})
    await dispatcher.leadership_changed(True)
    sessions = {}
    for node_id in ("n1", "n2"):
        sessions[node_id] = await connect(client, node_id, protocol=SESSION_PROTOCOL)
        await receive(sessions[node_id])  # welcome
    first = await receive(sessions["n1"])
    assert isinstance(first, Assignments) and first.configs == {"app": {"data": b"v1", "id": "app"}}
    assert isinstance(await receive(sessions["n2"]), Assignments)
    listed = []
    real_list = store.list
    monkeypatch.setattr(store, "list", lambda kind: listed.append(kind.kind) or real_list(kind))
    for i in range(20):
        await store.add("config", f"unrelated-{i}", {"name": f"unrelated-{i}", "data": b"x"})
    # n1's next message is about the config its task uses, n2's about its own new task:
    # nothing was sent for the 20 configs no task uses
    await store.commit([{"op": "delete", "kind": "config", "id": "app", "version": store.raw("config", "app")["version"]}])
    await store.add("task", "t2", task_spec("n2"), {"state": "assigned"})
    gone = await receive(sessions["n1"])
    assert isinstance(gone, AssignmentChanges) and gone.removed_configs == ["app"] and not gone.tasks
    added = await receive(sessions["n2"])
    assert isinstance(added, AssignmentChanges) and [t["id"] for t in added.tasks] == ["t2"]
    assert "config" not in listed and "secret" not in listed, listed


async def test_nothing_is_pushed_to_a_node_before_its_welcome(store, dispatcher, client, monkeypatch):
    """A store change while the session's start is being written (the node marked ready)
    must not send the node its set before the welcome the agent waits for first (seen
    as sessions failing over and over while a big deploy's tasks were being assigned)."""
    await store.add_node("n1")
    await dispatcher.leadership_changed(True)
    commit, marking, release = store.commit, asyncio.Event(), asyncio.Event()

    async def slow_node_writes(ops, *args, **kwargs):
        if any(op["kind"] == "node" for op in ops) and not release.is_set():
            marking.set()
            await release.wait()
        return await commit(ops, *args, **kwargs)
    monkeypatch.setattr(store, "commit", slow_node_writes)
    ws = await connect(client, "n1", protocol=SESSION_PROTOCOL)
    await asyncio.wait_for(marking.wait(), REPLY_TIMEOUT)  # the session is registered, its welcome not yet sent
    await store.add("task", "t1", task_spec("n1"), {"state": "assigned"})
    for _ in range(50):  # loop turns for the push loop to take the change (no time passes in this store)
        await asyncio.sleep(0)
    release.set()
    assert isinstance(await receive(ws), Welcome)
    first = await receive(ws)
    assert isinstance(first, Assignments) and [t["id"] for t in first.tasks] == ["t1"]


async def test_status_reports_are_written_together_and_reports_on_other_nodes_tasks_dropped(store, dispatcher, client):
    await store.add_node("n1")
    for task_id, node_id in (("a", "n1"), ("b", "n1"), ("theirs", "n2")):
        await store.add("task", task_id, task_spec(node_id), {"state": "assigned"})
    await dispatcher.leadership_changed(True)
    ws = await connect(client, "n1")
    await receive(ws), await receive(ws)
    changes = store.subscribe()
    commits_before = len(store.commits)
    await ws.send_bytes(pack(Status(updates=[{"task_id": t, "status": {"state": "running"}}
                                             for t in ("a", "b", "theirs")])))
    event = await next_change(changes)
    assert sorted(c.id for c in event.changes) == ["a", "b"]
    assert len(store.commits) == commits_before + 1
    assert store.raw("task", "theirs")["status"]["state"] == "assigned"


async def test_statuses_not_written_for_want_of_a_quorum_are_written_later(store, dispatcher, client):
    await store.add_node("n1")
    await store.add("task", "a", task_spec("n1"), {"state": "assigned"})
    await dispatcher.leadership_changed(True)
    ws = await connect(client, "n1")
    await receive(ws), await receive(ws)
    changes = store.subscribe()
    store.fail_next = NoQuorum("no quorum")
    await ws.send_bytes(pack(Status(updates=[{"task_id": "a", "status": {"state": "running"}}])))
    event = await next_change(changes)
    assert [c.id for c in event.changes] == ["a"] and store.raw("task", "a")["status"]["state"] == "running"


async def test_logs_are_relayed_from_the_node_holding_the_task(store, dispatcher, client):
    await store.add_node("n1")
    task = await store.add("task", "t1", task_spec("n1"), {"state": "running"})
    ws = await connect(client, "n1")
    await receive(ws), await receive(ws)
    lines = dispatcher.task_logs([Task(task)], tail=10, follow=False)
    first = asyncio.ensure_future(lines.__anext__())
    request = await receive(ws)
    assert isinstance(request, Logs) and (request.task_id, request.tail, request.follow) == ("t1", 10, False)
    await ws.send_bytes(pack(Log(request.request_id, "t1", lines=["hello", "world"])))
    await ws.send_bytes(pack(LogEnd(request.request_id, "t1", error="engine gone")))
    assert [line for _, line in [await first] + [pair async for pair in lines]] == [
        "hello", "world", "error: engine gone"]


async def test_a_session_that_ends_ends_its_log_streams_and_a_reader_that_stops_cancels_them(store, dispatcher,
                                                                                             client):
    await store.add_node("n1")
    await store.add_node("n2")
    one = await store.add("task", "t1", task_spec("n1"), {"state": "running"})
    two = await store.add("task", "t2", task_spec("n2"), {"state": "running"})
    ws1, ws2 = await connect(client, "n1"), await connect(client, "n2")
    for ws in (ws1, ws2):
        await receive(ws), await receive(ws)
    lines = dispatcher.task_logs([Task(one), Task(two)], tail=None, follow=True)
    first = asyncio.ensure_future(lines.__anext__())
    request = await receive(ws1)
    await receive(ws2)
    await ws1.close()
    assert await first == (Task(one), "error: the node's session ended")
    await lines.aclose()  # the reader stops: the node still streaming is told so
    assert await receive(ws2) == LogsCancel(request.request_id, "t2")


async def test_stop_closes_every_session_and_waits_for_the_background_work(store, dispatcher, client):
    await store.add_node("n1")
    await dispatcher.leadership_changed(True)
    ws = await connect(client, "n1")
    await receive(ws), await receive(ws)
    assert store.subscribers == 2  # the loop watches the store: its pass's events, and its claim
    await dispatcher.leadership_changed(False)
    assert store.subscribers == 0  # its loop has ended (and unsubscribed), not merely been asked to
    assert (await ws.receive(timeout=REPLY_TIMEOUT)).type == WSMsgType.CLOSE


async def test_a_silent_node_is_marked_down_after_the_grace_period(store, dispatcher):
    await store.add_node("n1", state=NODE_READY)
    changes = store.subscribe()
    await dispatcher.leadership_changed(True)
    event = await next_change(changes)  # heartbeat period 0.2 s: never heard since takeover, down after ~1.2 s
    status = event.changes[0].object["status"]
    assert status["state"] == NODE_DOWN and status["message"].startswith("heartbeat failure")


def test_nodes_to_mark_down():
    nodes = [Node(freeze({"id": i, "status": {"state": state}})) for i, state in
             (("fresh", "ready"), ("silent", "ready"), ("down", "down"), ("unseen", "ready"))]
    last_seen = {"fresh": 99.5, "silent": 96.0, "down": 90.0}
    assert [n.id for n in nodes_to_mark_down(nodes, last_seen, now=100.0, grace=3.0)] == ["silent"]
    # not heard since a new leader took over at 96.0: twice the grace to reconnect
    assert [n.id for n in nodes_to_mark_down(nodes, last_seen, now=100.0, grace=3.0, unheard={"silent"},
                                             takeover_grace=6.0)] == []
    assert [n.id for n in nodes_to_mark_down(nodes, last_seen, now=102.5, grace=3.0, unheard={"silent"},
                                             takeover_grace=6.0)] == ["silent"]


# -- network planes ------------------------------------------------------------------------------------

async def overlay_cluster(store):
    """Two overlay nodes and a placed two-tier stack (manager/allocator.py's allocation)."""
    from swarmlet.manager.stacks import StackApi
    from .test_netalloc import add_node, converge, stack
    await add_node(store, "n1", addr="10.99.0.1")
    await add_node(store, "n2", addr="10.99.0.2")
    await StackApi(store).deploy("app", stack(replicas=2, db_mode="vip"), {}, prune=False)
    return await converge(store)


async def receive_plane(ws):
    from swarmlet.api.netplane import NetworkPlane
    from swarmlet.api.session import NetworkPlaneUpdate
    message = await receive(ws)
    assert isinstance(message, NetworkPlaneUpdate), message
    return NetworkPlane.from_wire(message.plane)


async def test_an_overlay_node_gets_its_plane_before_its_assignments_and_again_when_backends_move(
        store, dispatcher, client):
    tasks = await overlay_cluster(store)
    mine = [t for t in tasks if t.spec.node_id == "n1"]
    assert mine  # two web and one db task over two nodes
    await dispatcher.leadership_changed(True)
    ws = await connect(client, "n1", {"hostname": "n1", "data_plane": "overlay"})
    assert isinstance(await receive(ws), Welcome)
    plane = await receive_plane(ws)  # before the assignment set whose tasks need it
    assert [n.id for n in plane.networks] == ["app_back"] and plane.node_address == "10.99.0.1"
    assert all(not s.backends for s in plane.networks[0].services)  # nothing runs yet
    assignments = await receive(ws)
    assert isinstance(assignments, Assignments) and {t["id"] for t in assignments.tasks} == {t.id for t in mine}
    assert all(t["spec"]["network_addresses"]["app_back"] for t in assignments.tasks)

    elsewhere = next(t for t in tasks if t.spec.node_id == "n2")  # another node's task starts running...
    current = store.get(Task, elsewhere.id)
    await store.commit([{"op": "update", "kind": "task", "id": elsewhere.id, "version": current.version,
                         "status": current.status.replace(state="running")}])
    plane = await receive_plane(ws)  # ...so n1's plane changes (its assignment set does not)
    backends = [b for s in plane.networks[0].services for b in s.backends]
    assert [(b.task_id, b.node_address) for b in backends] == [(elsewhere.id, "10.99.0.2")]
    current = store.get(Task, elsewhere.id)
    await store.commit([{"op": "update", "kind": "task", "id": elsewhere.id, "version": current.version,
                         "status": current.status.replace(state="failed")}])
    plane = await receive_plane(ws)
    assert not any(s.backends for n in plane.networks for s in n.services)


async def test_a_node_without_the_data_plane_gets_no_plane(store, dispatcher, client):
    await overlay_cluster(store)
    await dispatcher.leadership_changed(True)
    ws = await connect(client, "n1", {"hostname": "n1", "data_plane": "none"})
    assert isinstance(await receive(ws), Welcome)
    assert isinstance(await receive(ws), Assignments)
    await ws.send_bytes(pack(Heartbeat()))
    assert isinstance(await receive(ws), HeartbeatAck)  # and no plane came before it


async def test_a_leader_whose_loop_stalled_blames_no_node_for_it(store, dispatcher, client):
    """A long pass on the leader's loop (or a paused process) leaves the nodes' heartbeats
    unread in their sockets; once it runs again, no node that kept sending is marked down.
    The stall is played by the dispatcher's clock jumping ahead, as it does for a loop that
    did not run (the heartbeat check, woken late, sees every node silent)."""
    jumped = [0.0]
    dispatcher.clock = lambda: time.monotonic() + jumped[0]
    await store.add_node("n1", state=NODE_READY)
    await dispatcher.leadership_changed(True)
    ws = await connect(client, "n1")
    await receive(ws), await receive(ws)
    await ws.send_bytes(pack(Heartbeat()))
    await receive(ws)
    changes = store.subscribe()
    jumped[0] = dispatcher.grace * TAKEOVER_GRACE_FACTOR * 2  # the stall
    for _ in range(4):  # several heartbeat checks go by, the node heartbeating as an agent does
        await asyncio.sleep(dispatcher.heartbeat_period)  # the node's own pace, as agent.py keeps it
        await ws.send_bytes(pack(Heartbeat()))
        await receive(ws)
    written = [c.object["status"]["state"] for event in drain(changes) for c in event.changes if c.kind == "node"]
    assert NODE_DOWN not in written and store.get(Node, "n1").status.state == NODE_READY
