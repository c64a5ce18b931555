// tfo dashboard: renders /api/... JSON into the page. Every value goes in as text (textContent), never as
// markup: deployment ids and errors come from repositories and terraform, not from us.
"use strict";

const PHASES = ["queued", "preparing", "waiting_lock", "init", "plan", "policy", "backup", "apply",
  "rollback", "verify"];
const OK = ["succeeded", "no_changes", "in_sync", "unmanaged"];
const BAD = ["failed", "rolled_back", "rollback_failed", "invalid", "error", "stale", "blocked"];
const POLL_MS = 3000;
const STREAM_SILENCE_MS = 25000; // the server pings every 10 s: silence this long means a buffering proxy
const STREAM_HELLO_MS = 5000; // the server says hello at once: none by then, and the stream is held back

let current = null; // the rendered page's refresh function

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k === "href") node.setAttribute("href", v);
    else if (k === "title") node.title = v;
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function secs(s) {
  if (s === null || s === undefined) return "";
  s = Math.max(0, s);
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60), r = Math.round(s % 60);
  if (m < 60) return `${m} min ${r} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function when(epoch) {
  if (!epoch) return "";
  return new Date(epoch * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function statusClass(status) {
  if (OK.includes(status)) return "ok";
  if (status === "rolled_back") return "rolledback";
  if (BAD.includes(status)) return "bad";
  if (status === "skipped" || status === "cancelled") return "muted";
  if (status === "stuck") return "bad";
  return "active";
}

function runLink(id) { return el("a", { href: "/runs/" + encodeURIComponent(id) }, id); }
function depLink(id) { return el("a", { href: "/deployments/" + id.split("/").map(encodeURIComponent).join("/") }, id); }

async function getJSON(url) {
  // against the origin: a page opened as http://user:pass@host/ resolves relative URLs with the credentials
  // in them, which fetch refuses; the browser sends the credentials it was given for the origin anyway
  const r = await fetch(location.origin + url, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) {
    let why = r.status + " " + r.statusText;
    try { why = (await r.json()).error || why; } catch (e) { /* not JSON */ }
    throw new Error(why);
  }
  return r.json();
}

// A deployment's progress: how far along the phases it is, and what it is doing.
function phaseBar(d) {
  const done = d.finished;
  const i = Math.max(0, PHASES.indexOf(d.phase));
  const fraction = done ? 1 : (i + 0.5) / PHASES.length;
  const bar = el("div", { class: "bar " + statusClass(done ? d.status : "active"), title: d.phase,
    "data-field": "bar" });
  const fill = el("div", { class: "fill" });
  fill.style.width = `${Math.round(fraction * 100)}%`; // through the CSSOM: the policy allows no inline styles
  bar.append(fill);
  return bar;
}

function deploymentRow(d, live) {
  const running = !d.finished && d.phase !== "queued";
  const elapsed = el("td", { class: "num", "data-field": "elapsed", "data-started": running ? d.elapsed_s : null },
    d.finished ? secs(d.duration_s) : running ? secs(d.elapsed_s) : "");
  const plan = d.finished && d.plan ? `+${d.plan.add} ~${d.plan.change} -${d.plan.destroy}` : "";
  const cells = [
    el("td", {}, depLink(d.id)),
    el("td", { class: "status " + statusClass(d.finished ? d.status : d.phase === "queued" ? "skipped" : "active"),
      "data-field": "status" }, d.finished ? d.status : d.phase === "queued" ? "queued" : "running"),
    el("td", { "data-field": "phase" }, d.phase),
    el("td", { class: "barcell" }, phaseBar(d)),
    elapsed,
    el("td", { class: "muted" }, d.host || ""),
    el("td", { class: "num" }, plan),
  ];
  if (!live) {
    const rb = d.rollback;
    cells.push(el("td", { "data-field": "rollback" }, rb ? `${rb.strategy}: ${rb.status}` +
      (rb.matches_target === true ? ", matches target" : rb.matches_target === false ? ", DOES NOT match target" : "") : ""));
    cells.push(el("td", { class: "muted small" }, d.backup_key || ""));
    cells.push(el("td", {}, (d.previous_runs || []).slice(0, 3).map((r) => el("span", { class: "prev" }, runLink(r)))));
  }
  const row = el("tr", { "data-deployment": d.id, "data-status": d.status }, cells);
  const out = [row];
  if (d.error) {
    out.push(el("tr", { class: "errorrow", "data-error-for": d.id },
      el("td", { colspan: String(cells.length) }, el("pre", { class: "error" }, d.error))));
  }
  return out;
}

function deploymentTable(deployments, live) {
  const head = ["deployment", "status", "phase", "progress", live ? "elapsed" : "duration", "host", "plan"];
  if (!live) head.push("rollback", "backup", "previous runs");
  return el("table", { class: "deployments" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el("tbody", {}, deployments.flatMap((d) => deploymentRow(d, live))));
}

function figures(title, f) {
  const item = (label, value, cls) => el("div", { class: "figure " + (cls || "") },
    el("div", { class: "value" }, value), el("div", { class: "label" }, label));
  return el("section", { class: "figures", "data-figures": title },
    el("h3", {}, title),
    el("div", { class: "row" },
      item("runs", f.runs), item("deployments", f.deployments), item("succeeded", f.succeeded, "ok"),
      item("failed", f.failed, f.failed ? "bad" : ""), item("rolled back", f.rolled_back, f.rolled_back ? "rolledback" : ""),
      item("average duration", secs(f.average_duration_s)), item("time saved by parallel runs", secs(f.time_saved_s))));
}

function runHeader(r) {
  return el("div", { class: "runhead" },
    el("h2", {}, runLink(r.run_id), " ", el("span", { class: "tag" }, r.action),
      " ", el("span", { class: "status " + statusClass(r.status), "data-field": "run-status" }, r.status)),
    el("div", { class: "muted" },
      [r.actor && `by ${r.actor}`, r.git_sha && `at ${r.git_sha.slice(0, 12)}`,
        r.repository && (r.repository + (r.pull_request ? ` #${r.pull_request}` : "")),
        r.executor && `${r.executor} executor`, `started ${when(r.started)}`,
        `${r.done}/${r.total} done`, `${secs(r.elapsed_s)}`].filter(Boolean).join(" · ")));
}

function runsTable(runs) {
  return el("table", { class: "runs" },
    el("thead", {}, el("tr", {}, ["run", "action", "status", "deployments", "failed", "rolled back", "started",
      "took", "time saved"].map((h) => el("th", {}, h)))),
    el("tbody", {}, runs.map((r) => el("tr", { "data-run": r.run_id },
      el("td", {}, runLink(r.run_id)), el("td", {}, r.action),
      el("td", { class: "status " + statusClass(r.status) }, r.status),
      el("td", { class: "num" }, r.total),
      el("td", { class: "num" }, (r.counts.failed || 0) + (r.counts.rollback_failed || 0)),
      el("td", { class: "num" }, r.counts.rolled_back || 0),
      el("td", {}, when(r.started)), el("td", { class: "num" }, secs(r.elapsed_s)),
      el("td", { class: "num" }, r.time_saved_s === null ? "" : secs(r.time_saved_s))))));
}

async function overview(main) {
  const data = await getJSON("/api/overview");
  const parts = [];
  if (data.index_error) parts.push(el("p", { class: "warn" }, "store: " + data.index_error));
  parts.push(el("div", { class: "figurepair" }, figures("today", data.today), figures("last 7 days", data.week)));
  parts.push(el("h2", {}, `Active runs (${data.active.length})`));
  if (!data.active.length) parts.push(el("p", { class: "muted", id: "no-active" }, "Nothing is running."));
  for (const r of data.active) {
    parts.push(el("section", { class: "run active", "data-run": r.run_id }, runHeader(r), deploymentTable(r.deployments, true)));
  }
  parts.push(el("h2", {}, "Recent runs"), runsTable(data.recent),
    el("p", { class: "muted" }, `${data.runs_recorded} runs recorded · `,
      el("a", { href: "/api/runs?limit=500" }, "all runs as JSON")));
  main.replaceChildren(...parts);
}

async function runPage(main, runId) {
  const r = await getJSON("/api/runs/" + encodeURIComponent(runId));
  main.replaceChildren(el("section", { class: "run", "data-run": r.run_id }, runHeader(r),
    el("p", { class: "muted" }, r.finished ? `finished ${when(r.finished)}` +
      (r.time_saved_s !== null ? ` · ${secs(r.time_saved_s)} saved by running in parallel` : "") : "still going"),
    deploymentTable(r.deployments, false)));
}

async function deploymentPage(main, id) {
  const d = await getJSON("/api/deployments/" + id.split("/").map(encodeURIComponent).join("/"));
  const parts = [el("h2", {}, d.id), el("p", { class: "muted" }, d.state_key ? `state ${d.state_key}` : "")];
  parts.push(el("h3", {}, "Runs"), el("table", { class: "history" },
    el("thead", {}, el("tr", {}, ["run", "action", "status", "took", "host", "plan", "error"].map((h) => el("th", {}, h)))),
    el("tbody", {}, d.runs.map((x) => el("tr", { "data-run": x.run_id },
      el("td", {}, runLink(x.run_id)), el("td", {}, x.action),
      el("td", { class: "status " + statusClass(x.finished ? x.status : "active") }, x.status),
      el("td", { class: "num" }, secs(x.duration_s)), el("td", { class: "muted" }, x.host),
      el("td", { class: "num" }, `+${x.plan.add} ~${x.plan.change} -${x.plan.destroy}`),
      el("td", {}, el("span", { class: "small" }, x.error || "")))))));
  parts.push(el("h3", {}, "Backups"), el("ul", { class: "backups" },
    d.backups.length ? d.backups.map((b) => el("li", {}, b.error ? b.error : `${b.key} (${b.at}, ${b.size} bytes)`))
      : el("li", { class: "muted" }, "none")));
  if (d.drift) {
    parts.push(el("h3", {}, "Drift"), el("p", { class: d.drift.drifted ? "status bad" : "status ok" },
      d.drift.drifted ? `drifted (${d.drift.severity || "low"}) since ${when(d.drift.since)}` : "in sync"),
    el("ul", {}, (d.drift.resources || []).map((x) => el("li", {}, x))));
  }
  main.replaceChildren(...parts);
}

function route() {
  const path = decodeURIComponent(location.pathname);
  if (path.startsWith("/runs/")) return (main) => runPage(main, path.slice(6));
  if (path.startsWith("/deployments/")) return (main) => deploymentPage(main, path.slice(13));
  return overview;
}

let refreshing = false;
let again = false;
async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  const main = document.getElementById("main");
  try {
    await current(main);
    document.body.dataset.version = String((Number(document.body.dataset.version) || 0) + 1);
  } catch (e) {
    main.replaceChildren(el("p", { class: "warn" }, "Could not load: " + e.message));
  } finally {
    refreshing = false;
    if (again) { again = false; refresh(); }
  }
}

// Live updates: Server-Sent Events; when nothing comes through for a while (a proxy that buffers the
// stream), poll instead, and go back to the stream when it speaks again.
function live() {
  const badge = document.getElementById("live");
  let heard = 0;
  let poller = null;
  const mode = (m) => { badge.textContent = m; badge.dataset.mode = m; };
  const startPolling = () => {
    if (poller) return;
    mode("polling");
    poller = setInterval(refresh, POLL_MS);
  };
  const stopPolling = () => { if (poller) { clearInterval(poller); poller = null; } mode("live"); };
  if (!window.EventSource) { startPolling(); return; }
  const source = new EventSource(location.origin + "/api/events");
  const opened = Date.now();
  let hello = false;
  const hear = () => { heard = Date.now(); if (poller) stopPolling(); else mode("live"); };
  source.addEventListener("hello", () => { hello = true; hear(); refresh(); });
  source.addEventListener("change", () => { hear(); refresh(); });
  source.addEventListener("ping", hear);
  source.onerror = () => { if (!poller) mode("reconnecting"); };
  heard = Date.now();
  setInterval(() => {
    if ((!hello && Date.now() - opened > STREAM_HELLO_MS) || Date.now() - heard > STREAM_SILENCE_MS) startPolling();
  }, 1000);
}

// Elapsed times of what is still running tick between updates.
function tick() {
  const now = Date.now() / 1000;
  for (const cell of document.querySelectorAll("td[data-started]")) {
    if (!cell.dataset.base) { cell.dataset.base = String(now - Number(cell.dataset.started)); }
    cell.textContent = secs(now - Number(cell.dataset.base));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  current = route();
  refresh();
  live();
  setInterval(tick, 1000);
});
