// weir's job page: polls the JSON API of the process that serves it (relative
// URLs, so it also works mounted under a path) about once a second, and
// draws the graph, tables and charts as SVG and HTML text (searchable,
// copyable, readable by screen readers). No dependencies.
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let graph = null;
let lastStatus = null;
let selected = null;

function fmt(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (a >= 100 || Number.isInteger(n)) return String(Math.round(n));
  return n.toFixed(1);
}
function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
function ms(seconds) { return seconds === undefined ? "–" : (seconds * 1000).toFixed(1); }
function time(unixMs) { return unixMs ? new Date(unixMs).toLocaleTimeString() : "–"; }
function watermark(w) { return w === null || w === undefined ? "–" : new Date(w).toISOString().replace("T", " ").replace("Z", ""); }
function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function row(cells) {
  const tr = el("tr");
  for (const c of cells) tr.appendChild(el("td", {}, String(c)));
  return tr;
}
async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

// ---- the job graph -------------------------------------------------------

function tasksOf(status, vertex) {
  const names = new Set(vertex.tasks);
  return status ? status.tasks.filter((t) => names.has(t.name)) : [];
}
function backpressureLevel(tasks) {
  const ratio = Math.max(0, ...tasks.map((t) => t.backpressured_ms_per_sec / 1000));
  return ratio > 0.5 ? "high" : ratio >= 0.1 ? "low" : "ok";
}

function layout(g) {
  const depth = g.vertices.map(() => 0);
  for (let pass = 0; pass < g.vertices.length; pass++) {
    for (const e of g.edges) depth[e.to] = Math.max(depth[e.to], depth[e.from] + 1);
  }
  const rows = {};
  return g.vertices.map((v) => {
    const d = depth[v.id];
    rows[d] = (rows[d] || 0) + 1;
    return { x: 20 + d * 320, y: 20 + (rows[d] - 1) * 110 };
  });
}

function drawGraph() {
  const svg = $("graph");
  svg.replaceChildren();
  const defs = el("svg:defs");
  const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto" });
  marker.appendChild(el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#7a8596" }));
  defs.appendChild(marker);
  svg.appendChild(defs);
  const pos = layout(graph);
  const W = 230, H = 84;
  let maxX = 0, maxY = 0;
  for (const e of graph.edges) {
    const a = pos[e.from], b = pos[e.to];
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    svg.appendChild(el("svg:path", { class: "edge", d: `M${x1},${y1} C${x1 + 30},${y1} ${x2 - 30},${y2} ${x2},${y2}` }));
    svg.appendChild(el("svg:text", { class: "edge-label", x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 6, "text-anchor": "middle" }, e.kind));
  }
  for (const v of graph.vertices) {
    const p = pos[v.id];
    maxX = Math.max(maxX, p.x + W); maxY = Math.max(maxY, p.y + H);
    const g = el("svg:g", { class: "vertex bp-ok", id: "vertex-" + v.id, "data-vertex": v.id, "data-parallelism": v.parallelism, transform: `translate(${p.x},${p.y})`, tabindex: "0", role: "button" });
    g.appendChild(el("svg:title", {}, v.name));
    g.appendChild(el("svg:rect", { width: W, height: H }));
    const title = v.name.length > 34 ? v.name.slice(0, 33) + "…" : v.name;
    g.appendChild(el("svg:text", { class: "title", x: 10, y: 18 }, title));
    g.appendChild(el("svg:text", { class: "parallelism", x: 10, y: 36 }, `parallelism ${v.parallelism}${v.is_source ? " · source" : ""}`));
    g.appendChild(el("svg:text", { class: "rates", x: 10, y: 54 }, "in – /s · out – /s"));
    g.appendChild(el("svg:text", { class: "extra", x: 10, y: 72 }, ""));
    g.addEventListener("click", () => select(v.id));
    g.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") select(v.id); });
    svg.appendChild(g);
  }
  svg.setAttribute("viewBox", `0 0 ${maxX + 20} ${maxY + 20}`);
  svg.style.height = Math.max(160, maxY + 20) + "px";
}

function updateGraph(status) {
  if (!graph) return;
  for (const v of graph.vertices) {
    const g = $("vertex-" + v.id);
    if (!g) continue;
    const tasks = tasksOf(status, v);
    const level = backpressureLevel(tasks);
    // The vertex whose subtask failed the job is outlined in red.
    const failed = status.state === "failed" && tasks.some((t) => t.name === status.task);
    g.setAttribute("class", `vertex bp-${level}${selected === v.id ? " selected" : ""}${failed ? " failed" : ""}`);
    g.setAttribute("data-failed", failed);
    g.setAttribute("data-backpressure", level);
    const sum = (f) => tasks.reduce((s, t) => s + t[f], 0);
    const rin = sum("records_in_per_sec"), rout = sum("records_out_per_sec");
    g.setAttribute("data-in-rate", rin);
    g.setAttribute("data-records-in", sum("records_in"));
    g.querySelector(".rates").textContent = `in ${fmt(rin)}/s · out ${fmt(rout)}/s`;
    const bp = Math.max(0, ...tasks.map((t) => t.backpressured_ms_per_sec));
    const marks = tasks.map((t) => t.watermark_ms).filter((w) => w !== null && w !== undefined);
    const wm = marks.length === tasks.length && marks.length ? Math.min(...marks) : null;
    g.querySelector(".extra").textContent = `backpressure ${fmt(bp)} ms/s` + (wm !== null ? ` · wm ${new Date(wm).toISOString().slice(11, 19)}` : "");
  }
}

function select(id) {
  selected = id;
  $("subtasks-box").hidden = false;
  if (lastStatus) { updateGraph(lastStatus); updateSubtasks(lastStatus); }
}

function updateSubtasks(status) {
  if (selected === null || !graph) return;
  const v = graph.vertices[selected];
  $("subtasks-title").textContent = `${v.name} (parallelism ${v.parallelism})`;
  const body = $("subtasks").tBodies[0];
  body.replaceChildren(...tasksOf(status, v).map((t) => row([
    t.name, fmt(t.records_in), fmt(t.records_out), fmt(t.records_in_per_sec), fmt(t.records_out_per_sec),
    fmt(t.backpressured_ms_per_sec), t.output_queue ? `${t.output_queue[0]} / ${t.output_queue[1]}` : "sink",
    ms(t.last_alignment), watermark(t.watermark_ms),
    t.state_bytes === null || t.state_bytes === undefined ? "–" : bytes(t.state_bytes),
    t.state_cache_hit_rate === null || t.state_cache_hit_rate === undefined ? "–" : (t.state_cache_hit_rate * 100).toFixed(1) + " %",
    t.committed_checkpoint ? `checkpoint ${t.committed_checkpoint}` : "–",
    t.latency ? `${t.latency.p50_ms.toFixed(2)} / ${t.latency.p99_ms.toFixed(2)}` : "–",
  ])));
}

// ---- charts ---------------------------------------------------------------

function chart(svg, title, xs, series, yFormat) {
  svg.replaceChildren();
  const W = svg.clientWidth || 800, H = svg.clientHeight || 170, L = 60, B = 20, T = 18;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.appendChild(el("svg:text", { x: L, y: 12 }, title));
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  if (xs.length < 2 || !all.length) {
    svg.appendChild(el("svg:text", { x: L, y: H / 2 }, "no data yet"));
    return;
  }
  const maxY = Math.max(...all) || 1, minX = xs[0], maxX = xs[xs.length - 1] || 1;
  const sx = (x) => L + ((x - minX) / (maxX - minX || 1)) * (W - L - 10);
  const sy = (y) => H - B - (y / maxY) * (H - B - T);
  svg.appendChild(el("svg:line", { class: "axis", x1: L, y1: H - B, x2: W - 10, y2: H - B }));
  svg.appendChild(el("svg:line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  svg.appendChild(el("svg:text", { x: 4, y: T + 8 }, yFormat(maxY)));
  svg.appendChild(el("svg:text", { x: 4, y: H - B }, "0"));
  series.forEach((s, i) => {
    const pts = xs.map((x, j) => (s.values[j] === null || s.values[j] === undefined) ? null : `${sx(x).toFixed(1)},${sy(s.values[j]).toFixed(1)}`).filter(Boolean);
    svg.appendChild(el("svg:polyline", { class: "s" + i, points: pts.join(" ") }));
    if (pts.length === 1) {
      // A lone sample draws no line: show it as a dot.
      const [cx, cy] = pts[0].split(",");
      svg.appendChild(el("svg:circle", { class: "dot k" + i, cx, cy, r: 3 }));
    }
    svg.appendChild(el("svg:text", { class: "key k" + i, x: L + 10 + i * 130, y: H - 4 }, "— " + s.name));
  });
}

function updateCharts(history, checkpoints) {
  const xs = history.map((h) => h.uptime_s);
  chart($("rates-chart"), "records per second", xs, [
    { name: "sources", values: history.map((h) => h.source_records_per_sec) },
    { name: "sinks", values: history.map((h) => h.sink_records_per_sec) },
  ], fmt);
  chart($("latency-chart"), "end-to-end latency (ms, per second, from latency markers)", xs, [
    { name: "p50", values: history.map((h) => h.latency ? h.latency.p50_ms : null) },
    { name: "p99", values: history.map((h) => h.latency ? h.latency.p99_ms : null) },
    { name: "max", values: history.map((h) => h.latency ? h.latency.max_ms : null) },
  ], (v) => v.toFixed(1));
  const done = checkpoints.history.filter((c) => c.status === "completed");
  const maxBytes = Math.max(1, ...done.map((c) => c.bytes));
  const maxMs = Math.max(1, ...done.map((c) => c.duration * 1000));
  chart($("checkpoint-chart"), `checkpoint duration (max ${maxMs.toFixed(0)} ms) and size (max ${bytes(maxBytes)}), scaled`, done.map((c) => c.id), [
    { name: "duration", values: done.map((c) => c.duration * 1000 / maxMs) },
    { name: "size", values: done.map((c) => c.bytes / maxBytes) },
  ], () => "max");
}

// ---- status ----------------------------------------------------------------

function updateStatus(status) {
  lastStatus = status;
  $("job").textContent = status.job;
  const state = $("state");
  state.textContent = status.state;
  state.className = "state " + status.state;
  $("uptime").textContent = `up ${status.uptime.toFixed(0)} s`;
  $("restored").textContent = status.restored_from ? `restored from checkpoint ${status.restored_from}` : "";
  updateGraph(status);
  updateSubtasks(status);

  const failed = status.state === "failed";
  $("failure").hidden = !failed;
  if (failed) {
    $("failure-task").textContent = status.task ? `in task ${status.task}` : "";
    $("failure-error").textContent = status.error;
    $("failure-causes").replaceChildren(...(status.causes || []).map((c) => el("li", {}, c)));
  }

  const p = status.progress;
  $("progress-box").hidden = !p;
  if (p) {
    const pct = status.state === "finished" ? 100 : Math.floor(p.fraction * 1000) / 10;
    $("progress-fill").style.width = pct + "%";
    $("progress-bar").setAttribute("aria-valuenow", String(pct));
    const eta = p.eta_s === null || p.eta_s === undefined ? "" : ` · ETA ${p.eta_s.toFixed(0)} s`;
    $("progress-text").textContent = `${pct.toFixed(1)} % · ${fmt(p.read)} of ${fmt(p.read + p.remaining)} records${eta}`;
  }

  const lags = status.tasks.flatMap((t) => t.kafka_lag.map((l) => ({ task: t.name, ...l })));
  $("kafka-box").hidden = !lags.length;
  $("kafka").tBodies[0].replaceChildren(...lags.map((l) => row([l.task, l.topic, l.partition, l.position, l.end, l.lag])));
}

function updateCheckpoints(c) {
  const last = c.last ? `last: ${c.last.id} in ${ms(c.last.duration)} ms, ${bytes(c.last.bytes)}` : "none completed yet";
  $("checkpoint-summary").textContent = `${c.completed} completed, ${c.aborted} aborted${c.in_flight ? `, checkpoint ${c.in_flight} in flight` : ""}; ${last}` +
    (c.restored_from ? `; this run restored checkpoint ${c.restored_from}` : "");
  const rows = c.history.slice(-20).reverse().map((r) => row([
    r.id, r.status + (r.final_checkpoint ? " (final)" : ""), time(r.triggered_unix_ms), ms(r.duration), ms(r.alignment),
    ms(r.upload.upload_seconds), r.status === "completed" ? bytes(r.bytes) : "–",
    `${r.upload.files_uploaded} / ${r.upload.files_reused}`, r.reason || "",
  ]));
  $("checkpoints").tBodies[0].replaceChildren(...rows);
}

async function control(action) {
  const r = await fetch("api/control/" + action, { method: "POST", headers: { "X-Weir-Control": "1" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) alert(body.error || "HTTP " + r.status);
}

async function tick() {
  try {
    if (!graph) {
      graph = await getJson("api/graph");
      drawGraph();
      const config = await getJson("api/config");
      $("config").textContent = JSON.stringify(config, null, 2);
      $("control").hidden = !config.control;
    }
    const [status, history, checkpoints] = await Promise.all([getJson("api/status"), getJson("api/history"), getJson("api/checkpoints")]);
    $("connection").hidden = true;
    updateStatus(status);
    updateCheckpoints(checkpoints);
    updateCharts(history, checkpoints);
    document.body.setAttribute("data-updated", String(Date.now()));
  } catch (e) {
    // The process ended or is unreachable: keep the last state on screen.
    if (lastStatus) $("connection").hidden = false;
  }
  setTimeout(tick, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("#control button")) b.addEventListener("click", () => control(b.dataset.action));
  tick();
});
