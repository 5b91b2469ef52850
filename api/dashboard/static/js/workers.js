// The workers page (#/workers): every worker with its state, its job, its hardware and how long
// ago it last beat, updated live; admins get a Drain button per worker (POST workers/NAME/drain).
"use strict";

import { api, ApiError, poll, session } from "./api.js";
import { showError } from "./banner.js";
import { fmtBytes, fmtDuration, fmtTime, h, scrollTable, setText } from "./dom.js";
import { REFRESH_MS } from "./state.js";

const COLUMNS = ["name", "state", "job", "device", "torch", "heartbeat", "started", "jobs done", "infra failures", "queues", ""];
const NUMERIC = new Set(["heartbeat", "jobs done", "infra failures"]);
// Each state in the colours of the job status it resembles: idle ready (green), busy running
// (blue), draining winding down (amber), lost failed (red).
const STATE_CLASS = { idle: "status-succeeded", busy: "status-running", draining: "status-cancelled", lost: "status-failed" };
const STATE_HINT = {
  idle: "waiting for a job",
  busy: "running a job",
  draining: "asked to give its job back and take no new one, until its process restarts",
  lost: "not seen for a lease: killed, hung or cut off",
};

// ---- one row per worker ----------------------------------------------------------------------

function buildRow(worker, onDrain) {
  const drain = h("button", {
    type: "button", class: "btn btn-small btn-danger", text: "Drain",
    title: "Give its job back at the next step (it resumes on another worker) and take no new one",
    on: { click: () => onDrain(worker.name, drain) },
  });
  const cells = {};
  for (const column of COLUMNS) {
    cells[column] = h("td", {
      class: column === "" ? "col-actions" : NUMERIC.has(column) ? "num" : null,
      dataset: column ? { label: column } : null,
    });
  }
  cells[""].append(drain);
  const tr = h("tr", { dataset: { worker: worker.name } }, Object.values(cells));
  const row = { tr, drain, cells };
  renderRow(row, worker);
  return row;
}

function stateBadge(state) {
  return h("span", { class: `badge ${STATE_CLASS[state] || ""}`, text: state, title: STATE_HINT[state] || "" });
}

function jobCell(worker) {
  if (worker.job_id !== null && worker.job_id !== undefined) {
    return h("a", { href: `#/jobs/${worker.job_id}`, text: `#${worker.job_id}` });
  }
  // Busy with a job the caller may not see (another user's): the API leaves it out.
  return h("span", { class: "muted", text: worker.state === "busy" ? "another user's" : "–" });
}

function deviceText(worker) {
  if (!worker.gpu_name) return worker.device_class;
  const memory = worker.gpu_memory_bytes ? ` · ${fmtBytes(worker.gpu_memory_bytes)}` : "";
  return `${worker.device_class} · ${worker.gpu_name}${memory}`;
}

function renderRow(row, worker) {
  const { cells } = row;
  setText(cells.name, worker.name);
  cells.name.title = `${worker.host}, pid ${worker.pid}`;
  const badge = cells.state.firstChild;
  if (!badge || badge.textContent !== worker.state) cells.state.replaceChildren(stateBadge(worker.state));
  const shownJob = cells.job.dataset.shown;
  const jobKey = `${worker.job_id}:${worker.state}`;
  if (shownJob !== jobKey) {
    cells.job.replaceChildren(jobCell(worker));
    cells.job.dataset.shown = jobKey;
  }
  setText(cells.device, deviceText(worker));
  setText(cells.torch, worker.torch_version || "–");
  setText(cells.heartbeat, `${fmtDuration(worker.seen_seconds_ago)} ago`);
  cells.heartbeat.title = fmtTime(worker.seen_at);
  setText(cells.started, fmtTime(worker.started_at));
  setText(cells["jobs done"], worker.jobs_done);
  setText(cells["infra failures"], worker.infra_failures);
  setText(cells.queues, worker.queues.join(", "));
  // Only admins may drain; a draining worker needs no second request.
  row.drain.hidden = !session.isAdmin || worker.state === "draining";
  row.tr.className = `worker-row row-${worker.state}`;
}

// ---- the page ----------------------------------------------------------------------------------

function buildPage(view) {
  const tbody = h("tbody");
  const table = h("table", { class: "jobs-table", id: "workers" },
    h("thead", {}, h("tr", {}, COLUMNS.map((t) => h("th", { text: t, class: NUMERIC.has(t) ? "num" : null })))),
    tbody);
  const wrap = scrollTable(table);
  const note = h("p", { class: "muted", id: "workers-note" });
  const empty = h("div", { class: "empty", id: "workers-empty", hidden: true },
    h("h2", { text: "No worker is running" }),
    h("p", {}, "Jobs wait in the queue until a worker claims them. Start one on any machine that reaches the database and the broker:"),
    h("pre", { text: "trainyard worker" }));
  view.append(h("div", { class: "page-head" }, h("h1", { text: "Workers" })), note, empty, wrap);
  return { tbody, wrap, note, empty };
}

async function drainWorker(page, name, button) {
  button.disabled = true;
  try {
    await api(`workers/${encodeURIComponent(name)}/drain`, { method: "POST" });
    showError(null);
  } catch (exc) {
    const known = exc instanceof ApiError && (exc.status === 403 || exc.status === 404);
    showError(known ? exc.message : `Drain failed: ${exc.message}`);
  } finally {
    button.disabled = false;
    refresh(page);
  }
}

function render(page, body) {
  const { ui, rows } = page;
  setText(ui.note, `${body.items.length} worker${body.items.length === 1 ? "" : "s"}; a worker not seen for ${fmtDuration(body.lease_seconds)} is shown lost.`);
  ui.empty.hidden = body.items.length > 0;
  ui.wrap.hidden = body.items.length === 0;
  const ordered = body.items.map((worker) => {
    let row = rows.get(worker.name);
    if (row) renderRow(row, worker);
    else rows.set(worker.name, (row = buildRow(worker, (name, button) => drainWorker(page, name, button))));
    return row.tr;
  });
  for (const name of [...rows.keys()]) if (!body.items.some((w) => w.name === name)) rows.delete(name);
  // Move rows only when the order changed, so a button being clicked is not replaced.
  const current = [...ui.tbody.children];
  if (current.length !== ordered.length || current.some((tr, i) => tr !== ordered[i])) {
    ui.tbody.replaceChildren(...ordered);
  }
}

async function refresh(page) {
  const live = document.getElementById("live");
  try {
    render(page, await api("workers"));
    page.view.dataset.state = "ready";
    live.hidden = false;
    if (page.unreachable) showError(null);
    page.unreachable = false;
  } catch (exc) {
    live.hidden = true;
    page.unreachable = true;
    showError(`Cannot reach the API: ${exc.message}`);
  }
}

export async function mount(view) {
  const page = { view, ui: buildPage(view), rows: new Map(), unreachable: false };
  const stop = poll(() => refresh(page), REFRESH_MS);
  return () => {
    stop();
    document.getElementById("live").hidden = true;
  };
}
