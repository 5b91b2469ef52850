// Compare runs: overlaid curves named by the settings that differ, a config table (optionally
// only the differing keys), best / final / value-at-epoch per metric, and a scatter of a
// hyperparameter against a run's final (or best) metric. One request draws it all:
// GET /compare/series, downsampled on the server.
"use strict";

import { api, poll } from "./api.js";
import { baseLayout, draw, loadPlotly, plotText, purge, runColor, runDash, shorten } from "./charts.js";
import { fmtMetric, fmtValue, h, scrollTable, setText, statusBadge, ACTIVE } from "./dom.js";
import { navigate, REFRESH_MS, showError } from "../app.js";

const BASE_NAMES = ["train_loss", "val_loss", "val_accuracy", "val_perplexity"];
const POINT_BUDGET = 20000; // points per chart, shared by the runs

function maxPointsFor(runs) {
  return Math.max(50, Math.min(1000, Math.floor(POINT_BUDGET / Math.max(1, runs))));
}

function perEpoch(name) {
  return name.startsWith("val_") || name.startsWith("grad_norm/");
}

function lowerIsBetter(name) {
  return /loss|perplexity/i.test(name);
}

function headlineName(names) {
  if (names.includes("val_accuracy")) return "val_accuracy";
  if (names.includes("val_perplexity")) return "val_perplexity";
  return names.includes("val_loss") ? "val_loss" : names[0];
}

function valueText(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

export async function mount(view, { params }) {
  const idsText = params.get("ids") || "";
  const idsInput = h("input", { type: "text", id: "compare-ids", value: idsText, placeholder: "e.g. 3,4,10-20",
    "aria-label": "job ids to compare", autocomplete: "off" });
  const go = h("button", { type: "submit", class: "btn btn-primary", text: "Compare" });
  const form = h("form", { class: "toolbar", on: { submit: (e) => {
    e.preventDefault();
    const ids = idsInput.value.replace(/\s+/g, "");
    navigate("/compare", ids ? new URLSearchParams({ ids }) : null);
  } } }, h("label", { class: "field-inline" }, "Runs ", idsInput), go,
  h("span", { class: "muted", text: "ids and ranges; or tick runs on the Jobs page" }));
  view.append(h("div", { class: "page-head" }, h("h1", { text: "Compare runs" })), form);

  if (!idsText.trim()) {
    view.append(h("div", { class: "empty", id: "compare-empty" },
      h("h2", { text: "Pick runs to compare" }),
      h("p", {}, "Tick runs on the ", h("a", { href: "#/", text: "Jobs page" }),
        " and press “Compare selected”, or type job ids above (for example ",
        h("code", { text: "3,4,10-20" }), ")."),
      h("p", { class: "muted", text: "Any number of runs: curves are downsampled on the server, so a hundred long runs open in a second." })));
    view.dataset.state = "ready";
    return null;
  }

  const plotlyReady = loadPlotly();
  const query = (names, maxPoints) => api(`compare/series?${new URLSearchParams({
    ids: idsText, names: names.join(","), max_points: String(maxPoints) })}`);
  // How many runs? Count the ids locally to size the downsampling before the first request.
  const approxRuns = idsText.split(",").reduce((n, part) => {
    const [a, b] = part.split("-").map(Number);
    return n + (Number.isFinite(b) && b >= a ? b - a + 1 : 1);
  }, 0);
  const maxPoints = maxPointsFor(approxRuns);
  let data;
  try {
    performance.mark("compare:request");
    [data] = await Promise.all([query(BASE_NAMES, maxPoints), plotlyReady]);
    performance.mark("compare:data");
  } catch (exc) {
    view.append(h("div", { class: "empty" }, h("h2", { text: "These runs cannot be compared" }),
      h("p", { class: "error-text", text: Array.isArray(exc.detail) ? exc.detail.map((d) => d.msg).join("; ") : exc.message })));
    view.dataset.state = "error";
    return null;
  }

  const runs = data.runs;
  const series = data.series; // {id: {name: {...}}}
  const loaded = new Set(data.names);
  const allNames = [...new Set(runs.flatMap((r) => r.metric_names))].sort();
  const index = new Map(runs.map((r, i) => [r.id, i]));
  const swatch = (run) => h("span", { class: `swatch dash-${runDash(index.get(run.id))}`,
    style: { borderColor: runColor(index.get(run.id)) }, "aria-hidden": "true" });
  const legendName = (run) => plotText(shorten(`#${run.id} ${run.label}`));

  // ---- curves --------------------------------------------------------------------------
  const logToggle = h("input", { type: "checkbox", id: "log-y" });
  const chartsRow = h("div", { class: "chart-grid" });
  const panels = [];
  function curvePanel(initial, id) {
    const select = h("select", { "aria-label": "metric", id: `${id}-metric` },
      allNames.map((n) => h("option", { value: n, text: n })));
    select.value = allNames.includes(initial) ? initial : allNames[0] || "";
    const plot = h("div", { class: "chart", id });
    const note = h("p", { class: "chart-empty", hidden: true });
    const box = h("section", { class: "card chart-card" },
      h("div", { class: "card-head" }, h("label", { class: "field-inline" }, "Metric ", select)), note, plot);
    const panel = { select, plot, note, box };
    select.addEventListener("change", () => drawPanel(panel));
    panels.push(panel);
    chartsRow.append(box);
    return panel;
  }

  async function ensureLoaded(names) {
    const missing = names.filter((n) => n && !loaded.has(n));
    if (!missing.length) return;
    const more = await query(missing, maxPoints);
    for (const [id, byName] of Object.entries(more.series)) Object.assign(series[id] ||= {}, byName);
    for (const n of missing) loaded.add(n);
  }

  async function drawPanel(panel) {
    const name = panel.select.value;
    await ensureLoaded([name]);
    const xKey = perEpoch(name) ? "epoch" : "step";
    const traces = [];
    for (const run of runs) {
      const s = series[run.id] && series[run.id][name];
      if (!s) continue;
      const i = index.get(run.id);
      traces.push({
        type: "scatter", mode: xKey === "epoch" && s.step.length <= 60 ? "lines+markers" : "lines",
        name: legendName(run), x: s[xKey], y: s.value,
        hovertext: plotText(`#${run.id} ${run.label}`), hoverinfo: "x+y+text",
        line: { color: runColor(i), dash: runDash(i), width: runs.length > 20 ? 1.2 : 1.8 },
        marker: { size: 4 },
      });
    }
    panel.note.hidden = traces.length > 0;
    setText(panel.note, traces.length ? "" : `None of these runs has recorded ${name} yet.`);
    const maxX = Math.max(1, ...traces.map((t) => t.x.at(-1) || 0));
    // Up to ten runs plotly draws the legend; past that one HTML legend above the charts
    // serves both (a hundred-entry SVG legend per chart costs more than the curves).
    await draw(panel.plot, traces, baseLayout({ xTitle: xKey, yTitle: name, logY: logToggle.checked,
      legend: !manyRuns, many: runs.length > 4, maxX }));
  }

  const manyRuns = runs.length > 10;
  const htmlLegend = h("div", { class: "run-legend card", id: "run-legend", hidden: !manyRuns },
    h("h2", { text: `${runs.length} runs, named by the settings that differ` }),
    h("ul", {}, runs.map((run) => h("li", { title: `#${run.id} ${run.label}` }, swatch(run),
      h("a", { href: `#/jobs/${run.id}`, text: `#${run.id}` }), " ", h("span", { text: run.label })))));
  if (manyRuns) chartsRow.classList.add("chart-grid-wide");

  const firstName = allNames.includes("train_loss") ? "train_loss" : allNames[0];
  curvePanel(firstName, "compare-chart-a");
  curvePanel(headlineName(allNames.filter((n) => n !== firstName)) || firstName, "compare-chart-b");
  logToggle.addEventListener("change", () => panels.forEach(drawPanel));

  // ---- config table --------------------------------------------------------------------
  const onlyDiff = h("input", { type: "checkbox", id: "only-differing", checked: true });
  const configTable = h("table", { class: "data-table", id: "compare-config" });
  const allKeys = ["model", "dataset", ...[...new Set(runs.flatMap((r) => Object.keys(r.hyperparameters)))].sort()];
  const runCell = (run) => h("td", { class: "run-cell" }, swatch(run),
    h("a", { href: `#/jobs/${run.id}`, text: `#${run.id}` }), " ", h("span", { class: "run-name", text: run.name || "" }));

  function renderConfig() {
    const keys = onlyDiff.checked ? data.differing : allKeys;
    const head = h("tr", {}, h("th", { text: "run" }), h("th", { text: "status" }),
      keys.map((k) => h("th", { text: k, class: data.differing.includes(k) ? "differs" : null })));
    const rows = runs.map((run) => h("tr", {}, runCell(run), h("td", {}, statusBadge(run.status)),
      keys.map((k) => h("td", { text: fmtValue(k === "model" || k === "dataset" ? run[k] : run.hyperparameters[k]),
        class: data.differing.includes(k) ? "differs" : null }))));
    configTable.replaceChildren(h("thead", {}, head), h("tbody", {}, rows));
    setText(configNote, data.differing.length
      ? `${data.differing.length} of ${allKeys.length} settings differ: ${data.differing.join(", ")}`
      : "Every setting is the same in these runs.");
  }
  const configNote = h("p", { class: "muted", id: "differing-note" });
  onlyDiff.addEventListener("change", renderConfig);

  // ---- metrics: best, final, value at a chosen epoch ------------------------------------
  const maxEpoch = Math.max(1, ...runs.flatMap((r) => Object.values(series[r.id] || {}).map((s) => s.epochs.epoch.at(-1) || 0)));
  const epochInput = h("input", { type: "number", id: "at-epoch", min: "0", max: String(maxEpoch), step: "1",
    value: String(maxEpoch), class: "input-narrow" });
  const metricsTable = h("table", { class: "data-table", id: "compare-metrics" });
  const metricNames = () => BASE_NAMES.filter((n) => runs.some((r) => series[r.id] && series[r.id][n]));

  function renderMetrics() {
    const epoch = Number(epochInput.value);
    const names = metricNames();
    const best = {};
    for (const n of names) {
      const finals = runs.map((r) => series[r.id]?.[n]?.best).filter((v) => v !== null && v !== undefined);
      best[n] = finals.length ? (lowerIsBetter(n) ? Math.min(...finals) : Math.max(...finals)) : null;
    }
    const head1 = h("tr", {}, h("th", { rowspan: "2", text: "run" }),
      names.map((n) => h("th", { colspan: "3", class: "group", text: n })));
    const head2 = h("tr", {}, names.map(() => [h("th", { class: "num", text: "best" }), h("th", { class: "num", text: "final" }),
      h("th", { class: "num", text: `epoch ${epoch}` })]));
    const rows = runs.map((run) => h("tr", {}, runCell(run), names.map((n) => {
      const s = series[run.id]?.[n];
      if (!s) return [h("td", { class: "num", text: "–" }), h("td", { class: "num", text: "–" }), h("td", { class: "num", text: "–" })];
      const at = s.epochs.epoch.indexOf(epoch);
      return [
        h("td", { class: `num${s.best !== null && s.best === best[n] ? " top" : ""}`, text: fmtMetric(n, s.best) }),
        h("td", { class: "num", text: fmtMetric(n, s.final) }),
        h("td", { class: "num", text: at >= 0 ? fmtMetric(n, s.epochs.mean[at]) : "–" }),
      ];
    })));
    metricsTable.replaceChildren(h("thead", {}, head1, head2), h("tbody", {}, rows));
  }
  epochInput.addEventListener("input", renderMetrics);

  // ---- hyperparameter vs metric scatter ----------------------------------------------------
  const hpKeys = data.differing.length ? data.differing : allKeys;
  const xSelect = h("select", { id: "scatter-x", "aria-label": "hyperparameter" }, hpKeys.map((k) => h("option", { value: k, text: k })));
  const ySelect = h("select", { id: "scatter-y", "aria-label": "metric" }, allNames.map((n) => h("option", { value: n, text: n })));
  ySelect.value = headlineName(allNames) || "";
  const whichSelect = h("select", { id: "scatter-which", "aria-label": "final or best" },
    h("option", { value: "final", text: "final" }), h("option", { value: "best", text: "best" }));
  const scatterPlot = h("div", { class: "chart", id: "compare-scatter" });

  async function drawScatter() {
    const key = xSelect.value;
    const name = ySelect.value;
    await ensureLoaded([name]);
    const xs = [];
    const ys = [];
    const colors = [];
    const labels = [];
    for (const run of runs) {
      const s = series[run.id]?.[name];
      if (!s) continue;
      const raw = key === "model" || key === "dataset" ? run[key] : run.hyperparameters[key];
      xs.push(typeof raw === "number" ? raw : valueText(raw));
      ys.push(s[whichSelect.value]);
      colors.push(runColor(index.get(run.id)));
      labels.push(plotText(`#${run.id} ${run.label}`));
    }
    const numeric = xs.every((x) => typeof x === "number");
    const positive = numeric && xs.every((x) => x > 0);
    const spread = positive && Math.max(...xs) / Math.min(...xs) >= 100;
    const layout = baseLayout({ xTitle: key, yTitle: `${whichSelect.value} ${name}`, legend: false });
    layout.xaxis.type = numeric ? (spread ? "log" : "linear") : "category";
    await draw(scatterPlot, [{ type: "scatter", mode: "markers", x: xs, y: ys, text: labels,
      hovertemplate: "%{text}<br>%{x}: %{y}<extra></extra>",
      marker: { color: colors, size: 11, line: { color: "#1d232a", width: 0.5 } } }], layout);
  }
  for (const el of [xSelect, ySelect, whichSelect]) el.addEventListener("change", drawScatter);

  // ---- page ------------------------------------------------------------------------------
  const title = h("p", { class: "compare-summary", id: "compare-summary" });
  setText(title, `${runs.length} runs · ${data.differing.length ? `differing: ${data.differing.join(", ")}` : "no setting differs"} · curves downsampled to at most ${data.max_points} points per run`);
  view.append(
    title,
    h("div", { class: "toolbar" }, h("label", { class: "field-inline" }, logToggle, " log scale")),
    htmlLegend,
    chartsRow,
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", { text: "Metrics" }),
      h("label", { class: "field-inline" }, "value at epoch ", epochInput)),
    h("p", { class: "muted", text: "best: lowest loss or perplexity, highest accuracy; final: the last value; epoch: the mean of that epoch's values." }),
    scrollTable(metricsTable, "tall")),
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", { text: "Configuration" }),
      h("label", { class: "field-inline" }, onlyDiff, " only differing keys")), configNote, scrollTable(configTable, "tall")),
    h("section", { class: "card chart-card" }, h("div", { class: "card-head" }, h("h2", { text: "Hyperparameter vs metric" }),
      h("span", { class: "field-row" }, h("label", { class: "field-inline" }, "x ", xSelect),
        h("label", { class: "field-inline" }, "y ", whichSelect, ySelect))), scatterPlot),
  );
  // Charts first, tables after: plotly measures text as it draws, and every measurement lays
  // out the whole page, which costs more with two hundred table rows already in it.
  for (const panel of panels) {
    await drawPanel(panel);
    if (panel === panels[0]) performance.mark("compare:first-chart");
  }
  await drawScatter();
  performance.mark("compare:drawn");
  renderConfig();
  renderMetrics();
  performance.mark("compare:tables");
  view.dataset.state = "ready";

  // Live: while some run is still queued or running, refresh the curves every 2 s.
  let stop = null;
  if (runs.some((r) => ACTIVE.has(r.status))) {
    let first = true;
    stop = poll(async () => {
      if (first) {
        first = false;
        return true;
      }
      const names = [...loaded];
      const fresh = await query(names, maxPoints);
      Object.assign(series, fresh.series);
      for (const run of fresh.runs) Object.assign(runs[index.get(run.id)], { status: run.status });
      renderConfig();
      renderMetrics();
      await Promise.all([...panels.map(drawPanel), drawScatter()]);
      return fresh.runs.some((r) => ACTIVE.has(r.status));
    }, REFRESH_MS);
  }
  return () => {
    if (stop) stop();
    for (const p of panels) purge(p.plot);
    purge(scatterPlot);
  };
}

