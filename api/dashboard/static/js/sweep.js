// One sweep (#/sweeps/7): its spec, status and trial counts, the best trial, a Cancel button;
// the trials table (sortable, each row a link to its job, ticked rows compared on the compare
// page); the best objective so far, parallel coordinates of parameters and objective, each
// parameter's importance and every trial's objective curve. Polls while the sweep runs, once
// more after it ends, then stops. Three requests per pass whatever the number of trials:
// GET /sweeps/{id}, and, only when a trial moved, GET /compare/series for every trial's
// objective curve and GET /sweeps/{id}/importance when the completed trials changed.
"use strict";

import { api, ApiError, poll } from "./api.js";
import { showError } from "./banner.js";
import { loadPlotly, purge } from "./charts.js";
import { fmtMetric, fmtTime, fmtValue, h, scrollTable, setText, statusBadge } from "./dom.js";
import { navigate } from "./router.js";
import { REFRESH_MS } from "./state.js";
import { drawBestSoFar, drawCurves, drawImportance, drawParallel, paramText } from "./sweepcharts.js";
import { objectiveText, trialsBar, updateTrialsBar } from "./sweeps.js";

// Points per trial's curve (the objective is recorded once an epoch, so few are needed): 50 is
// the smallest of the levels the server keeps summarised for finished runs (core/metrics.py
// SUMMARY_LEVELS), so the curves of a finished sweep are read from those summaries.
const CURVE_POINTS = 50;
const CURVE_RUNS_MAX = 1000; // what one GET /compare/series accepts
const STATUS_ORDER = ["running", "queued", "succeeded", "pruned", "failed", "cancelled"];
// Trials shown at once: a table of a thousand rows takes the browser half a second to lay out.
const ROWS_PER_PAGE = [100, 250, 1000];

// ---- small pieces ----------------------------------------------------------------------------

function kv(label, value) {
  const dd = h("dd");
  if (value instanceof Node) dd.append(value);
  else dd.textContent = value;
  return h("div", { dataset: { key: label } }, h("dt", { text: label }), dd);
}

function kvTable(id, entries) {
  return scrollTable(h("table", { class: "kv-table", id },
    h("tbody", {}, entries.map(([k, v]) => h("tr", {}, h("th", { text: k }), h("td", { text: v }))))));
}

function chartBox(id, title, note) {
  const plot = h("div", { class: "chart chart-empty-state", id });
  const empty = h("p", { class: "chart-empty", text: note });
  const caption = h("p", { class: "muted chart-caption", hidden: true });
  return { box: h("section", { class: "card chart-card" }, h("h3", { text: title }), empty, plot, caption), plot, empty, caption };
}

/** A searched dimension as text: "relu | tanh", or "0.0001 … 0.1 (log)". */
function spaceText(spec) {
  if (Array.isArray(spec.values)) return spec.values.map(paramText).join(" | ");
  const extras = [spec.log ? "log" : null, spec.step ? `step ${spec.step}` : null].filter(Boolean);
  return `${paramText(spec.low)} … ${paramText(spec.high)}${extras.length ? ` (${extras.join(", ")})` : ""}`;
}

function earlyStoppingText(es) {
  if (!es || !es.method || es.method === "none") return "none";
  const parts = [`min ${es.min_epochs ?? 1} epochs`];
  if (es.method === "asha") parts.push(`reduction factor ${es.reduction_factor ?? 3}`);
  return `${es.method} (${parts.join(", ")})`;
}

const hasValue = (v) => v !== null && v !== undefined;

// ---- building the page -----------------------------------------------------------------------

function buildCharts() {
  return {
    best: chartBox("sweep-best-chart", "Best objective so far, by trial number", "Appears when the first trial completes."),
    parallel: chartBox("sweep-parallel", "Parameters and objective (parallel coordinates)",
      "Appears when the first trial has reported its objective."),
    importance: chartBox("sweep-importance", "Parameter importance", "Computing the importances…"),
    curves: chartBox("sweep-curves", "Objective per epoch, every trial", "Curves appear once trials report their objective."),
  };
}

function buildTrialsCard() {
  const selectAll = h("input", { type: "checkbox", id: "trials-select-all", "aria-label": "select every trial" });
  const head = h("tr");
  const tbody = h("tbody");
  const compare = h("button", { type: "button", class: "btn btn-primary", id: "compare-trials" });
  const clear = h("button", { type: "button", class: "btn btn-link", text: "clear selection" });
  const count = h("span", { class: "muted", id: "trials-count" });
  const table = h("table", { class: "data-table trials-table", id: "sweep-trials" }, h("thead", {}, head), tbody);
  const pagerText = h("span", { class: "pager-text", id: "trials-pager-text" });
  const previous = h("button", { type: "button", class: "btn", id: "trials-previous", text: "← Previous" });
  const next = h("button", { type: "button", class: "btn", id: "trials-next", text: "Next →" });
  const size = h("select", { id: "trials-page-size", "aria-label": "trials per page" },
    ROWS_PER_PAGE.map((n) => h("option", { value: String(n), text: `${n} per page` })));
  const pager = h("div", { class: "pager", hidden: true }, pagerText, h("span", { class: "pager-buttons" }, size, previous, next));
  const box = h("section", { class: "card" },
    h("div", { class: "card-head" }, h("h2", {}, "Trials ", count), h("span", { class: "actions" }, clear, compare)),
    h("p", { class: "muted", text: "Click a column's name to sort by it; objective sorts best first. Tick trials to compare their runs." }),
    scrollTable(table, "tall"), pager);
  return { box, selectAll, head, tbody, compare, clear, count, pager, pagerText, previous, next, size };
}

/** Every element of the page, appended to `view`; the handlers come from wire(). */
function buildPage(view) {
  const ui = {
    title: h("h1", { class: "job-title" }),
    badge: h("span"),
    cancel: h("button", { type: "button", class: "btn btn-danger", id: "cancel-sweep", text: "Cancel sweep", hidden: true }),
    summary: h("dl", { class: "summary", id: "sweep-summary" }),
    bestBody: h("div", { id: "sweep-best" }),
    errorText: h("pre", { class: "error-text", id: "sweep-error" }),
    spec: h("div", { class: "spec-tables" }),
    charts: buildCharts(),
    trials: buildTrialsCard(),
  };
  ui.errorBox = h("section", { class: "card error-card", hidden: true }, h("h2", { text: "Error" }), ui.errorText);
  const { best, parallel, importance, curves } = ui.charts;
  view.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/sweeps", text: "← Sweeps" })),
    h("div", { class: "page-head" }, h("div", { class: "title-line" }, ui.title, ui.badge),
      h("div", { class: "actions" }, ui.cancel)),
    h("section", { class: "card" }, ui.summary),
    ui.errorBox,
    h("div", { class: "chart-grid" },
      h("section", { class: "card best-card" }, h("h2", { text: "Best trial" }), ui.bestBody),
      best.box),
    h("div", { class: "chart-grid chart-grid-wide" }, parallel.box),
    h("div", { class: "chart-grid" }, importance.box, curves.box),
    ui.trials.box,
    h("section", { class: "card" }, h("h2", { text: "Search space and fixed settings" }), ui.spec),
  );
  return ui;
}

// ---- summary, best trial, spec ---------------------------------------------------------------

function renderSummary(page, sweep) {
  const { ui } = page;
  setText(ui.title, `#${sweep.id} ${sweep.name}`);
  if (ui.badge.textContent !== sweep.status) ui.badge.replaceChildren(statusBadge(sweep.status));
  ui.cancel.hidden = sweep.status !== "running";
  let bar = ui.summary.querySelector(".progress"); // kept, so its bar moves smoothly
  if (bar) updateTrialsBar(bar, sweep);
  else bar = trialsBar(sweep);
  ui.summary.replaceChildren(
    kv("model", sweep.model), kv("dataset", sweep.dataset), kv("method", sweep.method),
    kv("objective", objectiveText(sweep.objective)),
    kv("trials", bar),
    kv("max concurrent", String(sweep.max_concurrent)),
    kv("early stopping", earlyStoppingText(sweep.early_stopping)),
    kv("seed", String(sweep.seed)), kv("device", sweep.device), kv("priority", String(sweep.priority)),
    kv("owner", sweep.owner),
    kv("created", fmtTime(sweep.created_at)), kv("finished", fmtTime(sweep.finished_at)),
  );
  ui.errorBox.hidden = !sweep.error;
  setText(ui.errorText, sweep.error || "");
}

function renderBest({ bestBody }, sweep) {
  const { best, objective } = sweep;
  if (!best) {
    bestBody.replaceChildren(h("p", { class: "muted", text: "No trial has completed yet." }));
    return;
  }
  bestBody.replaceChildren(
    h("p", { class: "best-line" },
      h("a", { href: `#/jobs/${best.job_id}`, id: "best-trial-link", text: `trial ${best.number} · job #${best.job_id}` }),
      " ", h("span", { class: "muted", text: best.name })),
    h("p", { class: "best-value" }, `${objective.metric}: `,
      h("strong", { id: "best-objective", text: fmtMetric(objective.metric, best.objective) })),
    kvTable("best-params", Object.entries(best.params).map(([k, v]) => [k, paramText(v)])));
}

/** The spec never changes: drawn from the first answer only. */
function renderSpec({ spec }, sweep) {
  const fixed = Object.entries(sweep.hyperparameters).sort(([a], [b]) => a.localeCompare(b));
  spec.replaceChildren(
    h("h3", { text: "Searched" }),
    kvTable("sweep-space", Object.entries(sweep.space).map(([k, s]) => [k, spaceText(s)])),
    h("h3", { text: "Fixed for every trial" }),
    fixed.length ? kvTable("sweep-fixed", fixed.map(([k, v]) => [k, fmtValue(v)]))
      : h("p", { class: "muted", text: "Nothing: every other setting takes the model's default." }));
}

// ---- the trials table ------------------------------------------------------------------------

function columnsOf(sweep) {
  return [
    { key: "number", title: "trial", num: true },
    { key: null, title: "job" },
    { key: "status", title: "status" },
    ...Object.keys(sweep.space).map((name) => ({ key: `param:${name}`, title: name, param: name })),
    { key: "objective", title: sweep.objective.metric, num: true },
    { key: "last", title: "last reported", num: true },
  ];
}

/** Compare two trials for the column `key`; `dir` 1 is the column's natural order (best first). */
function comparator(key, dir, goal) {
  const byNumber = (a, b) => a.number - b.number;
  const byValue = (get) => (a, b) => {
    const x = get(a);
    const y = get(b);
    if (!hasValue(x) || !hasValue(y)) return hasValue(x) ? -1 : hasValue(y) ? 1 : byNumber(a, b); // none: last
    if (x === y) return byNumber(a, b);
    return (goal === "min" ? x - y : y - x) * dir;
  };
  if (key === "objective") return byValue((t) => t.objective);
  if (key === "last") return byValue((t) => t.last_objective);
  if (key === "status") {
    return (a, b) => (STATUS_ORDER.indexOf(a.status) - STATUS_ORDER.indexOf(b.status)) * dir || byNumber(a, b);
  }
  if (key.startsWith("param:")) {
    const name = key.slice(6);
    return (a, b) => {
      const x = a.params[name];
      const y = b.params[name];
      const order = typeof x === "number" && typeof y === "number" ? x - y : paramText(x).localeCompare(paramText(y), undefined, { numeric: true });
      return order * dir || byNumber(a, b);
    };
  }
  return (a, b) => byNumber(a, b) * dir; // number
}

function renderHead(page) {
  const { head, selectAll } = page.ui.trials;
  const { sort } = page;
  head.replaceChildren(h("th", { class: "col-select" }, selectAll), ...page.columns.map((c) => {
    if (!c.key) return h("th", { text: c.title });
    const active = sort.key === c.key;
    const button = h("button", { type: "button", class: "sort-button", dataset: { sort: c.key },
      text: `${c.title}${active ? (sort.dir === 1 ? " ▲" : " ▼") : ""}` });
    let ariaSort = null;
    if (active) ariaSort = sort.dir === 1 ? "ascending" : "descending";
    return h("th", { class: c.num ? "num" : null, "aria-sort": ariaSort, dataset: { column: c.key } }, button);
  }));
}

function trialSignature(t) {
  return `${t.status}|${t.epoch}|${t.objective}|${t.last_objective}|${t.error || ""}`;
}

function buildTrialRow(page, trial) {
  const check = h("input", { type: "checkbox", class: "select-trial", "aria-label": `select trial ${trial.number}`,
    dataset: { jobId: String(trial.job_id) } });
  const status = h("td", { dataset: { label: "status" } });
  const objective = h("td", { class: "num", dataset: { label: "objective" } });
  const last = h("td", { class: "num", dataset: { label: "last reported" } });
  const cells = [
    h("td", { class: "col-select" }, check),
    h("td", { class: "num", dataset: { label: "trial" } }, h("a", { href: `#/jobs/${trial.job_id}`, text: String(trial.number) })),
    h("td", { class: "run-cell", dataset: { label: "job" } }, h("a", { href: `#/jobs/${trial.job_id}`, text: `#${trial.job_id}` }),
      " ", h("span", { class: "run-name", text: trial.name, title: trial.name })),
    status,
    page.paramNames.map((n) => h("td", { class: "param", dataset: { label: n }, text: paramText(trial.params[n]) })),
    objective, last,
  ];
  const tr = h("tr", { dataset: { jobId: String(trial.job_id), trial: String(trial.number) } }, cells);
  return { tr, check, status, objective, last, sig: null };
}

function renderTrialRow(page, row, trial) {
  const sig = trialSignature(trial);
  row.check.checked = page.selected.has(trial.job_id);
  const isBest = page.sweep.best && page.sweep.best.job_id === trial.job_id;
  row.tr.className = `trial-row row-${trial.status}${isBest ? " row-best" : ""}`;
  if (row.sig === sig) return;
  row.sig = sig;
  const { metric } = page.sweep.objective;
  const note = trial.status === "pruned" ? `at epoch ${trial.pruned_at_epoch ?? trial.epoch}` : null;
  row.status.replaceChildren(statusBadge(trial.status));
  if (note) row.status.append(h("span", { class: "muted status-note", text: ` ${note}` }));
  row.status.title = trial.error || "";
  setText(row.objective, fmtMetric(metric, trial.objective));
  setText(row.last, hasValue(trial.last_objective) ? `${fmtMetric(metric, trial.last_objective)} @ ${trial.epoch}` : "–");
}

/**
 * Sort every trial, then show one page of them: rows are built when first shown and updated in
 * place (a row whose trial did not move is left alone).
 */
function renderTrials(page) {
  const { trials, rows } = page;
  const { tbody, count } = page.ui.trials;
  const sorted = [...trials].sort(comparator(page.sort.key, page.sort.dir, page.sweep.objective.goal));
  const perPage = page.rowsPerPage;
  page.tablePage = Math.min(page.tablePage, Math.max(0, Math.ceil(sorted.length / perPage) - 1));
  const first = page.tablePage * perPage;
  const shown = sorted.slice(first, first + perPage);
  const ordered = shown.map((trial) => {
    let row = rows.get(trial.job_id);
    if (!row) rows.set(trial.job_id, (row = buildTrialRow(page, trial)));
    renderTrialRow(page, row, trial);
    return row.tr;
  });
  renderPager(page.ui.trials, first, shown.length, sorted.length, perPage);
  const current = tbody.children;
  let same = current.length === ordered.length;
  for (let i = 0; same && i < ordered.length; i += 1) same = current[i] === ordered[i];
  if (!same) {
    const fragment = document.createDocumentFragment();
    fragment.append(...ordered);
    tbody.replaceChildren(fragment);
  }
  setText(count, `(${trials.length} of ${page.sweep.max_trials})`);
  renderSelection(page);
}

function renderPager({ pager, pagerText, previous, next }, first, shown, total, perPage) {
  pager.hidden = total <= ROWS_PER_PAGE[0];
  setText(pagerText, `${(first + 1).toLocaleString()}–${(first + shown).toLocaleString()} of ${total.toLocaleString()} trials`);
  previous.disabled = first === 0;
  next.disabled = first + perPage >= total;
}

function renderSelection(page) {
  const { compare, clear, selectAll } = page.ui.trials;
  const n = page.selected.size;
  setText(compare, `Compare selected (${n})`);
  compare.disabled = n === 0;
  clear.hidden = n === 0;
  selectAll.checked = page.trials.length > 0 && n === page.trials.length;
}

// ---- what the controls do --------------------------------------------------------------------

function sortBy(page, key) {
  if (page.sort.key === key) page.sort.dir = -page.sort.dir;
  else page.sort = { key, dir: 1 };
  page.tablePage = 0;
  renderHead(page);
  renderTrials(page);
}

function compareSelected(page) {
  const ids = [...page.selected].sort((a, b) => a - b);
  navigate("/compare", new URLSearchParams({ ids: ids.join(",") }));
}

async function cancelSweep(page) {
  const { cancel } = page.ui;
  cancel.disabled = true;
  try {
    await api(`sweeps/${page.sweepId}/cancel`, { method: "POST" }); // api() adds the CSRF header
    showError(null);
  } catch (exc) {
    showError(exc instanceof ApiError && exc.status === 409 ? exc.message : `Cancel failed: ${exc.message}`);
  }
  cancel.disabled = false;
  if (!page.stopped) await refresh(page);
}

function wire(page) {
  const { trials, cancel } = page.ui;
  cancel.addEventListener("click", () => cancelSweep(page));
  trials.compare.addEventListener("click", () => compareSelected(page));
  trials.clear.addEventListener("click", () => {
    page.selected.clear();
    renderTrials(page);
  });
  trials.selectAll.addEventListener("change", () => {
    if (trials.selectAll.checked) for (const t of page.trials) page.selected.add(t.job_id);
    else page.selected.clear();
    renderTrials(page);
  });
  // One listener for every row's checkbox and every column's sort button.
  trials.tbody.addEventListener("change", (event) => {
    const box = event.target.closest("input.select-trial");
    if (!box) return;
    const id = Number(box.dataset.jobId);
    if (box.checked) page.selected.add(id);
    else page.selected.delete(id);
    renderSelection(page);
  });
  const turn = (by) => {
    page.tablePage = Math.max(0, page.tablePage + by);
    renderTrials(page);
  };
  trials.previous.addEventListener("click", () => turn(-1));
  trials.next.addEventListener("click", () => turn(1));
  trials.size.addEventListener("change", () => {
    page.rowsPerPage = Number(trials.size.value);
    page.tablePage = 0;
    renderTrials(page);
  });
  trials.head.addEventListener("click", (event) => {
    const button = event.target.closest("button.sort-button");
    if (button) sortBy(page, button.dataset.sort);
  });
}

// ---- charts ----------------------------------------------------------------------------------

/** "3-7,9,12-13": the trials' job ids as ranges, so that 1,000 ids fit GET /compare/series. */
export function idRanges(ids) {
  const sorted = [...new Set(ids)].sort((a, b) => a - b);
  const parts = [];
  for (let i = 0; i < sorted.length; i += 1) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j += 1;
    parts.push(j > i ? `${sorted[i]}-${sorted[j]}` : String(sorted[i]));
    i = j;
  }
  return parts.join(",");
}

async function loadCurves(page) {
  const ids = page.trials.filter((t) => t.status !== "queued").slice(0, CURVE_RUNS_MAX).map((t) => t.job_id);
  if (!ids.length) return null;
  const body = await api(`compare/series?${new URLSearchParams({
    ids: idRanges(ids), names: page.sweep.objective.metric, max_points: String(CURVE_POINTS) })}`);
  return body.series;
}

async function loadImportance(page) {
  const completed = page.sweep.counts.succeeded || 0;
  if (page.importance && page.importanceFrom === completed) return page.importance;
  page.importance = await api(`sweeps/${page.sweepId}/importance`);
  page.importanceFrom = completed;
  return page.importance;
}

/** GET /sweeps/{id}/importance: bars, or why there are none; the API's note under them. */
async function renderImportance(chart, found) {
  const empty = Object.keys(found.importances).length === 0;
  chart.empty.hidden = !empty;
  chart.plot.hidden = empty;
  chart.caption.hidden = empty || !found.note;
  setText(chart.caption, empty ? "" : found.note || "");
  if (empty) {
    setText(chart.empty, found.trials_used < 2
      ? `Importance needs two completed trials (${found.trials_used} so far).`
      : `No parameter varied among the ${found.trials_used} completed trials.`);
    return;
  }
  chart.plot.dataset.evaluator = found.evaluator;
  await drawImportance(chart.plot, found.importances);
}

async function drawChart(chart, drawing) {
  chart.empty.hidden = drawing !== null;
  if (drawing !== null) await drawing;
}

/**
 * What the charts need beyond GET /sweeps/{id}, asked for as soon as the sweep is known, and
 * only when a trial moved since the last pass (else null): the trials' curves, the importances.
 */
function startChartFetches(page) {
  const signature = page.trials.map((t) => `${t.job_id}:${t.status}:${t.epoch}`).join(",");
  if (signature === page.chartsSignature) return null;
  const pass = { signature, failed: false };
  const failing = (what) => (exc) => {
    pass.failed = true;
    page.chartsSignature = null; // the next pass asks again
    showError(`Could not load the ${what}: ${exc.message}`);
    return null;
  };
  pass.series = loadCurves(page).catch(failing("trials' curves"));
  // After the curves: both are answered by the API's CPU, and the curves hold the page back.
  pass.importance = pass.series.then(() => loadImportance(page)).catch(failing("parameter importances"));
  return pass;
}

/**
 * Redraw the charts. The best-so-far and the parallel coordinates come from GET /sweeps/{id}
 * alone and are drawn while the curves are fetched. The importances (PED-ANOVA on the server,
 * the slowest answer) are drawn when they come, without holding the page back.
 */
async function renderCharts(page, pass) {
  if (!pass) return;
  const { charts } = page.ui;
  const { sweep, trials } = page;
  await page.plotly;
  if (page.stopped) return;
  await drawChart(charts.best, drawBestSoFar(charts.best.plot, sweep, trials));
  await drawChart(charts.parallel, drawParallel(charts.parallel.plot, sweep, trials));
  performance.mark("sweep:first-charts");
  pass.importance.then(async (found) => {
    if (page.stopped || !found) return;
    await renderImportance(charts.importance, found);
    charts.importance.box.dataset.state = "ready";
  });
  const series = await pass.series;
  if (page.stopped) return;
  await drawChart(charts.curves, series ? drawCurves(charts.curves.plot, sweep, trials, series) : null);
  if (!pass.failed) page.chartsSignature = pass.signature;
}

// ---- live ------------------------------------------------------------------------------------

function showMissing({ view, sweepId }) {
  view.replaceChildren(h("div", { class: "empty" }, h("h2", { text: `Sweep ${sweepId} does not exist` }),
    h("p", {}, h("a", { href: "#/sweeps", text: "Back to the sweeps list" }))));
  view.dataset.state = "ready";
}

/** One pass: the sweep and its trials, then the charts. False: stop polling. */
async function refresh(page) {
  let sweep;
  try {
    sweep = await api(`sweeps/${page.sweepId}`);
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 404) {
      showMissing(page);
      return false;
    }
    showError(`Cannot reach the API: ${exc.message}`);
    return true;
  }
  if (page.stopped) return false;
  performance.mark("sweep:data");
  showError(null);
  page.sweep = sweep;
  page.trials = sweep.trials;
  if (!page.columns) {
    page.columns = columnsOf(sweep);
    page.paramNames = Object.keys(sweep.space);
    renderHead(page);
    renderSpec(page.ui, sweep);
  }
  const pass = startChartFetches(page);
  renderSummary(page, sweep);
  renderBest(page.ui, sweep);
  renderTrials(page);
  performance.mark("sweep:table");
  await renderCharts(page, pass);
  performance.mark("sweep:drawn");
  page.view.dataset.state = "ready";
  page.view.dataset.status = sweep.status;
  const running = sweep.status === "running";
  document.getElementById("live").hidden = !running;
  if (!running) {
    if (page.finalFetchDone) return false; // ended: one more pass caught the last trials
    page.finalFetchDone = true;
  }
  return true;
}

export async function mount(view, { match }) {
  performance.mark("sweep:mount");
  const page = {
    view, sweepId: Number(match[1]), ui: buildPage(view),
    sweep: null, trials: [], columns: null, paramNames: [],
    rows: new Map(), // job id -> the trial's row
    selected: new Set(), // job ids ticked for "Compare selected"
    sort: { key: "number", dir: 1 }, tablePage: 0, rowsPerPage: ROWS_PER_PAGE[0],
    chartsSignature: null, importance: null, importanceFrom: null,
    finalFetchDone: false, stopped: false,
    plotly: loadPlotly().catch((exc) => showError(exc.message)),
  };
  wire(page);
  const stop = poll(() => refresh(page), REFRESH_MS);
  return () => {
    page.stopped = true;
    stop();
    document.getElementById("live").hidden = true;
    for (const chart of Object.values(page.ui.charts)) purge(chart.plot);
  };
}
