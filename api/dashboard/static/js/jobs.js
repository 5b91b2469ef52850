// The jobs list (#/): filters by status and model, keyset pages of jobs that update live, a
// cancel button per active job, and the runs ticked for "Compare selected".
"use strict";

import { api, ApiError, API_BASE, poll, session } from "./api.js";
import { showError } from "./banner.js";
import { catalogue } from "./catalogue.js";
import {
  ACTIVE, fmtDuration, fmtMetric, h, jobDuration, METRIC_SHORT, preloadChartsWhenIdle,
  progressBar, scrollTable, setText, statusBadge, updateProgress,
} from "./dom.js";
import { navigate } from "./router.js";
import { REFRESH_MS, selection } from "./state.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "pruned"];
const PAGE_SIZES = [25, 50, 100, 200];
const DEFAULT_PAGE_SIZE = "50";
const COLUMNS = ["id", "name", "status", "priority", "model", "dataset", "device", "progress", "duration", "best", ""];

/** The GET /jobs query a route's params ask for: filters, keyset position, page size. */
function queryFrom(params) {
  const q = new URLSearchParams();
  for (const key of ["status", "model", "before", "after"]) {
    if (params.get(key)) q.set(key, params.get(key));
  }
  q.set("limit", PAGE_SIZES.includes(Number(params.get("limit"))) ? params.get("limit") : DEFAULT_PAGE_SIZE);
  return q;
}

// ---- one row per job -----------------------------------------------------------------------

function buildRow(job, { onCancel, onSelect }) {
  const check = h("input", {
    type: "checkbox", class: "select-run", "aria-label": `select job ${job.id} to compare`,
    on: { change: () => onSelect(job.id, check.checked) },
  });
  const cancel = h("button", {
    type: "button", class: "btn btn-small btn-danger", text: "Cancel",
    on: { click: () => onCancel(job.id, cancel) },
  });
  const nameLink = h("a", { href: `#/jobs/${job.id}`, class: "job-name" });
  const owner = h("span", { class: "owner muted" }); // an admin sees whose job it is
  const queuePos = h("span", { class: "queue-pos muted" }); // "#3 in queue" beside "queued"
  const cells = {
    select: h("td", { class: "col-select" }, check),
    id: h("td", { class: "col-id", dataset: { label: "id" } }, h("a", { href: `#/jobs/${job.id}`, text: `#${job.id}` })),
    name: h("td", { class: "col-name", dataset: { label: "name" } }, nameLink, owner),
    status: h("td", { class: "col-status", dataset: { label: "status" } }),
    priority: h("td", { class: "num", dataset: { label: "priority" } }),
    model: h("td", { dataset: { label: "model" } }),
    dataset: h("td", { dataset: { label: "dataset" } }),
    device: h("td", { dataset: { label: "device" } }),
    progress: h("td", { class: "col-progress", dataset: { label: "progress" } }, progressBar(job)),
    duration: h("td", { class: "num", dataset: { label: "duration" } }),
    best: h("td", { class: "num", dataset: { label: "best" } }),
    actions: h("td", { class: "col-actions" }, cancel),
  };
  const tr = h("tr", { dataset: { jobId: String(job.id) } }, Object.values(cells));
  const row = { tr, check, cancel, nameLink, owner, queuePos, cells };
  renderRow(row, job);
  return row;
}

function bestText(job) {
  const best = job.best_metric;
  return best ? `${METRIC_SHORT[best.name] || best.name} ${fmtMetric(best.name, best.value)}` : "–";
}

function renderRow(row, job) {
  const { cells } = row;
  row.check.checked = selection.has(job.id);
  setText(row.nameLink, job.name || `job ${job.id}`);
  setText(row.owner, job.owner && job.owner !== session.owner ? `by ${job.owner}` : "");
  row.nameLink.title = job.name || "";
  const badge = cells.status.firstChild;
  if (!badge || badge.textContent !== job.status) cells.status.replaceChildren(statusBadge(job.status), row.queuePos);
  setText(row.queuePos, job.queue_position ? `#${job.queue_position} in queue` : "");
  setText(cells.priority, String(job.priority ?? 0));
  setText(cells.model, job.model);
  setText(cells.dataset, job.dataset);
  setText(cells.device, job.device);
  updateProgress(cells.progress.firstChild, job);
  setText(cells.duration, fmtDuration(jobDuration(job)));
  setText(cells.best, bestText(job));
  row.cancel.hidden = !ACTIVE.has(job.status);
  row.tr.className = `job-row row-${job.status}`;
}

// ---- building the page ---------------------------------------------------------------------

function buildFilters(query, models) {
  const status = h("select", { id: "filter-status", "aria-label": "status" },
    h("option", { value: "", text: "all statuses" }),
    STATUSES.map((s) => h("option", { value: s, text: s })));
  status.value = query.get("status") || "";
  const model = h("select", { id: "filter-model", "aria-label": "model" },
    h("option", { value: "", text: "all models" }),
    Object.keys(models).map((m) => h("option", { value: m, text: m })));
  model.value = query.get("model") || "";
  const size = h("select", { id: "page-size", "aria-label": "jobs per page" },
    PAGE_SIZES.map((n) => h("option", { value: String(n), text: `${n} per page` })));
  size.value = query.get("limit");
  return { status, model, size };
}

function buildTable() {
  const selectAll = h("input", { type: "checkbox", id: "select-page", "aria-label": "select every job on this page" });
  const tbody = h("tbody");
  const table = h("table", { class: "jobs-table", id: "jobs" },
    h("thead", {}, h("tr", {},
      h("th", { class: "col-select" }, selectAll),
      COLUMNS.map((t) => h("th", { text: t, class: ["priority", "duration", "best"].includes(t) ? "num" : null })))),
    tbody);
  return { selectAll, tbody, wrap: scrollTable(table) };
}

function buildPager() {
  const text = h("span", { class: "pager-text", id: "pager-text" });
  const newest = h("button", { type: "button", class: "btn", text: "⇤ Newest" });
  const newer = h("button", { type: "button", class: "btn", id: "page-newer", text: "← Newer" });
  const older = h("button", { type: "button", class: "btn", id: "page-older", text: "Older →" });
  const pager = h("div", { class: "pager" }, text, h("span", { class: "pager-buttons" }, newest, newer, older));
  return { pager, text, newest, newer, older };
}

/** Every element of the page, appended to `view`; the handlers come from wire(). */
function buildPage(view, query, models) {
  const filters = buildFilters(query, models);
  const compare = h("button", { type: "button", id: "compare-selected", class: "btn btn-primary" });
  const clear = h("button", { type: "button", class: "btn btn-link", text: "clear selection" });
  const table = buildTable();
  const pager = buildPager();
  const empty = h("div", { id: "jobs-empty" });
  view.append(
    h("div", { class: "page-head" },
      h("h1", { text: "Jobs" }),
      h("a", { href: "#/new", class: "btn btn-primary", text: "+ New job" })),
    h("div", { class: "toolbar" },
      h("label", { class: "field-inline" }, "Status ", filters.status),
      h("label", { class: "field-inline" }, "Model ", filters.model),
      h("label", { class: "field-inline" }, filters.size),
      h("span", { class: "toolbar-spacer" }),
      compare, clear),
    empty, table.wrap, pager.pager);
  return { filters, compare, clear, table, pager, empty };
}

// ---- what the controls do --------------------------------------------------------------------

function filterParams({ status, model, size }) {
  const next = new URLSearchParams();
  if (status.value) next.set("status", status.value);
  if (model.value) next.set("model", model.value);
  if (size.value !== DEFAULT_PAGE_SIZE) next.set("limit", size.value);
  return next;
}

/** The route of the page `which` ("newest", "newer", "older") from the one shown (`body`). */
function pageParams(query, body, which) {
  const next = new URLSearchParams(query);
  if (which === "newer") {
    next.delete("before");
    if (body.items.length) next.set("after", String(body.items[0].id));
    else next.delete("after");
  } else if (which === "older") {
    next.delete("after");
    next.set("before", String(body.items[body.items.length - 1].id));
  } else {
    next.delete("after");
    next.delete("before");
  }
  return next;
}

function compareSelected() {
  navigate("/compare", new URLSearchParams({ ids: [...selection].sort((a, b) => a - b).join(",") }));
}

function selectJob(page, id, checked) {
  if (checked) selection.add(id);
  else selection.delete(id);
  renderSelection(page.ui);
  page.ui.table.selectAll.checked = page.jobs.length > 0 && page.jobs.every((j) => selection.has(j.id));
}

function selectWholePage(page) {
  const { checked } = page.ui.table.selectAll;
  for (const job of page.jobs) selectJob(page, job.id, checked);
  render(page, page.body);
}

function clearSelection(page) {
  selection.clear();
  renderSelection(page.ui);
  render(page, page.body);
}

async function cancelJob(page, id, button) {
  button.disabled = true;
  try {
    await api(`jobs/${id}/cancel`, { method: "POST" });
    showError(null);
  } catch (exc) {
    showError(exc instanceof ApiError && exc.status === 409 ? exc.message : `Cancel failed: ${exc.message}`);
  } finally {
    button.disabled = false;
    refresh(page);
  }
}

function wire(page) {
  const { filters, compare, clear, table, pager } = page.ui;
  const refilter = () => navigate("/", filterParams(filters));
  for (const el of Object.values(filters)) el.addEventListener("change", refilter);
  compare.addEventListener("click", compareSelected);
  clear.addEventListener("click", () => clearSelection(page));
  table.selectAll.addEventListener("change", () => selectWholePage(page));
  for (const which of ["newest", "newer", "older"]) {
    pager[which].addEventListener("click", () => {
      if (page.body) navigate("/", pageParams(page.query, page.body, which));
    });
  }
}

// ---- rendering an answer of GET /jobs --------------------------------------------------------

function renderSelection({ compare, clear }) {
  setText(compare, `Compare selected (${selection.size})`);
  compare.disabled = selection.size === 0;
  clear.hidden = selection.size === 0;
}

function emptyBox(filtered) {
  if (filtered) {
    return h("div", { class: "empty" }, h("h2", { text: "No jobs match these filters" }),
      h("p", {}, h("a", { href: "#/", text: "Show every job" }), " or submit one with the ",
        h("a", { href: "#/new", text: "New job" }), " form."));
  }
  const box = document.getElementById("empty-jobs").content.cloneNode(true);
  for (const el of box.querySelectorAll("[data-api-url]")) {
    el.textContent = API_BASE.href.replace(/\/$/, "");
  }
  return box;
}

function renderEmpty({ ui, query }) {
  ui.table.wrap.hidden = true;
  ui.pager.pager.hidden = true;
  ui.empty.replaceChildren(emptyBox(query.get("status") || query.get("model")));
  ui.empty.hidden = false;
}

/** Update the rows in place (new ones built, gone ones dropped), in the answer's order. */
function renderRows(page, items) {
  const { rows } = page;
  const { tbody, selectAll } = page.ui.table;
  const actions = { onCancel: (id, button) => cancelJob(page, id, button), onSelect: (id, checked) => selectJob(page, id, checked) };
  const ordered = items.map((job) => {
    let row = rows.get(job.id);
    if (row) renderRow(row, job);
    else rows.set(job.id, (row = buildRow(job, actions)));
    return row.tr;
  });
  for (const id of [...rows.keys()]) if (!items.some((j) => j.id === id)) rows.delete(id);
  // Move rows only when the order changed, so a button being clicked is not replaced.
  const current = [...tbody.children];
  if (current.length !== ordered.length || current.some((tr, i) => tr !== ordered[i])) {
    tbody.replaceChildren(...ordered);
  }
  selectAll.checked = items.every((j) => selection.has(j.id));
}

function renderPager({ ui, query }, body) {
  const { text, newest, newer, older } = ui.pager;
  const first = body.offset + 1;
  const last = body.offset + body.items.length;
  setText(text, body.items.length
    ? `${first.toLocaleString()}–${last.toLocaleString()} of ${body.total.toLocaleString()} jobs`
    : `no jobs on this page (${body.total.toLocaleString()} in all)`);
  newer.disabled = body.offset === 0;
  newest.disabled = body.offset === 0 && !query.get("before") && !query.get("after");
  older.disabled = last >= body.total;
}

function render(page, body) {
  if (!body) return;
  page.body = body;
  page.jobs = body.items;
  if (body.total === 0) {
    renderEmpty(page);
    return;
  }
  const { ui } = page;
  ui.empty.hidden = true;
  ui.table.wrap.hidden = false;
  ui.pager.pager.hidden = false;
  renderRows(page, body.items);
  renderPager(page, body);
}

// ---- live ------------------------------------------------------------------------------------

function liveBadge() {
  return document.getElementById("live");
}

async function refresh(page) {
  try {
    // jobs?limit=N&before=ID: keyset pages (an index range each), polled every REFRESH_MS
    const body = await api(`jobs?${page.query.toString()}`);
    render(page, body);
    page.view.dataset.state = "ready";
    liveBadge().hidden = false;
    if (page.unreachable) showError(null);
    page.unreachable = false;
  } catch (exc) {
    liveBadge().hidden = true;
    page.unreachable = true;
    showError(`Cannot reach the API: ${exc.message}`);
  }
}

export async function mount(view, { params }) {
  const query = queryFrom(params);
  const models = await catalogue().catch(() => ({}));
  const page = {
    view, query, ui: buildPage(view, query, models),
    rows: new Map(), // job id -> the row's elements
    body: null, // the last answer of GET /jobs shown
    jobs: [], // its items
    unreachable: false,
  };
  wire(page);
  renderSelection(page.ui);
  const stop = poll(() => refresh(page), REFRESH_MS);
  const cancelPreload = preloadChartsWhenIdle();
  return () => {
    stop();
    cancelPreload();
    liveBadge().hidden = true;
  };
}
