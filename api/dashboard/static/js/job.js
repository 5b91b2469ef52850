// One job (#/jobs/42): where it waits in the queue, summary, config, live curves, gradient norms,
// what is inside the trained network and a "Try it" panel (js/inside.js),
// sampled texts, checkpoints, attempts and error. Polls while the job is queued or running, then once more for the last points.
"use strict";

import { api, ApiError, apiUrl, poll } from "./api.js";
import { showError } from "./banner.js";
import { catalogue, headlineMetric, metricTitle } from "./catalogue.js";
import { baseLayout, draw, loadPlotly, plotText, purge, runColor } from "./charts.js";
import {
  ACTIVE, fmtBytes, fmtDuration, fmtMetric, fmtTime, fmtValue, h, jobDuration, progressBar,
  scrollTable, setText, statusBadge, updateProgress,
} from "./dom.js";
import { createInside } from "./inside.js";
import { mountDelete } from "./jobdelete.js"; // lifecycle: the Delete button of a finished job
import { mountLogs } from "./logs.js"; // the "Logs" panel: follows the job's log live
import { navigate } from "./router.js";
import { REFRESH_MS, selection } from "./state.js";

const MAX_POINTS = 1000; // per metric, downsampled on the server
const SUMMARY_METRICS = ["val_accuracy", "val_perplexity", "val_loss", "train_loss"];

// ---- building the page -----------------------------------------------------------------------

function chartBox(id, title, note) {
  const plot = h("div", { class: "chart chart-empty-state", id });
  const empty = h("p", { class: "chart-empty", text: note });
  const heading = h("h3", { text: title });
  return { box: h("section", { class: "card chart-card" }, heading, empty, plot), heading, plot, empty };
}

function kv(label, value) {
  const dd = h("dd");
  if (value instanceof Node) dd.append(value);
  else dd.textContent = value;
  return h("div", { dataset: { key: label } }, h("dt", { text: label }), dd);
}

function dataTable(id, columns, tbody) {
  return scrollTable(h("table", { class: "data-table cards-narrow", id },
    h("thead", {}, h("tr", {}, columns.map((t) => h("th", { text: t })))),
    tbody));
}

function buildCharts() {
  return {
    loss: chartBox("chart-loss", "Loss: train per step, validation per epoch",
      "No metrics yet: curves appear here as soon as a worker starts training this job."),
    headline: chartBox("chart-headline", "Validation metric per epoch",
      "The validation metric appears after the first epoch."),
    grads: chartBox("chart-grad", "Gradient norm per layer (log scale), per epoch",
      "Gradient norms are recorded at the end of each epoch."),
    lr: chartBox("chart-lr", "Learning rate and throughput", "Recorded every step."),
  };
}

/** A queued job's place in line, why it waits, and when it should start. */
function buildQueue() {
  const position = h("h2", { id: "queue-position" });
  const reason = h("p", { class: "queue-reason", id: "queue-reason" });
  const start = h("p", { class: "muted queue-start", id: "queue-start" });
  const box = h("section", { class: "card queue-card", id: "job-queue", hidden: true }, position, reason, start);
  return { box, position, reason, start };
}

function buildCheckpoints() {
  const body = h("tbody");
  const empty = h("p", { class: "muted", text: "No checkpoints yet: one is saved after every epoch." });
  const section = h("section", { class: "card" }, h("h2", { text: "Checkpoints" }), empty,
    dataTable("job-checkpoints", ["epoch", "step", "size", "sha256", "metrics", ""], body));
  return { section, body, empty };
}

/** Every element of the page, appended to `view`; the handlers come from wire(). `inside`:
 * the "Inside the model" and "Try it" area (js/inside.js), placed under the curves. */
function buildPage(view, inside) {
  const ui = {
    title: h("h1", { class: "job-title" }),
    badge: h("span"),
    cancel: h("button", { type: "button", class: "btn btn-danger", text: "Cancel job", hidden: true }),
    priority: h("input", { id: "job-priority", type: "number", min: "-100", max: "100", step: "1", "aria-label": "priority" }),
    setPriority: h("button", { type: "button", class: "btn", id: "set-priority", text: "Set priority" }),
    compare: h("button", { type: "button", class: "btn", text: "Compare with selected runs" }),
    queue: buildQueue(),
    summary: h("dl", { class: "summary" }),
    errorText: h("pre", { class: "error-text", id: "job-error" }),
    attemptsBody: h("tbody"),
    configBody: h("tbody"),
    charts: buildCharts(),
    textsList: h("div", { class: "texts", id: "job-texts" }),
    checkpoints: buildCheckpoints(),
  };
  ui.errorBox = h("section", { class: "card error-card", hidden: true }, h("h2", { text: "Error" }), ui.errorText);
  ui.attempts = h("section", { class: "card", hidden: true }, h("h2", { text: "Attempts" }),
    dataTable("job-attempts", ["#", "worker", "started", "ended", "outcome", "resumed from"], ui.attemptsBody));
  ui.texts = h("section", { class: "card", hidden: true }, h("h2", { text: "Sampled text per epoch" }), ui.textsList);
  const { loss, headline, grads, lr } = ui.charts;
  view.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/", text: "← Jobs" })),
    h("div", { class: "page-head" }, h("div", { class: "title-line" }, ui.title, ui.badge),
      h("div", { class: "actions" }, ui.compare,
        h("span", { class: "priority-control", id: "priority-control", hidden: true }, ui.priority, ui.setPriority),
        ui.cancel)),
    ui.queue.box,
    h("section", { class: "card" }, ui.summary),
    ui.errorBox,
    ui.attempts,
    h("div", { class: "chart-grid" }, loss.box, headline.box, grads.box, lr.box),
    inside,
    ui.texts,
    ui.checkpoints.section,
    h("section", { class: "card" }, h("h2", { text: "Configuration" }),
      scrollTable(h("table", { class: "kv-table", id: "job-config" }, ui.configBody))),
  );
  return ui;
}

// ---- what the buttons do ---------------------------------------------------------------------

function compareWithSelected(jobId) {
  const ids = [...new Set([jobId, ...selection])].sort((a, b) => a - b);
  navigate("/compare", new URLSearchParams({ ids: ids.join(",") }));
}

async function cancelJob(page) {
  const { cancel } = page.ui;
  cancel.disabled = true;
  try {
    await api(`jobs/${page.jobId}/cancel`, { method: "POST" });
  } catch (exc) {
    showError(exc.message);
  }
  cancel.disabled = false;
  refresh(page);
}

/** PATCH the job's priority: a queued job moves in the queue at once. */
async function setPriority(page) {
  const { priority, setPriority: button } = page.ui;
  button.disabled = true;
  try {
    await api(`jobs/${page.jobId}`, { method: "PATCH", body: { priority: Number(priority.value) } });
    delete priority.dataset.editing;
  } catch (exc) {
    showError(exc.message);
  }
  button.disabled = false;
  refresh(page);
}

function wire(page) {
  page.ui.compare.addEventListener("click", () => compareWithSelected(page.jobId));
  page.ui.cancel.addEventListener("click", () => cancelJob(page));
  page.ui.setPriority.addEventListener("click", () => setPriority(page));
  // While the user types, the live refresh must not overwrite the field.
  page.ui.priority.addEventListener("input", () => { page.ui.priority.dataset.editing = "1"; });
}

// ---- rendering the job (GET /jobs/{id}) ------------------------------------------------------

/** A forked run's parent (GET /jobs/{id} `parent`): "Forked from job 3 (checkpoint 7, epoch 5)",
 * the job a link to its page. */
function parentLine(parent) {
  const optimizer = parent.resume_optimizer ? ", with its optimizer state" : "";
  const job = parent.job === null || parent.job === undefined
    ? "a deleted job"
    : h("a", { href: `#/jobs/${parent.job}`, text: `job ${parent.job}` });
  return h("span", { id: "job-parent" }, "Forked from ", job,
    ` (checkpoint ${parent.checkpoint}, epoch ${parent.epoch}${optimizer})`);
}

/** An upload's exact version (and sha256) the job trained on, linked to its page; else the name. */
function datasetLine(job) {
  if (job.dataset_version === null || job.dataset_version === undefined) return job.dataset;
  const name = job.dataset.split("@")[0];
  return h("span", { id: "job-dataset" }, h("a", { href: `#/datasets/${encodeURIComponent(name)}?v=${job.dataset_version}`,
    text: `${name}@${job.dataset_version}` }), job.dataset_sha256 ? h("code", { class: "muted", title: job.dataset_sha256,
    text: ` sha256 ${job.dataset_sha256.slice(0, 12)}…` }) : null);
}

function summaryRows(job, progress) {
  const rows = [
    ...(job.parent ? [kv("parent", parentLine(job.parent))] : []),
    ...(job.sweep_id !== null && job.sweep_id !== undefined
      ? [kv("sweep", h("a", { href: `#/sweeps/${job.sweep_id}`, id: "job-sweep",
        text: `trial ${job.trial} of sweep ${job.sweep_id}` }))] : []),
    kv("model", job.model), kv("dataset", datasetLine(job)), kv("device", job.device),
    kv("priority", String(job.priority ?? 0)),
    kv("progress", progress || progressBar(job)),
    kv("step", `${job.progress.step ?? 0}${job.progress.total_steps ? ` / ${job.progress.total_steps}` : ""}`),
    kv("duration", fmtDuration(jobDuration(job))),
    kv("attempts", String(job.attempts)),
    kv("worker", job.worker || "–"),
    kv("created", fmtTime(job.created_at)), kv("started", fmtTime(job.started_at)),
    kv("finished", fmtTime(job.finished_at)),
  ];
  const latest = job.latest_metrics || {};
  for (const name of SUMMARY_METRICS) {
    if (name in latest) rows.push(kv(`latest ${name}`, fmtMetric(name, latest[name])));
  }
  return rows;
}

function renderSummary({ summary }, job) {
  const progress = summary.querySelector(".progress"); // kept, so its bar moves smoothly
  const rows = summaryRows(job, progress);
  if (progress) updateProgress(progress, job);
  summary.replaceChildren(...rows);
}

function attemptRow(a) {
  const resumed = a.resumed_from_epoch === null || a.resumed_from_epoch === undefined ? "start" : `epoch ${a.resumed_from_epoch}`;
  return h("tr", {},
    h("td", { text: String(a.number), dataset: { label: "#" } }),
    h("td", { text: a.worker || "–", dataset: { label: "worker" } }),
    h("td", { text: fmtTime(a.started_at), dataset: { label: "started" } }),
    h("td", { text: fmtTime(a.ended_at), dataset: { label: "ended" } }),
    h("td", { text: a.outcome || "running", dataset: { label: "outcome" } }),
    h("td", { text: resumed, dataset: { label: "resumed from" } }));
}

function startText(seconds) {
  if (seconds === null || seconds === undefined) return "Estimated start: unknown";
  if (seconds < 1) return "Estimated start: now";
  return `Estimated start: in about ${fmtDuration(seconds)}`;
}

/** GET /jobs/{id} `queue`: null once the job has left the queue, and the card hides. */
function renderQueue({ queue }, job) {
  const q = job.status === "queued" ? job.queue : null;
  queue.box.hidden = !q;
  if (!q) return;
  queue.box.dataset.reason = q.reason.code;
  const ahead = q.jobs_ahead === 1 ? "1 job ahead" : `${q.jobs_ahead} jobs ahead`;
  setText(queue.position, `#${q.position} in queue · ${ahead}`);
  setText(queue.reason, q.reason.message);
  setText(queue.start, startText(q.estimated_start_seconds));
}

/** Every claim of the job by a worker (GET /jobs/{id} lists them when the server has them). */
function renderAttempts({ attempts, attemptsBody }, job) {
  const history = Array.isArray(job.attempt_history) ? job.attempt_history : [];
  attempts.hidden = history.length === 0;
  attemptsBody.replaceChildren(...history.map(attemptRow));
}

/** The hyperparameters never change: shown from the first answer only. */
function renderConfig({ configBody }, job) {
  const entries = Object.entries(job.hyperparameters).sort(([a], [b]) => a.localeCompare(b));
  configBody.replaceChildren(...entries.map(([k, v]) => h("tr", {}, h("th", { text: k }), h("td", { text: fmtValue(v) }))));
}

function renderJob(page, job) {
  const { ui } = page;
  setText(ui.title, `#${job.id} ${job.name || ""}`);
  ui.badge.replaceChildren(statusBadge(job.status));
  ui.cancel.hidden = !ACTIVE.has(job.status);
  if (page.deleteButton) page.deleteButton.update(job); // lifecycle
  ui.priority.closest(".priority-control").hidden = !ACTIVE.has(job.status);
  if (!ui.priority.dataset.editing) ui.priority.value = String(job.priority ?? 0);
  renderQueue(ui, job);
  renderSummary(ui, job);
  ui.errorBox.hidden = !job.error;
  setText(ui.errorText, job.error || "");
  renderAttempts(ui, job);
  if (!page.configShown) {
    page.configShown = true;
    renderConfig(ui, job);
  }
}

// ---- charts (GET /jobs/{id}/metrics: {series: {name: [{step, epoch, value}]}}) ---------------

const hasPoints = (series, name) => Boolean(series[name] && series[name].length);
const xsOf = (series, name, key = "step") => series[name].map((p) => p[key]);
const ysOf = (series, name) => series[name].map((p) => p.value);

/** train_loss per step, val_loss per epoch at the step where the epoch ended. */
function drawLoss(chart, series) {
  const traces = [];
  if (hasPoints(series, "train_loss")) {
    traces.push({ type: "scatter", mode: "lines", name: "train loss", x: xsOf(series, "train_loss"),
      y: ysOf(series, "train_loss"), line: { color: runColor(0), width: 1.5 } });
  }
  if (hasPoints(series, "val_loss")) {
    traces.push({ type: "scatter", mode: "lines+markers", name: "val loss", x: xsOf(series, "val_loss"),
      y: ysOf(series, "val_loss"), text: series.val_loss.map((p) => `epoch ${p.epoch}`),
      line: { color: runColor(1), width: 2 } });
  }
  if (!traces.length) return null;
  chart.empty.hidden = true;
  return draw(chart.plot, traces, baseLayout({ xTitle: "step", yTitle: "loss" }));
}

/** The family's headline metric (the API names it), per epoch. */
function drawHeadline(chart, series, name) {
  if (!name || !hasPoints(series, name)) return null;
  chart.heading.textContent = `${metricTitle(name)} per epoch`;
  chart.empty.hidden = true;
  return draw(chart.plot, [{ type: "scatter", mode: "lines+markers", name,
    x: xsOf(series, name, "epoch"), y: ysOf(series, name), line: { color: runColor(2), width: 2 } }],
  baseLayout({ xTitle: "epoch", yTitle: name, legend: false, maxX: series[name].at(-1).epoch }));
}

function drawGradNorms(chart, series) {
  const names = Object.keys(series).filter((n) => n.startsWith("grad_norm/")).sort();
  if (!names.length) return null;
  chart.empty.hidden = true;
  return draw(chart.plot, names.map((n, i) => ({
    type: "scatter", mode: "lines+markers", name: plotText(n.slice("grad_norm/".length)),
    x: xsOf(series, n, "epoch"), y: ysOf(series, n), line: { color: runColor(i), width: 2 },
  })), baseLayout({ xTitle: "epoch", yTitle: "L2 norm of the gradient", logY: true,
    maxX: series[names[0]].at(-1).epoch }));
}

/** The learning rate, and samples or tokens per second on a second axis. */
function drawRate(chart, series) {
  const rate = hasPoints(series, "samples_per_s") ? "samples_per_s" : hasPoints(series, "tokens_per_s") ? "tokens_per_s" : null;
  const lr = hasPoints(series, "lr");
  if (!lr && !rate) return null;
  const traces = [];
  if (lr) traces.push({ type: "scatter", mode: "lines", name: "learning rate", x: xsOf(series, "lr"), y: ysOf(series, "lr"), line: { color: runColor(4) } });
  if (rate) traces.push({ type: "scatter", mode: "lines", name: rate.replace(/_/g, " "), x: xsOf(series, rate), y: ysOf(series, rate), yaxis: "y2", line: { color: runColor(5), width: 1 } });
  const layout = baseLayout({ xTitle: "step", yTitle: "learning rate" });
  layout.yaxis2 = { title: { text: rate ? rate.replace(/_/g, " ") : "" }, overlaying: "y", side: "right", showgrid: false, automargin: true };
  layout.margin.r = 56;
  chart.empty.hidden = true;
  return draw(chart.plot, traces, layout);
}

async function renderCharts({ charts }, series, headline) {
  await Promise.all([
    drawLoss(charts.loss, series),
    drawHeadline(charts.headline, series, headline),
    drawGradNorms(charts.grads, series),
    drawRate(charts.lr, series),
  ]);
}

// ---- sampled texts and checkpoints -----------------------------------------------------------

function renderTexts({ texts, textsList }, items) {
  texts.hidden = items.length === 0;
  const ordered = [...items].reverse(); // newest epoch first
  textsList.replaceChildren(...ordered.map((t) => h("article", { class: "text-sample" },
    h("h3", { text: `epoch ${t.epoch ?? "?"} · step ${t.step ?? "?"} · ${t.name}` }),
    h("pre", { text: t.text }))));
}

function checkpointRow(jobId, c) {
  const metrics = Object.entries(c.metrics || {})
    .filter(([k]) => !k.startsWith("grad_norm/"))
    .map(([k, v]) => `${k} ${fmtMetric(k, v)}`).join(", ");
  // The link is built from ids, not taken from the answer: always a download of ours.
  const href = apiUrl(`jobs/${jobId}/checkpoints/${Number(c.id)}/download`).href;
  return h("tr", {},
    h("td", { text: String(c.epoch), dataset: { label: "epoch" } }),
    h("td", { text: String(c.step), dataset: { label: "step" } }),
    h("td", { text: fmtBytes(c.size), dataset: { label: "size" } }),
    h("td", { class: "sha", dataset: { label: "sha256" } }, h("code", { text: c.sha256 })),
    h("td", { text: metrics || "–", dataset: { label: "metrics" } }),
    h("td", {}, h("a", { href, download: "", class: "btn btn-small", text: "Download" })));
}

function renderCheckpoints({ checkpoints }, jobId, items) {
  checkpoints.empty.hidden = items.length > 0;
  checkpoints.body.parentElement.hidden = items.length === 0;
  checkpoints.body.replaceChildren(...items.map((c) => checkpointRow(jobId, c)));
}

// ---- live ------------------------------------------------------------------------------------

function showMissing({ view, jobId }) {
  view.replaceChildren(h("div", { class: "empty" }, h("h2", { text: `Job ${jobId} does not exist` }),
    h("p", {}, h("a", { href: "#/", text: "Back to the jobs list" }))));
  view.dataset.state = "ready";
}

/** One pass: the job, then its curves, texts and checkpoints. False: stop polling. */
async function refresh(page) {
  const { jobId, view, ui } = page;
  let job;
  try {
    job = await api(`jobs/${jobId}`);
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 404) {
      showMissing(page);
      return false;
    }
    showError(`Cannot reach the API: ${exc.message}`);
    return true;
  }
  showError(null);
  renderJob(page, job);
  const [metrics, textItems, ckpts, models] = await Promise.all([
    api(`jobs/${jobId}/metrics?max_points=${MAX_POINTS}`),
    api(`jobs/${jobId}/texts`),
    api(`jobs/${jobId}/checkpoints`),
    catalogue().catch(() => ({})),
  ]);
  renderTexts(ui, textItems);
  renderCheckpoints(ui, jobId, ckpts);
  page.inside.update(job, ckpts, models);
  await renderCharts(ui, metrics.series, headlineMetric(models, job.model));
  view.dataset.state = "ready";
  view.dataset.status = job.status;
  if (!ACTIVE.has(job.status)) {
    if (page.finalFetchDone) return false; // finished: one more pass caught the last points
    page.finalFetchDone = true;
  }
  return true;
}

export async function mount(view, { match }) {
  const jobId = Number(match[1]);
  const inside = createInside(jobId);
  const page = { view, jobId, inside, ui: buildPage(view, inside.root), configShown: false, finalFetchDone: false };
  wire(page);
  mountLogs(view, jobId); // stops by itself when the page is left
  page.deleteButton = mountDelete(view, jobId); // lifecycle
  loadPlotly().catch((exc) => showError(exc.message));
  const stop = poll(() => refresh(page), REFRESH_MS);
  return () => {
    stop();
    inside.destroy();
    for (const chart of Object.values(page.ui.charts)) purge(chart.plot);
  };
}
