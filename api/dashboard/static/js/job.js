// One job: summary, config, live curves, gradient norms, sampled texts, checkpoints, error.
"use strict";

import { api, ApiError, apiUrl, poll } from "./api.js";
import { baseLayout, draw, loadPlotly, plotText, purge, runColor } from "./charts.js";
import {
  ACTIVE, fmtBytes, fmtDuration, fmtMetric, fmtTime, fmtValue, h, jobDuration, progressBar,
  scrollTable, setText, statusBadge, updateProgress,
} from "./dom.js";
import { REFRESH_MS, navigate, selection, showError } from "../app.js";

const MAX_POINTS = 1000;

function headlineOf(series) {
  if (series.val_perplexity) return ["val_perplexity", "Validation perplexity"];
  if (series.val_accuracy) return ["val_accuracy", "Validation accuracy"];
  return [null, null];
}

function chartBox(id, title, note) {
  const plot = h("div", { class: "chart chart-empty-state", id });
  const empty = h("p", { class: "chart-empty", text: note });
  return { box: h("section", { class: "card chart-card" }, h("h3", { text: title }), empty, plot), plot, empty };
}

function kv(label, value) {
  const dd = h("dd");
  if (value instanceof Node) dd.append(value);
  else dd.textContent = value;
  return h("div", { dataset: { key: label } }, h("dt", { text: label }), dd);
}

export async function mount(view, { match }) {
  const jobId = Number(match[1]);
  const title = h("h1", { class: "job-title" });
  const badge = h("span");
  const cancel = h("button", { type: "button", class: "btn btn-danger", text: "Cancel job", hidden: true });
  const compare = h("button", { type: "button", class: "btn", text: "Compare with selected runs" });
  const summary = h("dl", { class: "summary" });
  const errorBox = h("section", { class: "card error-card", hidden: true },
    h("h2", { text: "Error" }), h("pre", { class: "error-text", id: "job-error" }));
  const attemptsBody = h("tbody");
  const attempts = h("section", { class: "card", hidden: true }, h("h2", { text: "Attempts" }),
    scrollTable(h("table", { class: "data-table cards-narrow", id: "job-attempts" },
      h("thead", {}, h("tr", {}, ["#", "worker", "started", "ended", "outcome", "resumed from"].map((t) => h("th", { text: t })))),
      attemptsBody)));
  const configBody = h("tbody");
  const config = h("section", { class: "card" }, h("h2", { text: "Configuration" }),
    scrollTable(h("table", { class: "kv-table", id: "job-config" }, configBody)));

  const loss = chartBox("chart-loss", "Loss: train per step, validation per epoch",
    "No metrics yet: curves appear here as soon as a worker starts training this job.");
  const headline = chartBox("chart-headline", "Validation metric per epoch",
    "The validation metric appears after the first epoch.");
  const grads = chartBox("chart-grad", "Gradient norm per layer (log scale), per epoch",
    "Gradient norms are recorded at the end of each epoch.");
  const lr = chartBox("chart-lr", "Learning rate and throughput", "Recorded every step.");
  const textsList = h("div", { class: "texts", id: "job-texts" });
  const texts = h("section", { class: "card", hidden: true }, h("h2", { text: "Sampled text per epoch" }), textsList);
  const ckBody = h("tbody");
  const ckEmpty = h("p", { class: "muted", text: "No checkpoints yet: one is saved after every epoch." });
  const checkpoints = h("section", { class: "card" }, h("h2", { text: "Checkpoints" }), ckEmpty,
    scrollTable(h("table", { class: "data-table cards-narrow", id: "job-checkpoints" },
      h("thead", {}, h("tr", {}, ["epoch", "step", "size", "sha256", "metrics", ""].map((t) => h("th", { text: t })))),
      ckBody)));

  view.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/", text: "← Jobs" })),
    h("div", { class: "page-head" }, h("div", { class: "title-line" }, title, badge),
      h("div", { class: "actions" }, compare, cancel)),
    h("section", { class: "card" }, summary),
    errorBox,
    attempts,
    h("div", { class: "chart-grid" }, loss.box, headline.box, grads.box, lr.box),
    texts,
    checkpoints,
    config,
  );

  compare.addEventListener("click", () => {
    const ids = [...new Set([jobId, ...selection])].sort((a, b) => a - b);
    navigate("/compare", new URLSearchParams({ ids: ids.join(",") }));
  });
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await api(`jobs/${jobId}/cancel`, { method: "POST" });
    } catch (exc) {
      showError(exc.message);
    }
    cancel.disabled = false;
    refresh();
  });

  loadPlotly().catch((exc) => showError(exc.message));
  let configShown = false;
  let finalFetchDone = false;

  function renderJob(job) {
    setText(title, `#${job.id} ${job.name || ""}`);
    badge.replaceChildren(statusBadge(job.status));
    cancel.hidden = !ACTIVE.has(job.status);
    const progress = summary.querySelector(".progress");
    const rows = [
      kv("model", job.model), kv("dataset", job.dataset), kv("device", job.device),
      kv("progress", progress || progressBar(job)),
      kv("step", `${job.progress.step ?? 0}${job.progress.total_steps ? ` / ${job.progress.total_steps}` : ""}`),
      kv("duration", fmtDuration(jobDuration(job))),
      kv("attempts", String(job.attempts)),
      kv("worker", job.worker || "–"),
      kv("created", fmtTime(job.created_at)), kv("started", fmtTime(job.started_at)),
      kv("finished", fmtTime(job.finished_at)),
    ];
    const latest = job.latest_metrics || {};
    for (const name of ["val_accuracy", "val_perplexity", "val_loss", "train_loss"]) {
      if (name in latest) rows.push(kv(`latest ${name}`, fmtMetric(name, latest[name])));
    }
    if (progress) updateProgress(progress, job);
    summary.replaceChildren(...rows);
    errorBox.hidden = !job.error;
    setText(errorBox.querySelector("pre"), job.error || "");
    // Every claim of the job by a worker (GET /jobs/{id} lists them when the server has them).
    const history = Array.isArray(job.attempt_history) ? job.attempt_history : [];
    attempts.hidden = history.length === 0;
    attemptsBody.replaceChildren(...history.map((a) => h("tr", {},
      h("td", { text: String(a.number), dataset: { label: "#" } }),
      h("td", { text: a.worker || "–", dataset: { label: "worker" } }),
      h("td", { text: fmtTime(a.started_at), dataset: { label: "started" } }),
      h("td", { text: fmtTime(a.ended_at), dataset: { label: "ended" } }),
      h("td", { text: a.outcome || "running", dataset: { label: "outcome" } }),
      h("td", { text: a.resumed_from_epoch === null || a.resumed_from_epoch === undefined ? "start" : `epoch ${a.resumed_from_epoch}`,
        dataset: { label: "resumed from" } }))));
    if (!configShown) {
      configShown = true;
      const entries = Object.entries(job.hyperparameters).sort(([a], [b]) => a.localeCompare(b));
      configBody.replaceChildren(...entries.map(([k, v]) => h("tr", {}, h("th", { text: k }), h("td", { text: fmtValue(v) }))));
    }
  }

  async function renderCharts(series) {
    const has = (n) => series[n] && series[n].length;
    const xs = (n, key = "step") => series[n].map((p) => p[key]);
    const ys = (n) => series[n].map((p) => p.value);
    const jobs = [];
    // Loss: train_loss per step, val_loss per epoch at the step where the epoch ended.
    if (has("train_loss") || has("val_loss")) {
      const traces = [];
      if (has("train_loss")) {
        traces.push({ type: "scatter", mode: "lines", name: "train loss", x: xs("train_loss"), y: ys("train_loss"),
          line: { color: runColor(0), width: 1.5 } });
      }
      if (has("val_loss")) {
        traces.push({ type: "scatter", mode: "lines+markers", name: "val loss", x: xs("val_loss"), y: ys("val_loss"),
          text: series.val_loss.map((p) => `epoch ${p.epoch}`), line: { color: runColor(1), width: 2 } });
      }
      loss.empty.hidden = true;
      jobs.push(draw(loss.plot, traces, baseLayout({ xTitle: "step", yTitle: "loss" })));
    }
    const [hName, hTitle] = headlineOf(series);
    if (hName && has(hName)) {
      headline.box.querySelector("h3").textContent = `${hTitle} per epoch`;
      headline.empty.hidden = true;
      jobs.push(draw(headline.plot, [{ type: "scatter", mode: "lines+markers", name: hName,
        x: xs(hName, "epoch"), y: ys(hName), line: { color: runColor(2), width: 2 } }],
      baseLayout({ xTitle: "epoch", yTitle: hName, legend: false, maxX: series[hName].at(-1).epoch })));
    }
    const gradNames = Object.keys(series).filter((n) => n.startsWith("grad_norm/")).sort();
    if (gradNames.length) {
      grads.empty.hidden = true;
      jobs.push(draw(grads.plot, gradNames.map((n, i) => ({
        type: "scatter", mode: "lines+markers", name: plotText(n.slice("grad_norm/".length)),
        x: xs(n, "epoch"), y: ys(n), line: { color: runColor(i), width: 2 },
      })), baseLayout({ xTitle: "epoch", yTitle: "L2 norm of the gradient", logY: true,
        maxX: series[gradNames[0]].at(-1).epoch })));
    }
    const rate = has("samples_per_s") ? "samples_per_s" : has("tokens_per_s") ? "tokens_per_s" : null;
    if (has("lr") || rate) {
      const traces = [];
      if (has("lr")) traces.push({ type: "scatter", mode: "lines", name: "learning rate", x: xs("lr"), y: ys("lr"), line: { color: runColor(4) } });
      if (rate) traces.push({ type: "scatter", mode: "lines", name: rate.replace(/_/g, " "), x: xs(rate), y: ys(rate), yaxis: "y2", line: { color: runColor(5), width: 1 } });
      const layout = baseLayout({ xTitle: "step", yTitle: "learning rate" });
      layout.yaxis2 = { title: { text: rate ? rate.replace(/_/g, " ") : "" }, overlaying: "y", side: "right", showgrid: false, automargin: true };
      layout.margin.r = 56;
      lr.empty.hidden = true;
      jobs.push(draw(lr.plot, traces, layout));
    }
    await Promise.all(jobs);
  }

  function renderTexts(items) {
    texts.hidden = items.length === 0;
    const ordered = [...items].reverse(); // newest epoch first
    textsList.replaceChildren(...ordered.map((t) => h("article", { class: "text-sample" },
      h("h3", { text: `epoch ${t.epoch ?? "?"} · step ${t.step ?? "?"} · ${t.name}` }),
      h("pre", { text: t.text }))));
  }

  function renderCheckpoints(items) {
    ckEmpty.hidden = items.length > 0;
    ckBody.parentElement.hidden = items.length === 0;
    ckBody.replaceChildren(...items.map((c) => {
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
    }));
  }

  async function refresh() {
    let job;
    try {
      job = await api(`jobs/${jobId}`);
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 404) {
        view.replaceChildren(h("div", { class: "empty" }, h("h2", { text: `Job ${jobId} does not exist` }),
          h("p", {}, h("a", { href: "#/", text: "Back to the jobs list" }))));
        view.dataset.state = "ready";
        return false;
      }
      showError(`Cannot reach the API: ${exc.message}`);
      return true;
    }
    showError(null);
    renderJob(job);
    const [metrics, textItems, ckpts] = await Promise.all([
      api(`jobs/${jobId}/metrics?max_points=${MAX_POINTS}`),
      api(`jobs/${jobId}/texts`),
      api(`jobs/${jobId}/checkpoints`),
    ]);
    renderTexts(textItems);
    renderCheckpoints(ckpts);
    await renderCharts(metrics.series);
    view.dataset.state = "ready";
    view.dataset.status = job.status;
    if (!ACTIVE.has(job.status)) {
      if (finalFetchDone) return false; // finished: one more pass caught the last points
      finalFetchDone = true;
    }
    return true;
  }

  const stop = poll(refresh, REFRESH_MS);
  return () => {
    stop();
    for (const c of [loss, headline, grads, lr]) purge(c.plot);
  };
}
