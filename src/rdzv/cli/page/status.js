// The rdzv status page: one stream of server-sent events, rendered with textContent only.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const streamUrl = "events" + (token ? "?token=" + encodeURIComponent(token) : "");
let snapshot = null;
let clockOffset = 0; // server time minus this browser's time, in seconds

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function now() {
  return Date.now() / 1000 + clockOffset;
}

// Late: more than two intervals without a heartbeat (the page learns of beats once per
// interval, so a healthy node's age reaches about two). Dead: past the expiry.
function lateAfter() {
  const ka = snapshot.keep_alive;
  return Math.min(2 * ka.interval, ka.dead_after);
}

function liveness(beat) {
  const age = now() - beat;
  if (age >= snapshot.keep_alive.dead_after) return ["dead", age];
  if (age >= lateAfter()) return ["late", age];
  return ["fresh", age];
}

function rowsOf(state) {
  const rows = [];
  for (const p of state.participants) rows.push({ entry: p, rank: p.rank, role: "participant" });
  for (const w of state.wait_list) rows.push({ entry: w, rank: null, role: "waiting" });
  for (const r of state.redundancy_list) rows.push({ entry: r, rank: null, role: "redundant" });
  return rows;
}

function renderTable() {
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren();
  const state = snapshot.state;
  if (state) {
    for (const row of rowsOf(state)) {
      const [level, age] = liveness(row.entry.last_heartbeat);
      const status = row.entry.dead || level === "dead" ? "dead" : level === "late" ? "late" : "alive";
      const tr = el("tr", undefined, status === "alive" ? "fresh" : status);
      tr.dataset.node = row.entry.node;
      tr.append(
        el("td", row.rank === null ? "–" : String(row.rank), "rank"),
        el("td", row.entry.node, "node"),
        el("td", row.role, "role"),
        el("td", age < 0 ? "in the future" : age.toFixed(1) + " s ago", "age"),
        el("td", status, "status"),
      );
      body.append(tr);
    }
  }
  for (const m of snapshot.missing || []) {
    const tr = el("tr", undefined, "dead gone");
    tr.dataset.node = m.node;
    const how = m.gone === "left" ? "left" : "dead";
    tr.append(
      el("td", String(m.rank), "rank"),
      el("td", m.node, "node"),
      el("td", "missing from round " + snapshot.last_complete_round.round, "role"),
      el("td", "–", "age"),
      el("td", how, "status"),
    );
    body.append(tr);
  }
}

function render() {
  if (!snapshot) return;
  document.getElementById("run").textContent = snapshot.run_id;
  document.getElementById("where").textContent = snapshot.where;
  const problem = document.getElementById("problem");
  if (snapshot.result === "ok") {
    problem.hidden = true;
  } else {
    problem.hidden = false;
    problem.className = "problem " + snapshot.result;
    problem.textContent = snapshot.result.replace("_", " ") + ": " + snapshot.error;
  }
  const state = snapshot.state;
  const title = document.getElementById("round");
  const summary = document.getElementById("summary");
  if (state) {
    let text = "Round " + state.round + " — ";
    text += state.complete ? "complete, world size " + state.world_size : "forming, " + state.participants.length + " so far";
    if (state.closed) text += " — CLOSED";
    title.textContent = text;
    summary.textContent =
      "num_nodes_waiting: " + state.num_nodes_waiting +
      (state.last_call_remaining !== null ? "; last call ends in " + state.last_call_remaining.toFixed(1) + " s" : "");
  } else {
    title.textContent = "no round yet";
    summary.textContent = "";
  }
  const ka = snapshot.keep_alive;
  document.getElementById("legend").textContent =
    "heartbeat every " + ka.interval + " s; late after " + lateAfter() + " s; dead after " + ka.dead_after + " s";
  renderTable();
  const pending = document.getElementById("pending");
  pending.replaceChildren();
  for (const p of snapshot.pending_joins) {
    pending.append(el("li", p.node + " — posted " + p.age.toFixed(1) + " s ago" + (p.expired ? " (expired)" : "")));
  }
  if (!snapshot.pending_joins.length) pending.append(el("li", "none", "none"));
}

function describe(e) {
  const where = "round " + e.round + ": ";
  switch (e.type) {
    case "node_joined": return where + e.node + " joined as " + e.role + (e.previous ? " (was " + e.previous + ")" : "");
    case "node_left":
      return where + e.node + " left (" + e.role
        + (e.certain === false ? ", or died: gone while the watcher could not read" : "") + ")";
    case "node_declared_dead": return where + e.node + " declared dead (" + e.role + ", heartbeat expired)";
    case "round_completed": return where + "completed, world size " + e.world_size + ", ranks " + e.ranks.map((r) => r.rank + "=" + r.node).join(" ");
    case "round_abandoned": return where + "abandoned";
    case "round_started": return where + "started";
    case "rendezvous_closed": return where + "the rendezvous closed";
    case "state_reset": return where + "the state was reset by another writer";
    case "watch_status": return e.status === "ok" ? "watching again" : e.status.replace("_", " ") + ": " + e.message;
    default: return e.type;
  }
}

function addEvent(e) {
  const list = document.getElementById("timeline");
  const time = e.at ? new Date(e.at * 1000).toLocaleTimeString() : "";
  const kind = e.type === "watch_status" ? "watch_status " + e.status : e.type;
  list.prepend(el("li", time + "  " + describe(e), kind));
  while (list.children.length > 500) list.lastChild.remove();
}

function connect() {
  const stream = new EventSource(streamUrl);
  const connection = document.getElementById("connection");
  stream.addEventListener("open", () => {
    connection.textContent = "live";
    connection.className = "connection";
    document.getElementById("timeline").replaceChildren(); // the server sends the history again
  });
  stream.addEventListener("error", () => {
    connection.textContent = "connection to the page's server lost; retrying…";
    connection.className = "connection lost";
  });
  stream.addEventListener("snapshot", (message) => {
    snapshot = JSON.parse(message.data);
    clockOffset = snapshot.time - Date.now() / 1000;
    render();
  });
  stream.addEventListener("rdzv", (message) => addEvent(JSON.parse(message.data)));
}

connect();
setInterval(() => { if (snapshot) renderTable(); }, 250);
