// Compare runs (#/compare?ids=3,4,10-20): overlaid curves named by the settings that differ, a
// config table (optionally only the differing keys), best / final / value-at-epoch per metric,
// and a scatter of a hyperparameter against a run's final (or best) metric. One request draws it
// all: GET /compare/series, downsampled on the server.
"use strict";

import { api, poll } from "./api.js";
import { catalogue, headlineMetric, metricGoal } from "./catalogue.js";
import { baseLayout, draw, loadPlotly, plotText, purge, runColor, runDash, shorten } from "./charts.js";
import { ACTIVE, fmtMetric, fmtValue, h, scrollTable, setText, statusBadge } from "./dom.js";
import { navigate } from "./router.js";
import { REFRESH_MS } from "./state.js";

const BASE_NAMES = ["train_loss", "val_loss", "val_accuracy", "val_perplexity"];
const POINT_BUDGET = 20000; // points per chart, shared by the runs
// Up to this many runs plotly draws each chart's legend; past it one HTML legend above the
// charts serves them all (a hundred-entry SVG legend per chart costs more than the curves).
const PLOTLY_LEGEND_MAX = 10;

// The points per curve the page asks for: its budget shared by the runs, rounded down to one
// of these levels (core/metrics.py COMPARE_LEVELS), so never over the budget (but for the
// floor of 50 past 400 runs), and pages of many runs ask for the levels the server stores
// once computed for finished runs (50 and 100 ahead of any request).
const POINT_LEVELS = [1000, 500, 200, 100, 50];

function maxPointsFor(runs) {
  const share = Math.floor(POINT_BUDGET / Math.max(1, runs));
  return POINT_LEVELS.find((level) => level <= share) ?? POINT_LEVELS[POINT_LEVELS.length - 1];
}

/** How many runs "3,4,10-20" names, counted here to size the downsampling before asking. */
function countRuns(idsText) {
  return idsText.split(",").reduce((n, part) => {
    const [a, b] = part.split("-").map(Number);
    return n + (Number.isFinite(b) && b >= a ? b - a + 1 : 1);
  }, 0);
}

function perEpoch(name) {
  return name.startsWith("val_") || name.startsWith("grad_norm/");
}

function valueText(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/**
 * The metric these runs are judged by: the first of their families' headline metrics (as the
 * API names them) that `names` holds; else val_loss; else the first name.
 */
function headlineName(page, names) {
  const families = [...new Set(page.runs.map((r) => r.model))];
  const found = families.map((f) => headlineMetric(page.models, f)).find((n) => n && names.includes(n));
  if (found) return found;
  return names.includes("val_loss") ? "val_loss" : names[0];
}

/** The best of `values` for a metric whose goal is "min" or "max"; null when it has no goal. */
function bestOf(values, goal) {
  if (!values.length || !goal) return null;
  return goal === "min" ? Math.min(...values) : Math.max(...values);
}

// ---- before there is anything to draw --------------------------------------------------------

function buildForm(idsText) {
  const idsInput = h("input", { type: "text", id: "compare-ids", value: idsText, placeholder: "e.g. 3,4,10-20",
    "aria-label": "job ids to compare", autocomplete: "off" });
  const go = h("button", { type: "submit", class: "btn btn-primary", text: "Compare" });
  return h("form", { class: "toolbar", on: { submit: (e) => {
    e.preventDefault();
    const ids = idsInput.value.replace(/\s+/g, "");
    navigate("/compare", ids ? new URLSearchParams({ ids }) : null);
  } } }, h("label", { class: "field-inline" }, "Runs ", idsInput), go,
  h("span", { class: "muted", text: "ids and ranges; or tick runs on the Jobs page" }));
}

function showPickRuns(view) {
  view.append(h("div", { class: "empty", id: "compare-empty" },
    h("h2", { text: "Pick runs to compare" }),
    h("p", {}, "Tick runs on the ", h("a", { href: "#/", text: "Jobs page" }),
      " and press “Compare selected”, or type job ids above (for example ",
      h("code", { text: "3,4,10-20" }), ")."),
    h("p", { class: "muted", text: "Any number of runs: curves are downsampled on the server, so a hundred long runs open in a second." })));
  view.dataset.state = "ready";
}

function showRefused(view, exc) {
  view.append(h("div", { class: "empty" }, h("h2", { text: "These runs cannot be compared" }),
    h("p", { class: "error-text", text: Array.isArray(exc.detail) ? exc.detail.map((d) => d.msg).join("; ") : exc.message })));
  view.dataset.state = "error";
}

// ---- data ------------------------------------------------------------------------------------

function fetchSeries(idsText, names, maxPoints) {
  return api(`compare/series?${new URLSearchParams({
    ids: idsText, names: names.join(","), max_points: String(maxPoints) })}`);
}

/** The first answer (the base metrics of every run), plotly.js and the model catalogue. */
async function loadFirst(idsText, maxPoints) {
  performance.mark("compare:request");
  const [data, , models] = await Promise.all([
    fetchSeries(idsText, BASE_NAMES, maxPoints), loadPlotly(), catalogue().catch(() => ({})),
  ]);
  performance.mark("compare:data");
  return { data, models };
}

/** What the page knows: the runs, their series by id and name, and which names are fetched. */
function pageState(view, idsText, maxPoints, { data, models }) {
  const runs = data.runs;
  return {
    view, idsText, maxPoints, data, models, runs,
    series: data.series, // {id: {name: {step, epoch, value, best, final, epochs}}}
    loaded: new Set(data.names),
    allNames: [...new Set(runs.flatMap((r) => r.metric_names))].sort(),
    allKeys: ["model", "dataset", ...[...new Set(runs.flatMap((r) => Object.keys(r.hyperparameters)))].sort()],
    index: new Map(runs.map((r, i) => [r.id, i])),
    manyRuns: runs.length > PLOTLY_LEGEND_MAX,
    ui: null,
  };
}

/** Fetch the series of the names not fetched yet (a metric picked in a menu). */
async function ensureLoaded(page, names) {
  const missing = names.filter((n) => n && !page.loaded.has(n));
  if (!missing.length) return;
  const more = await fetchSeries(page.idsText, missing, page.maxPoints);
  for (const [id, byName] of Object.entries(more.series)) Object.assign(page.series[id] ||= {}, byName);
  for (const n of missing) page.loaded.add(n);
}

// ---- how a run is shown ----------------------------------------------------------------------

function swatch(page, run) {
  const i = page.index.get(run.id);
  return h("span", { class: `swatch dash-${runDash(i)}`, style: { borderColor: runColor(i) }, "aria-hidden": "true" });
}

function runCell(page, run) {
  return h("td", { class: "run-cell" }, swatch(page, run),
    h("a", { href: `#/jobs/${run.id}`, text: `#${run.id}` }), " ", h("span", { class: "run-name", text: run.name || "" }));
}

function settingOf(run, key) {
  return key === "model" || key === "dataset" ? run[key] : run.hyperparameters[key];
}

// ---- curves ----------------------------------------------------------------------------------

function buildCurvePanel(page, initial, id) {
  const { allNames } = page;
  const select = h("select", { "aria-label": "metric", id: `${id}-metric` },
    allNames.map((n) => h("option", { value: n, text: n })));
  select.value = allNames.includes(initial) ? initial : allNames[0] || "";
  const plot = h("div", { class: "chart", id });
  const note = h("p", { class: "chart-empty", hidden: true });
  const box = h("section", { class: "card chart-card" },
    h("div", { class: "card-head" }, h("label", { class: "field-inline" }, "Metric ", select)), note, plot);
  return { select, plot, note, box };
}

function buildLegend(page) {
  const { runs } = page;
  return h("div", { class: "run-legend card", id: "run-legend", hidden: !page.manyRuns },
    h("h2", { text: `${runs.length} runs, named by the settings that differ` }),
    h("ul", {}, runs.map((run) => h("li", { title: `#${run.id} ${run.label}` }, swatch(page, run),
      h("a", { href: `#/jobs/${run.id}`, text: `#${run.id}` }), " ", h("span", { text: run.label })))));
}

/** Two panels: the training loss (or the first metric), and the runs' headline metric. */
function buildCurves(page) {
  const { allNames } = page;
  const firstName = allNames.includes("train_loss") ? "train_loss" : allNames[0];
  const panels = [
    buildCurvePanel(page, firstName, "compare-chart-a"),
    buildCurvePanel(page, headlineName(page, allNames.filter((n) => n !== firstName)) || firstName, "compare-chart-b"),
  ];
  const row = h("div", { class: `chart-grid${page.manyRuns ? " chart-grid-wide" : ""}` }, panels.map((p) => p.box));
  return { logToggle: h("input", { type: "checkbox", id: "log-y" }), row, panels, legend: buildLegend(page) };
}

function curveTrace(page, run, s, xKey) {
  const i = page.index.get(run.id);
  return {
    type: "scatter", mode: xKey === "epoch" && s.step.length <= 60 ? "lines+markers" : "lines",
    name: plotText(shorten(`#${run.id} ${run.label}`)), x: s[xKey], y: s.value,
    hovertext: plotText(`#${run.id} ${run.label}`), hoverinfo: "x+y+text",
    line: { color: runColor(i), dash: runDash(i), width: page.runs.length > 20 ? 1.2 : 1.8 },
    marker: { size: 4 },
  };
}

async function drawPanel(page, panel) {
  const name = panel.select.value;
  await ensureLoaded(page, [name]);
  const xKey = perEpoch(name) ? "epoch" : "step";
  const traces = page.runs
    .filter((run) => page.series[run.id]?.[name])
    .map((run) => curveTrace(page, run, page.series[run.id][name], xKey));
  panel.note.hidden = traces.length > 0;
  setText(panel.note, traces.length ? "" : `None of these runs has recorded ${name} yet.`);
  const maxX = Math.max(1, ...traces.map((t) => t.x.at(-1) || 0));
  await draw(panel.plot, traces, baseLayout({ xTitle: xKey, yTitle: name, logY: page.ui.curves.logToggle.checked,
    legend: !page.manyRuns, many: page.runs.length > 4, maxX }));
}

// ---- config table ----------------------------------------------------------------------------

function buildConfig() {
  return {
    onlyDiff: h("input", { type: "checkbox", id: "only-differing", checked: true }),
    table: h("table", { class: "data-table", id: "compare-config" }),
    note: h("p", { class: "muted", id: "differing-note" }),
  };
}

function renderConfig(page) {
  const { data, runs, allKeys } = page;
  const { onlyDiff, table, note } = page.ui.config;
  const differs = (k) => (data.differing.includes(k) ? "differs" : null);
  const keys = onlyDiff.checked ? data.differing : allKeys;
  const head = h("tr", {}, h("th", { text: "run" }), h("th", { text: "status" }),
    keys.map((k) => h("th", { text: k, class: differs(k) })));
  const rows = runs.map((run) => h("tr", {}, runCell(page, run), h("td", {}, statusBadge(run.status)),
    keys.map((k) => h("td", { text: fmtValue(settingOf(run, k)), class: differs(k) }))));
  table.replaceChildren(h("thead", {}, head), h("tbody", {}, rows));
  setText(note, data.differing.length
    ? `${data.differing.length} of ${allKeys.length} settings differ: ${data.differing.join(", ")}`
    : "Every setting is the same in these runs.");
}

// ---- metrics: best, final, value at a chosen epoch -------------------------------------------

function buildMetrics(page) {
  const { runs, series } = page;
  const maxEpoch = Math.max(1, ...runs.flatMap((r) => Object.values(series[r.id] || {}).map((s) => s.epochs.epoch.at(-1) || 0)));
  return {
    epochInput: h("input", { type: "number", id: "at-epoch", min: "0", max: String(maxEpoch), step: "1",
      value: String(maxEpoch), class: "input-narrow" }),
    table: h("table", { class: "data-table", id: "compare-metrics" }),
  };
}

/** Per metric, the best of the runs' best values (the API says which way is better). */
function bestPerMetric(page, names) {
  const best = {};
  for (const n of names) {
    const values = page.runs.map((r) => page.series[r.id]?.[n]?.best).filter((v) => v !== null && v !== undefined);
    best[n] = bestOf(values, metricGoal(page.models, n));
  }
  return best;
}

function metricCells(s, name, best, epoch) {
  if (!s) return [h("td", { class: "num", text: "–" }), h("td", { class: "num", text: "–" }), h("td", { class: "num", text: "–" })];
  const at = s.epochs.epoch.indexOf(epoch);
  return [
    h("td", { class: `num${s.best !== null && s.best === best ? " top" : ""}`, text: fmtMetric(name, s.best) }),
    h("td", { class: "num", text: fmtMetric(name, s.final) }),
    h("td", { class: "num", text: at >= 0 ? fmtMetric(name, s.epochs.mean[at]) : "–" }),
  ];
}

function renderMetrics(page) {
  const { runs, series } = page;
  const { epochInput, table } = page.ui.metrics;
  const epoch = Number(epochInput.value);
  const names = BASE_NAMES.filter((n) => runs.some((r) => series[r.id] && series[r.id][n]));
  const best = bestPerMetric(page, names);
  const head1 = h("tr", {}, h("th", { rowspan: "2", text: "run" }),
    names.map((n) => h("th", { colspan: "3", class: "group", text: n })));
  const head2 = h("tr", {}, names.map(() => [h("th", { class: "num", text: "best" }), h("th", { class: "num", text: "final" }),
    h("th", { class: "num", text: `epoch ${epoch}` })]));
  const rows = runs.map((run) => h("tr", {}, runCell(page, run),
    names.map((n) => metricCells(series[run.id]?.[n], n, best[n], epoch))));
  table.replaceChildren(h("thead", {}, head1, head2), h("tbody", {}, rows));
}

// ---- hyperparameter vs metric scatter --------------------------------------------------------

function buildScatter(page) {
  const hpKeys = page.data.differing.length ? page.data.differing : page.allKeys;
  const x = h("select", { id: "scatter-x", "aria-label": "hyperparameter" }, hpKeys.map((k) => h("option", { value: k, text: k })));
  const y = h("select", { id: "scatter-y", "aria-label": "metric" }, page.allNames.map((n) => h("option", { value: n, text: n })));
  y.value = headlineName(page, page.allNames) || "";
  const which = h("select", { id: "scatter-which", "aria-label": "final or best" },
    h("option", { value: "final", text: "final" }), h("option", { value: "best", text: "best" }));
  return { x, y, which, plot: h("div", { class: "chart", id: "compare-scatter" }) };
}

/** One point per run that has the metric: its setting `key` against its final or best value. */
function scatterPoints(page, key, name, which) {
  const points = { xs: [], ys: [], colors: [], labels: [] };
  for (const run of page.runs) {
    const s = page.series[run.id]?.[name];
    if (!s) continue;
    const raw = settingOf(run, key);
    points.xs.push(typeof raw === "number" ? raw : valueText(raw));
    points.ys.push(s[which]);
    points.colors.push(runColor(page.index.get(run.id)));
    points.labels.push(plotText(`#${run.id} ${run.label}`));
  }
  return points;
}

function xAxisType(xs) {
  const numeric = xs.every((x) => typeof x === "number");
  const positive = numeric && xs.every((x) => x > 0);
  const spread = positive && Math.max(...xs) / Math.min(...xs) >= 100;
  return numeric ? (spread ? "log" : "linear") : "category";
}

async function drawScatter(page) {
  const { x, y, which, plot } = page.ui.scatter;
  await ensureLoaded(page, [y.value]);
  const { xs, ys, colors, labels } = scatterPoints(page, x.value, y.value, which.value);
  const layout = baseLayout({ xTitle: x.value, yTitle: `${which.value} ${y.value}`, legend: false });
  layout.xaxis.type = xAxisType(xs);
  await draw(plot, [{ type: "scatter", mode: "markers", x: xs, y: ys, text: labels,
    hovertemplate: "%{text}<br>%{x}: %{y}<extra></extra>",
    marker: { color: colors, size: 11, line: { color: "#1d232a", width: 0.5 } } }], layout);
}

// ---- the page --------------------------------------------------------------------------------

function summaryText({ runs, data }) {
  return `${runs.length} runs · ${data.differing.length ? `differing: ${data.differing.join(", ")}` : "no setting differs"} · curves downsampled to at most ${data.max_points} points per run`;
}

/** Every element of the drawn page, appended to `view`; the handlers come from wire(). */
function buildPage(page) {
  const ui = { curves: buildCurves(page), config: buildConfig(), metrics: buildMetrics(page), scatter: buildScatter(page) };
  const { curves, config, metrics, scatter } = ui;
  page.view.append(
    h("p", { class: "compare-summary", id: "compare-summary", text: summaryText(page) }),
    h("div", { class: "toolbar" }, h("label", { class: "field-inline" }, curves.logToggle, " log scale")),
    curves.legend,
    curves.row,
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", { text: "Metrics" }),
      h("label", { class: "field-inline" }, "value at epoch ", metrics.epochInput)),
    h("p", { class: "muted", text: "best: lowest loss or perplexity, highest accuracy; final: the last value; epoch: the mean of that epoch's values." }),
    scrollTable(metrics.table, "tall")),
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", { text: "Configuration" }),
      h("label", { class: "field-inline" }, config.onlyDiff, " only differing keys")), config.note, scrollTable(config.table, "tall")),
    h("section", { class: "card chart-card" }, h("div", { class: "card-head" }, h("h2", { text: "Hyperparameter vs metric" }),
      h("span", { class: "field-row" }, h("label", { class: "field-inline" }, "x ", scatter.x),
        h("label", { class: "field-inline" }, "y ", scatter.which, scatter.y))), scatter.plot),
  );
  return ui;
}

function wire(page) {
  const { curves, config, metrics, scatter } = page.ui;
  for (const panel of curves.panels) panel.select.addEventListener("change", () => drawPanel(page, panel));
  curves.logToggle.addEventListener("change", () => curves.panels.forEach((panel) => drawPanel(page, panel)));
  config.onlyDiff.addEventListener("change", () => renderConfig(page));
  metrics.epochInput.addEventListener("input", () => renderMetrics(page));
  for (const el of [scatter.x, scatter.y, scatter.which]) el.addEventListener("change", () => drawScatter(page));
}

/**
 * Charts first, tables after: plotly measures text as it draws, and every measurement lays out
 * the whole page, which costs more with two hundred table rows already in it.
 */
async function drawAll(page) {
  const { panels } = page.ui.curves;
  for (const panel of panels) {
    await drawPanel(page, panel);
    if (panel === panels[0]) performance.mark("compare:first-chart");
  }
  await drawScatter(page);
  performance.mark("compare:drawn");
  renderConfig(page);
  renderMetrics(page);
  performance.mark("compare:tables");
}

/** Fetch every loaded name again and redraw. False once no run is queued or running. */
async function refresh(page) {
  const fresh = await fetchSeries(page.idsText, [...page.loaded], page.maxPoints);
  Object.assign(page.series, fresh.series);
  for (const run of fresh.runs) Object.assign(page.runs[page.index.get(run.id)], { status: run.status });
  renderConfig(page);
  renderMetrics(page);
  await Promise.all([...page.ui.curves.panels.map((panel) => drawPanel(page, panel)), drawScatter(page)]);
  return fresh.runs.some((r) => ACTIVE.has(r.status));
}

/** Live: while some run is still queued or running, refresh every REFRESH_MS (after this draw). */
function followActiveRuns(page) {
  if (!page.runs.some((r) => ACTIVE.has(r.status))) return null;
  let first = true;
  return poll(async () => {
    if (first) {
      first = false;
      return true;
    }
    return refresh(page);
  }, REFRESH_MS);
}

export async function mount(view, { params }) {
  const idsText = params.get("ids") || "";
  view.append(h("div", { class: "page-head" }, h("h1", { text: "Compare runs" })), buildForm(idsText));
  if (!idsText.trim()) {
    showPickRuns(view);
    return null;
  }
  const maxPoints = maxPointsFor(countRuns(idsText));
  let first;
  try {
    first = await loadFirst(idsText, maxPoints);
  } catch (exc) {
    showRefused(view, exc);
    return null;
  }
  const page = pageState(view, idsText, maxPoints, first);
  page.ui = buildPage(page);
  wire(page);
  await drawAll(page);
  view.dataset.state = "ready";
  const stop = followActiveRuns(page);
  return () => {
    if (stop) stop();
    for (const panel of page.ui.curves.panels) purge(panel.plot);
    purge(page.ui.scatter.plot);
  };
}
