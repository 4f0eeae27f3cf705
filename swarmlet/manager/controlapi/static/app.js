// The swarmlet dashboard: polls the API with the session cookie (set at /dashboard/login)
// and redraws the tables. Every value is written as text (never as HTML).
"use strict";

const POLL_MS = 1000;
const EVENTS_PATH = "/v1/events?follow=0&limit=50";

async function get(path) {
  const response = await fetch(path, {credentials: "same-origin", cache: "no-store"});
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  return {status: response.status, body};
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function fill(tbodyId, rows, makeRow) {
  const tbody = document.getElementById(tbodyId);
  tbody.replaceChildren(...rows.map(row => {
    const tr = document.createElement("tr");
    makeRow(row, tr);
    return tr;
  }));
}

function short(id) { return id ? id.slice(0, 12) : ""; }

function showProblem(message) {
  const p = document.getElementById("problem");
  p.textContent = message || "";
  p.hidden = !message;
}

function drawRaft(status) {
  document.getElementById("raft-summary").textContent =
    `leader ${short(status.leader) || "none"}, term ${status.term}, commit index ${status.commit_index}`;
  fill("managers", status.managers || [], (m, tr) => {
    tr.dataset.manager = m.hostname || m.id;
    tr.append(cell(m.hostname || short(m.id)), cell(m.address), cell(m.leader ? "leader" : ""),
              cell(m.reachable ? "reachable" : "unreachable", m.reachable ? "" : "unreachable"), cell(m.lag));
  });
}

function drawNodes(nodes) {
  fill("nodes", nodes, (n, tr) => {
    const hostname = n.status.hostname || n.id;
    tr.dataset.node = hostname;
    tr.append(cell(hostname), cell(short(n.id)), cell(n.spec.role), cell(n.spec.availability),
              cell(n.status.state, n.status.state), cell(n.status.addr), cell(n.status.message));
  });
}

function drawServices(services) {
  fill("services", services, (s, tr) => {
    tr.dataset.service = s.name;
    const desired = s.mode === "replicated" ? s.replicas : "global";
    const replicas = s.mode === "replicated" ? `${s.running}/${s.replicas}` : `${s.running} (global)`;
    tr.append(cell(s.name), cell(s.stack), cell(s.mode),
              cell(replicas, s.mode === "replicated" && s.running < desired ? "short" : ""), cell(s.image));
  });
}

function drawTasks(tasks, nodes) {
  const hostnames = Object.fromEntries(nodes.map(n => [n.id, n.status.hostname || short(n.id)]));
  const live = tasks.filter(t => t.desired_state === "running" || t.state === "running")
    .concat(tasks.filter(t => !(t.desired_state === "running" || t.state === "running")));
  fill("tasks", live, (t, tr) => {
    tr.dataset.task = t.id;
    tr.dataset.service = t.service_name;
    tr.dataset.node = hostnames[t.node_id] || "";
    tr.append(cell(`${t.service_name}.${t.slot ?? short(t.node_id)}`), cell(short(t.id)),
              cell(hostnames[t.node_id] || ""), cell(t.desired_state), cell(t.state, t.state),
              cell(t.err || t.message));
  });
}

function drawStacks(stacks) {
  fill("stacks", stacks, (s, tr) => {
    tr.dataset.stack = s.name;
    tr.append(cell(s.name), cell(s.services));
  });
}

function drawEvents(answer) {
  const note = document.getElementById("events-note");
  if (answer.status === 404) {
    note.textContent = "events not available (this manager has no events API)";
    note.hidden = false;
    fill("events", [], () => {});
    return;
  }
  if (answer.status !== 200 || !answer.body) {
    note.textContent = `events: ${(answer.body && answer.body.error) || "HTTP " + answer.status}`;
    note.hidden = false;
    return;
  }
  note.hidden = true;
  const events = (answer.body.events || []).slice().reverse();  // newest first
  fill("events", events, (e, tr) => {
    tr.append(cell(new Date(e.time * 1000).toLocaleTimeString()), cell(e.type), cell(e.action),
              cell(e.name || short(e.id)));
  });
}

async function refresh() {
  try {
    const [status, nodes, services, tasks, stacks, events] = await Promise.all([
      get("/v1/cluster/status"), get("/v1/nodes"), get("/v1/services"), get("/v1/tasks"), get("/v1/stacks"),
      get(EVENTS_PATH)]);
    const refused = [status, nodes, services, tasks, stacks].find(a => a.status !== 200);
    if (refused) {
      const message = (refused.body && refused.body.error) || `HTTP ${refused.status}`;
      showProblem(refused.status === 401
        ? "Not logged in (or the session ended): run `swarmlet dashboard` for a login link. " + message
        : message);
    } else {
      showProblem("");
    }
    if (status.status === 200) drawRaft(status.body);
    if (nodes.status === 200) drawNodes(nodes.body);
    if (services.status === 200) drawServices(services.body);
    if (tasks.status === 200) drawTasks(tasks.body, nodes.status === 200 ? nodes.body : []);
    if (stacks.status === 200) drawStacks(stacks.body);
    drawEvents(events);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    showProblem(`cannot reach the manager: ${err}`);
  }
  setTimeout(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", refresh);
