// The sweep page's charts: the best objective so far against the trial number, parallel
// coordinates of the searched parameters and the objective, each parameter's importance, and
// every trial's objective curve. Plain plotly SVG traces: plotly's own `parcoords` trace draws
// with WebGL through regl, which compiles its shaders with `new Function`, and the dashboard's
// Content-Security-Policy (script-src 'self', no 'unsafe-eval') rightly refuses that; so the
// parallel coordinates are line traces over one vertical axis per dimension.
"use strict";

import { baseLayout, draw, plotText, runColor, shorten } from "./charts.js";
import { fmtMetric, fmtNumber } from "./dom.js";

const GREY = "#9aa3ad";
// Up to this many trials each curve is a trace of its own (own colour, own legend entry); past
// it the curves are drawn as one trace per status, each a single SVG path.
const CURVE_TRACES_MAX = 30;
// Viridis at 8 stops: the parallel coordinates colour each trial by its objective (bright: best).
const VIRIDIS = ["#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725"];

/** A searched value as text: lists (hidden_sizes) as "[64, 64]", numbers short. */
export function paramText(value) {
  if (Array.isArray(value)) return `[${value.map(paramText).join(", ")}]`;
  if (typeof value === "number") return fmtNumber(value, 6);
  if (value === null || value === undefined) return "–";
  return String(value);
}

/** "activation=relu, hidden_sizes=[64, 64]" */
export function paramsText(params) {
  return Object.entries(params || {}).map(([k, v]) => `${k}=${paramText(v)}`).join(", ");
}

/** "trial 3 (#17): activation=relu, ..." as plotly text (escaped). */
function trialLabel(trial) {
  return plotText(`trial ${trial.number} (#${trial.job_id}): ${shorten(paramsText(trial.params), 90)}`);
}

/** The better of two values for the sweep's goal. */
export function better(goal, a, b) {
  return goal === "min" ? a < b : a > b;
}

// ---- best so far -----------------------------------------------------------------------------

/** Completed trials' objectives by trial number, pruned trials' last values, and the running best. */
export function drawBestSoFar(el, sweep, trials) {
  const { metric, goal } = sweep.objective;
  const done = trials.filter((t) => t.objective !== null && t.objective !== undefined);
  const pruned = trials.filter((t) => t.status === "pruned" && t.last_objective !== null);
  if (!done.length && !pruned.length) return null;
  const bestX = [];
  const bestY = [];
  let best = null;
  for (const t of done) { // trials come in number order
    if (best === null || better(goal, t.objective, best)) best = t.objective;
    bestX.push(t.number);
    bestY.push(best);
  }
  const last = trials.at(-1);
  if (bestX.length && last && last.number > bestX.at(-1)) {
    bestX.push(last.number);
    bestY.push(best);
  }
  const traces = [
    { type: "scatter", mode: "markers", name: "pruned (last value)", x: pruned.map((t) => t.number),
      y: pruned.map((t) => t.last_objective), text: pruned.map(trialLabel), hoverinfo: "x+y+text",
      marker: { color: GREY, symbol: "x", size: 7 }, opacity: 0.6 },
    { type: "scatter", mode: "markers", name: "completed trial", x: done.map((t) => t.number),
      y: done.map((t) => t.objective), text: done.map(trialLabel), hoverinfo: "x+y+text",
      marker: { color: runColor(0), size: 8 } },
    { type: "scatter", mode: "lines", name: `best so far (${goal})`, x: bestX, y: bestY, line: { shape: "hv", color: runColor(1), width: 2.5 },
      hoverinfo: "x+y" },
  ];
  const layout = baseLayout({ xTitle: "trial", yTitle: plotText(metric) });
  layout.xaxis.rangemode = "tozero";
  layout.xaxis.dtick = Math.max(1, Math.ceil((last ? last.number : 1) / 10));
  return draw(el, traces, layout);
}

// ---- parallel coordinates --------------------------------------------------------------------

const isNumber = (v) => typeof v === "number" && Number.isFinite(v);

/**
 * One vertical axis of the chart: where each value sits (0 at the bottom, 1 at the top) and
 * the ticks, labelled. Numbers are placed by value (log10 when the space says log, or when
 * positive values span over a hundredfold); anything else (strings, booleans, lists) by its
 * place in the space's list of values.
 */
function axisOf(name, spec, values) {
  const choices = Array.isArray(spec?.values) ? spec.values : null;
  const numeric = (choices || values).every(isNumber) && values.every((v) => v === null || isNumber(v));
  if (!numeric) {
    const known = choices ? [...choices] : [];
    const keys = known.map((v) => JSON.stringify(v));
    for (const v of values) {
      if (!keys.includes(JSON.stringify(v))) {
        known.push(v);
        keys.push(JSON.stringify(v));
      }
    }
    const span = Math.max(1, known.length - 1);
    return {
      name, place: (v) => (known.length === 1 ? 0.5 : keys.indexOf(JSON.stringify(v)) / span),
      ticks: known.map((v, i) => [known.length === 1 ? 0.5 : i / span, paramText(v)]),
    };
  }
  const all = [...(choices || []), ...values.filter(isNumber)];
  if (isNumber(spec?.low)) all.push(spec.low, spec.high);
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  const log = lo > 0 && (spec?.log === true || hi / lo >= 100);
  const f = log ? Math.log10 : (v) => v;
  [lo, hi] = [f(lo), f(hi)];
  const place = (v) => (hi === lo ? 0.5 : (f(v) - lo) / (hi - lo));
  const tickValues = choices && choices.length <= 8 ? choices
    : [0, 0.25, 0.5, 0.75, 1].map((q) => (log ? 10 ** (lo + q * (hi - lo)) : lo + q * (hi - lo)));
  return { name, place, ticks: tickValues.map((v) => [place(v), fmtNumber(v, 3)]) };
}

function objectiveAxis(metric, values) {
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const place = (v) => (hi === lo ? 0.5 : (v - lo) / (hi - lo));
  const ticks = (hi === lo ? [lo] : [0, 0.25, 0.5, 0.75, 1].map((q) => lo + q * (hi - lo)))
    .map((v) => [place(v), fmtMetric(metric, v)]);
  return { name: metric, place, ticks, lo, hi };
}

/** Shapes (the vertical axes) and annotations (names and tick labels) for the axes. */
function axesDecor(axes) {
  const shapes = axes.map((_, i) => ({ type: "line", x0: i, x1: i, y0: 0, y1: 1, layer: "above",
    line: { color: "#5b6573", width: 1 } }));
  const annotations = [];
  axes.forEach((axis, i) => {
    annotations.push({ x: i, y: 1.02, yanchor: "bottom", text: plotText(shorten(axis.name, 24)), showarrow: false,
      font: { size: 12, color: "#1d232a" } });
    for (const [y, label] of axis.ticks.slice(0, 14)) {
      annotations.push({ x: i, y, text: plotText(shorten(label, 20)), showarrow: false, xanchor: "right", xshift: -4,
        font: { size: 10, color: "#5b6573" }, bgcolor: "rgba(255,255,255,0.75)" });
    }
  });
  return { shapes, annotations };
}

/** One trace of polylines (a null between trials): a single SVG path however many trials. */
function polylines(rows, axes, name, style) {
  const x = [];
  const y = [];
  const text = [];
  for (const row of rows) {
    axes.forEach((axis, i) => {
      x.push(i);
      y.push(axis.place(row.values[i]));
      text.push(row.label);
    });
    x.push(null);
    y.push(null);
    text.push(null);
  }
  return { type: "scatter", mode: "lines", name, x, y, text, hoverinfo: "text", showlegend: false, ...style };
}

export function drawParallel(el, sweep, trials) {
  const { metric, goal } = sweep.objective;
  const names = Object.keys(sweep.space);
  const scored = trials.filter((t) => isNumber(t.objective) || (t.status === "pruned" && isNumber(t.last_objective)));
  if (!scored.length) return null;
  const value = (t) => (isNumber(t.objective) ? t.objective : t.last_objective);
  const axes = names.map((n) => axisOf(n, sweep.space[n], scored.map((t) => t.params[n] ?? null)));
  const objective = objectiveAxis(metric, scored.map(value));
  axes.push(objective);
  const rows = scored.map((t) => ({
    trial: t,
    values: [...names.map((n) => t.params[n] ?? null), value(t)],
    label: plotText(`trial ${t.number} (#${t.job_id}) ${t.status}: ${shorten(paramsText(t.params), 90)}; ${metric} ${fmtMetric(metric, value(t))}`),
  }));
  // Pruned trials grey and underneath; completed ones in 8 colours by objective, best on top.
  const traces = [polylines(rows.filter((r) => r.trial.status === "pruned"), axes, "pruned",
    { line: { color: GREY, width: 1 }, opacity: 0.45 })];
  const bins = VIRIDIS.map(() => []);
  for (const row of rows.filter((r) => r.trial.status !== "pruned")) {
    let q = objective.hi === objective.lo ? 1 : (row.values.at(-1) - objective.lo) / (objective.hi - objective.lo);
    if (goal === "min") q = 1 - q;
    bins[Math.min(VIRIDIS.length - 1, Math.floor(q * VIRIDIS.length))].push(row);
  }
  bins.forEach((binRows, i) => {
    if (binRows.length) traces.push(polylines(binRows, axes, `bin ${i}`, { line: { color: VIRIDIS[i], width: 1.6 } }));
  });
  // An invisible marker whose colour scale shows as the colour bar.
  traces.push({ type: "scatter", mode: "markers", x: [0, 0], y: [-5, -5], hoverinfo: "skip", showlegend: false,
    marker: { color: [objective.lo, objective.hi], colorscale: "Viridis", reversescale: goal === "min", opacity: 0,
      showscale: true, colorbar: { title: { text: plotText(metric), side: "right" }, thickness: 10, len: 0.9 } } });
  const layout = baseLayout({ legend: false });
  Object.assign(layout, {
    xaxis: { visible: false, range: [-0.45, axes.length - 1 + 0.25], fixedrange: true },
    yaxis: { visible: false, range: [-0.04, 1.1], fixedrange: true },
    margin: { l: 70, r: 20, t: 24, b: 16 }, height: 360, ...axesDecor(axes),
  });
  return draw(el, traces, layout);
}

// ---- parameter importance --------------------------------------------------------------------

export function drawImportance(el, importances) {
  const entries = Object.entries(importances).sort((a, b) => a[1] - b[1]); // most important on top
  const layout = baseLayout({ xTitle: "share of the objective's variation", legend: false });
  layout.xaxis.range = [0, 1];
  layout.xaxis.tickformat = ".0%";
  layout.yaxis.type = "category";
  layout.height = Math.max(180, 90 + 34 * entries.length);
  return draw(el, [{ type: "bar", orientation: "h", x: entries.map((e) => e[1]), y: entries.map((e) => plotText(e[0])),
    text: entries.map((e) => `${(e[1] * 100).toFixed(1)}%`), textposition: "auto", hoverinfo: "y+text",
    marker: { color: runColor(0) } }], layout);
}

// ---- objective curves ------------------------------------------------------------------------

/** Each trial's objective per epoch (GET /compare/series), pruned trials grey and faint. */
export function drawCurves(el, sweep, trials, series) {
  const { metric } = sweep.objective;
  const best = sweep.best ? sweep.best.job_id : null;
  const withCurve = trials.filter((t) => series[t.job_id]?.[metric]);
  if (!withCurve.length) return null;
  const many = withCurve.length > CURVE_TRACES_MAX;
  const traces = many ? groupedCurves(withCurve, series, metric) : withCurve.map((t, i) => {
    const s = series[t.job_id][metric];
    const pruned = t.status === "pruned";
    return {
      type: "scatter", mode: "lines+markers",
      name: plotText(shorten(`trial ${t.number}${pruned ? " (pruned)" : ""}: ${Object.values(t.params).map(paramText).join(", ")}`, 48)),
      x: s.epoch, y: s.value, hovertext: trialLabel(t), hoverinfo: "x+y+text", opacity: pruned ? 0.4 : 1,
      line: { color: pruned ? GREY : runColor(i), width: t.job_id === best ? 3 : 1.6, dash: pruned ? "dot" : "solid" },
      marker: { size: 4 },
    };
  });
  if (many && best !== null && series[best]?.[metric]) {
    const t = withCurve.find((x) => x.job_id === best);
    const s = series[best][metric];
    traces.push({ type: "scatter", mode: "lines", name: plotText(`best: trial ${t.number}`), x: s.epoch, y: s.value,
      hovertext: trialLabel(t), hoverinfo: "x+y+text", line: { color: runColor(1), width: 3 } });
  }
  const maxX = Math.max(1, ...withCurve.map((t) => series[t.job_id][metric].epoch.at(-1) || 0));
  const layout = baseLayout({ xTitle: "epoch", yTitle: plotText(metric), many: withCurve.length > 4, maxX });
  if (layout.legend.orientation === "h") {
    layout.legend.y = -0.28;
    layout.height += 14 * Math.min(10, Math.ceil(traces.length / 2));
  }
  return draw(el, traces, layout);
}

const GROUPS = [
  ["pruned", { line: { color: GREY, width: 1, dash: "dot" }, opacity: 0.35 }],
  ["failed", { line: { color: "#d62728", width: 1 }, opacity: 0.5 }],
  ["cancelled", { line: { color: "#bcbd22", width: 1 }, opacity: 0.5 }],
  ["succeeded", { line: { color: runColor(0), width: 1 }, opacity: 0.7 }],
  ["running", { line: { color: runColor(2), width: 1.5 } }],
  ["queued", { line: { color: runColor(2), width: 1.5 } }],
];

/** Many trials: one trace per status, its curves joined by nulls into one path. */
function groupedCurves(trials, series, metric) {
  const traces = [];
  for (const [status, style] of GROUPS) {
    const members = trials.filter((t) => t.status === status);
    if (!members.length) continue;
    const x = [];
    const y = [];
    const text = [];
    for (const t of members) {
      const s = series[t.job_id][metric];
      const label = trialLabel(t);
      for (let i = 0; i < s.epoch.length; i += 1) {
        x.push(s.epoch[i]);
        y.push(s.value[i]);
        text.push(label);
      }
      x.push(null);
      y.push(null);
      text.push(null);
    }
    traces.push({ type: "scatter", mode: "lines", name: `${status} (${members.length})`, x, y, hovertext: text,
      hoverinfo: "x+y+text", ...style });
  }
  return traces;
}
