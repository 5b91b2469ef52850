// The usage page (#/usage): what each user stores (GET usage): jobs by status, metric points,
// checkpoints, uploaded datasets and log lines. Users see their own row; admins every user's,
// and the database file's size and free space (SQLite).
"use strict";

import { api } from "./api.js";
import { showError } from "./banner.js";
import { fmtBytes, h, scrollTable } from "./dom.js";

const COLUMNS = ["owner", "jobs", "by status", "metric points", "checkpoints", "checkpoint bytes", "datasets", "dataset bytes", "log lines"];
const NUMERIC = new Set(["jobs", "metric points", "checkpoints", "checkpoint bytes", "datasets", "dataset bytes", "log lines"]);

function byStatus(jobs) {
  const parts = Object.entries(jobs).sort(([a], [b]) => a.localeCompare(b)).map(([s, n]) => `${s} ${n}`);
  return parts.join(" · ") || "–";
}

function row(user) {
  const values = {
    owner: user.owner,
    jobs: user.jobs_total.toLocaleString(),
    "by status": byStatus(user.jobs),
    "metric points": user.metric_points.toLocaleString(),
    checkpoints: user.checkpoints.toLocaleString(),
    "checkpoint bytes": fmtBytes(user.checkpoint_bytes),
    datasets: user.datasets.toLocaleString(),
    "dataset bytes": fmtBytes(user.dataset_bytes),
    "log lines": user.log_lines.toLocaleString(),
  };
  return h("tr", { dataset: { owner: user.owner } }, COLUMNS.map((c) =>
    h("td", { class: NUMERIC.has(c) ? "num" : null, dataset: { label: c }, text: values[c] })));
}

function databaseNote(db) {
  if (!db || !db.page_size) return "";
  const size = fmtBytes(db.page_size * db.page_count);
  const free = fmtBytes(db.page_size * db.freelist_count);
  const mode = db.auto_vacuum === 2 ? "deleted space is given back (incremental vacuum)" : "deleted space is reused, not given back (see README)";
  return `Database file ${size}, ${free} free; ${mode}.`;
}

export async function mount(view, { params }) {
  const tbody = h("tbody");
  const table = h("table", { class: "jobs-table", id: "usage" },
    h("thead", {}, h("tr", {}, COLUMNS.map((t) => h("th", { text: t, class: NUMERIC.has(t) ? "num" : null })))), tbody);
  const note = h("p", { class: "muted", id: "usage-note" });
  const hint = h("p", { class: "muted" }, "Free space by deleting finished jobs (a job's page has a Delete button) or from a shell: ",
    h("code", { text: "trainyard delete --status failed --older-than 30 --dry-run" }));
  view.append(h("div", { class: "page-head" }, h("h1", { text: "Usage" })), note, scrollTable(table), hint);
  const owner = params.get("owner");
  try {
    const body = await api(`usage${owner ? `?owner=${encodeURIComponent(owner)}` : ""}`);
    tbody.replaceChildren(...body.users.map(row));
    note.textContent = databaseNote(body.database);
    view.dataset.state = "ready";
  } catch (exc) {
    showError(exc.message);
    view.dataset.state = "error";
  }
  return null;
}
