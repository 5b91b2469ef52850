// DOM helpers. Every value that comes from the server is user data (job names, texts, dataset
// names, error messages): it enters the page as text nodes or textContent, never as markup.
"use strict";

/**
 * h("a", {href: "#/jobs/1", class: "x", text: "job"}, child, ...) -> an element.
 * `text` sets textContent; `dataset` an object of data-* values; `on` an object of listeners;
 * other keys are set as properties when the element has them, else as attributes.
 * Children: nodes, or strings/numbers that become text nodes; null/false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = String(value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key === "style") Object.assign(el.style, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function setText(el, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== value) el.textContent = value;
}

// ---- formatting ------------------------------------------------------------------------

export function fmtNumber(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
  return String(Number(value.toPrecision(digits)));
}

export function fmtMetric(name, value) {
  if (value === null || value === undefined) return "–";
  if (name && name.includes("accuracy")) return `${(value * 100).toFixed(1)}%`;
  return fmtNumber(value);
}

export const METRIC_SHORT = {
  val_accuracy: "val acc",
  val_perplexity: "val ppl",
  val_loss: "val loss",
  train_loss: "train loss",
};

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const hr = Math.floor(m / 60);
  return `${hr}h ${String(m % 60).padStart(2, "0")}m`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function fmtValue(value) {
  if (value === undefined) return "–";
  if (value === null) return "null";
  if (typeof value === "string") return value;
  if (typeof value === "number") return fmtNumber(value, 6);
  return JSON.stringify(value);
}

/** Seconds a job has run: started -> finished, or -> now while it runs. */
export function jobDuration(job) {
  if (!job.started_at) return null;
  const start = new Date(job.started_at).getTime();
  const end = job.finished_at ? new Date(job.finished_at).getTime() : Date.now();
  return (end - start) / 1000;
}

export const ACTIVE = new Set(["queued", "running"]);

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, text: status });
}

/** A progress bar with "epoch 3/10 · ETA 1m 20s" under it. */
export function progressBar(job) {
  const wrap = h("div", { class: "progress" });
  updateProgress(wrap, job);
  return wrap;
}

export function updateProgress(wrap, job) {
  const p = job.progress || {};
  let fraction = 0;
  if (p.total_steps) fraction = (p.step || 0) / p.total_steps;
  else if (p.total_epochs) fraction = (p.epoch || 0) / p.total_epochs;
  if (job.status === "succeeded") fraction = 1;
  fraction = Math.min(1, Math.max(0, fraction));
  let bar = wrap.querySelector(".bar");
  if (!bar) {
    bar = h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" },
      h("span"));
    wrap.append(bar, h("div", { class: "progress-label" }));
  }
  bar.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
  bar.className = `bar bar-${job.status}`;
  bar.firstChild.style.width = `${(fraction * 100).toFixed(1)}%`;
  let label = `epoch ${p.epoch ?? 0}/${p.total_epochs ?? "?"}`;
  if (job.status === "running" && p.eta_seconds !== null && p.eta_seconds !== undefined) {
    label += ` · ETA ${fmtDuration(p.eta_seconds)}`;
  }
  setText(wrap.querySelector(".progress-label"), label);
}

/** A table wrapped so that it scrolls sideways on a narrow screen. */
export function scrollTable(table, extraClass = "") {
  return h("div", { class: `table-scroll ${extraClass}`.trim() }, table);
}

/**
 * The job, compare and sweep pages draw with plotly.js: a list page fetches and compiles it
 * while it idles, so that the page a user opens from it does not wait for it. Returns a
 * function that calls it off.
 */
export function preloadChartsWhenIdle() {
  const preload = () => import("./charts.js").then((m) => m.loadPlotly()).catch(() => {});
  if (window.requestIdleCallback && window.cancelIdleCallback) {
    const idle = window.requestIdleCallback(preload, { timeout: 3000 });
    return () => window.cancelIdleCallback(idle);
  }
  const timer = window.setTimeout(preload, 1500);
  return () => window.clearTimeout(timer);
}
