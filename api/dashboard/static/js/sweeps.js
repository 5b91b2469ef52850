// The sweeps list (#/sweeps): every sweep with its method, status, how many of its trials have
// launched and ended, and its best objective so far; filtered by status, paged, updated live.
"use strict";

import { API_BASE, api, poll, session } from "./api.js";
import { showError } from "./banner.js";
import { fmtMetric, fmtTime, h, preloadChartsWhenIdle, scrollTable, setText, statusBadge } from "./dom.js";
import { navigate } from "./router.js";
import { REFRESH_MS } from "./state.js";

export const SWEEP_STATUSES = ["running", "succeeded", "failed", "cancelled"];
// The order trial counts are told in ("2 running · 5 succeeded · 3 pruned").
export const TRIAL_STATUSES = ["running", "queued", "succeeded", "pruned", "failed", "cancelled"];
const PAGE_SIZE = 50;
const COLUMNS = ["id", "name", "model", "method", "status", "trials", "best", "created"];

/** "2 running · 5 succeeded · 3 pruned" from a sweep's counts by status. */
export function countsText(counts) {
  const parts = TRIAL_STATUSES.filter((s) => counts && counts[s]).map((s) => `${counts[s]} ${s}`);
  return parts.length ? parts.join(" · ") : "no trials yet";
}

/** "val_accuracy ↑" / "val_loss ↓": the objective and which way is better. */
export function objectiveText(objective) {
  return `${objective.metric} ${objective.goal === "min" ? "↓ (min)" : "↑ (max)"}`;
}

/** A bar of the trials that have ended out of max_trials, "launched 4/10 · 2 running · 2 pruned" under it. */
export function trialsBar(sweep) {
  const wrap = h("div", { class: "progress" },
    h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, h("span")),
    h("div", { class: "progress-label" }));
  updateTrialsBar(wrap, sweep);
  return wrap;
}

export function updateTrialsBar(wrap, sweep) {
  const counts = sweep.counts || {};
  const ended = ["succeeded", "pruned", "failed", "cancelled"].reduce((n, s) => n + (counts[s] || 0), 0);
  const fraction = Math.min(1, ended / Math.max(1, sweep.max_trials));
  const bar = wrap.querySelector(".bar");
  bar.className = `bar bar-${sweep.status}`;
  bar.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
  bar.firstChild.style.width = `${(fraction * 100).toFixed(1)}%`;
  setText(wrap.querySelector(".progress-label"), `launched ${sweep.launched}/${sweep.max_trials} · ${countsText(counts)}`);
}

function bestText(sweep) {
  const { best, objective } = sweep;
  if (!best || best.objective === null || best.objective === undefined) return "–";
  return `${fmtMetric(objective.metric, best.objective)} (trial ${best.number})`;
}

// ---- one row per sweep ---------------------------------------------------------------------

function buildRow(sweep) {
  const cells = {};
  for (const column of COLUMNS) cells[column] = h("td", { dataset: { label: column } });
  cells.id.append(h("a", { href: `#/sweeps/${sweep.id}`, text: `#${sweep.id}` }));
  const nameLink = h("a", { href: `#/sweeps/${sweep.id}`, class: "job-name" });
  const owner = h("span", { class: "owner muted" });
  cells.name.className = "col-name";
  cells.name.append(nameLink, owner);
  cells.trials.className = "col-progress";
  cells.trials.append(trialsBar(sweep));
  cells.best.className = "num";
  const tr = h("tr", { dataset: { sweepId: String(sweep.id) } }, Object.values(cells));
  const row = { tr, cells, nameLink, owner };
  renderRow(row, sweep);
  return row;
}

function renderRow(row, sweep) {
  const { cells } = row;
  setText(row.nameLink, sweep.name);
  row.nameLink.title = sweep.name;
  setText(row.owner, sweep.owner && sweep.owner !== session.owner ? `by ${sweep.owner}` : "");
  setText(cells.model, `${sweep.model} · ${sweep.dataset}`);
  setText(cells.method, sweep.method);
  const badge = cells.status.firstChild;
  if (!badge || badge.textContent !== sweep.status) cells.status.replaceChildren(statusBadge(sweep.status));
  updateTrialsBar(cells.trials.firstChild, sweep);
  setText(cells.best, bestText(sweep));
  cells.best.title = objectiveText(sweep.objective);
  setText(cells.created, fmtTime(sweep.created_at));
  row.tr.className = `job-row row-${sweep.status}`;
}

// ---- the page --------------------------------------------------------------------------------

function emptyBox(filtered) {
  if (filtered) {
    return h("div", { class: "empty" }, h("h2", { text: "No sweeps match this filter" }),
      h("p", {}, h("a", { href: "#/sweeps", text: "Show every sweep" })));
  }
  const base = API_BASE.href.replace(/\/$/, "");
  return h("div", { class: "empty" },
    h("h2", { text: "No sweeps yet" }),
    h("p", { text: "A sweep trains one model many times over a search space (grid, random or TPE) and stops weak trials early. Start one with the API:" }),
    h("pre", { text: `curl -X POST ${base}/sweeps -H 'Content-Type: application/json' \\
  -d '{"model": "mlp", "dataset": "digits", "method": "grid",
       "hyperparameters": {"epochs": 5},
       "space": {"activation": {"values": ["relu", "tanh", "sigmoid"]},
                 "lr": {"values": [0.001, 0.01]}},
       "early_stopping": {"method": "asha", "min_epochs": 1}}'` }));
}

function buildPage(view, params) {
  const status = h("select", { id: "sweeps-filter-status", "aria-label": "status" },
    h("option", { value: "", text: "all statuses" }),
    SWEEP_STATUSES.map((s) => h("option", { value: s, text: s })));
  status.value = params.get("status") || "";
  const tbody = h("tbody");
  const table = scrollTable(h("table", { class: "jobs-table", id: "sweeps" },
    h("thead", {}, h("tr", {}, COLUMNS.map((t) => h("th", { text: t, class: t === "best" ? "num" : null })))),
    tbody));
  const pagerText = h("span", { class: "pager-text", id: "sweeps-pager-text" });
  const newer = h("button", { type: "button", class: "btn", text: "← Newer" });
  const older = h("button", { type: "button", class: "btn", text: "Older →" });
  const pager = h("div", { class: "pager" }, pagerText, h("span", { class: "pager-buttons" }, newer, older));
  const empty = h("div", { id: "sweeps-empty", hidden: true });
  view.append(
    h("div", { class: "page-head" }, h("h1", { text: "Sweeps" })),
    h("div", { class: "toolbar" }, h("label", { class: "field-inline" }, "Status ", status)),
    empty, table, pager);
  return { status, tbody, table, pager, pagerText, newer, older, empty };
}

function go(status, offset) {
  const next = new URLSearchParams();
  if (status) next.set("status", status);
  if (offset > 0) next.set("offset", String(offset));
  navigate("/sweeps", next);
}

function render(page, body) {
  const { ui, rows } = page;
  page.body = body;
  const filtered = Boolean(page.query.get("status"));
  ui.empty.hidden = body.total > 0;
  ui.table.hidden = body.total === 0;
  ui.pager.hidden = body.total === 0;
  if (body.total === 0) {
    if (!ui.empty.firstChild) ui.empty.append(emptyBox(filtered));
    return;
  }
  const ordered = body.items.map((sweep) => {
    let row = rows.get(sweep.id);
    if (row) renderRow(row, sweep);
    else rows.set(sweep.id, (row = buildRow(sweep)));
    return row.tr;
  });
  const shown = new Set(body.items.map((s) => s.id));
  for (const id of [...rows.keys()]) if (!shown.has(id)) rows.delete(id);
  const current = [...ui.tbody.children];
  if (current.length !== ordered.length || current.some((tr, i) => tr !== ordered[i])) {
    ui.tbody.replaceChildren(...ordered);
  }
  const first = body.offset + 1;
  const last = body.offset + body.items.length;
  setText(ui.pagerText, body.items.length
    ? `${first.toLocaleString()}–${last.toLocaleString()} of ${body.total.toLocaleString()} sweeps`
    : `no sweeps on this page (${body.total.toLocaleString()} in all)`);
  ui.newer.disabled = body.offset === 0;
  ui.older.disabled = last >= body.total;
}

async function refresh(page) {
  const live = document.getElementById("live");
  try {
    render(page, await api(`sweeps?${page.query.toString()}`));
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

export async function mount(view, { params }) {
  const offset = Math.max(0, Number.parseInt(params.get("offset") || "0", 10) || 0);
  const query = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(offset) });
  if (SWEEP_STATUSES.includes(params.get("status"))) query.set("status", params.get("status"));
  const page = { view, query, ui: buildPage(view, params), rows: new Map(), body: null, unreachable: false };
  const { ui } = page;
  ui.status.addEventListener("change", () => go(ui.status.value, 0));
  ui.newer.addEventListener("click", () => go(ui.status.value, Math.max(0, offset - PAGE_SIZE)));
  ui.older.addEventListener("click", () => go(ui.status.value, offset + PAGE_SIZE));
  const stop = poll(() => refresh(page), REFRESH_MS);
  const cancelPreload = preloadChartsWhenIdle();
  return () => {
    stop();
    cancelPreload();
    document.getElementById("live").hidden = true;
  };
}
