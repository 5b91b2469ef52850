// "Inside the model" and "Try it" on a job's page (#/jobs/42): an epoch slider over the job's
// checkpoints drives panels that look inside the network at that checkpoint (CNN filters and
// feature maps, MLP units, confusion matrix and mistakes, an LM's embeddings, neighbours and
// next-token guesses) and panels that use it (draw a digit, generate text).
// job.js hands every live refresh to update(); this module asks the API for the rest itself.
"use strict";

import { metricGoal } from "./catalogue.js";
import { ACTIVE, fmtMetric, h, setText } from "./dom.js";
import { confusionPanel, featureMapsPanel, filtersPanel, mistakesPanel, unitsPanel } from "./inside-images.js";
import { embeddingsPanel, neighboursPanel, nextTokenPanel } from "./inside-text.js";
import { digitPad, generator } from "./tryit.js";

// Which panels each family gets; a family not named here gets none.
const FAMILY_PANELS = {
  cnn: { inside: [filtersPanel, featureMapsPanel, confusionPanel, mistakesPanel], tryit: digitPad },
  mlp: { inside: [unitsPanel, confusionPanel, mistakesPanel], tryit: digitPad },
  rnn_lm: { inside: [embeddingsPanel, neighboursPanel, nextTokenPanel], tryit: generator },
};

/** The checkpoint the API picks by default: best headline metric, newest on a tie or without. */
function bestCheckpoint(ckpts, name, goal) {
  const sign = goal === "min" ? -1 : 1;
  let best = null;
  for (const c of ckpts) {
    const v = c.metrics ? c.metrics[name] : undefined;
    if (typeof v !== "number") continue;
    if (!best || sign * v > sign * best.metrics[name] || (sign * v === sign * best.metrics[name] && c.step >= best.step)) best = c;
  }
  return best || ckpts[ckpts.length - 1];
}

function sliderLabel(c, headline, isBest) {
  const parts = [`epoch ${c.epoch}`, `step ${c.step}`];
  if (headline && c.metrics && headline in c.metrics) parts.push(`${headline} ${fmtMetric(headline, c.metrics[headline])}`);
  return `${parts.join(" · ")}${isBest ? " (best)" : ""}`;
}

/** The slider card: it moves over the checkpoints, oldest to newest. */
function buildSlider() {
  const input = h("input", { type: "range", id: "inside-checkpoint", min: "0", max: "0", step: "1", value: "0",
    "aria-label": "checkpoint (epoch)" });
  const label = h("span", { id: "inside-epoch", class: "slider-value" });
  const empty = h("p", { class: "muted", id: "inside-empty" });
  const control = h("div", { class: "slider-line" }, h("label", { for: "inside-checkpoint", text: "Checkpoint" }), input, label);
  const box = h("section", { class: "card inside-head" },
    h("h2", { text: "Inside the model" }), empty, control);
  return { box, input, label, empty, control };
}

export function createInside(jobId) {
  const root = h("div", { class: "inside", id: "job-inside", hidden: true });
  const grid = h("div", { class: "inside-grid" });
  const tryitSlot = h("div");
  const state = {
    jobId, job: null, models: {}, ckpts: [], chosen: null, touched: false, panels: [], built: false,
    headline: null, best: null,
  };
  const slider = buildSlider();
  grid.hidden = true;
  root.append(slider.box, grid, tryitSlot);

  const ctx = {
    jobId,
    get job() { return state.job; },
    checkpoint: () => (state.chosen ? state.chosen.id : null),
    query: (extra = {}) => {
      const params = new URLSearchParams(extra);
      if (state.chosen) params.set("checkpoint", String(state.chosen.id));
      return params.toString();
    },
  };

  const loadAll = () => {
    for (const p of state.panels) if (p.load) p.load(state.chosen);
  };

  const showChosen = () => {
    const i = state.ckpts.indexOf(state.chosen);
    slider.input.value = String(i);
    setText(slider.label, sliderLabel(state.chosen, state.headline, state.chosen === state.best));
    root.dataset.checkpoint = String(state.chosen.id);
  };

  slider.input.addEventListener("input", () => {
    const c = state.ckpts[Number(slider.input.value)];
    if (c) setText(slider.label, sliderLabel(c, state.headline, c === state.best));
  });
  slider.input.addEventListener("change", () => {
    const c = state.ckpts[Number(slider.input.value)];
    if (!c || c === state.chosen) return;
    state.touched = true;
    state.chosen = c;
    showChosen();
    loadAll();
  });

  function build(job) {
    const spec = FAMILY_PANELS[job.model];
    state.built = true;
    if (!spec) return;
    root.hidden = false;
    root.dataset.family = job.model;
    state.panels = spec.inside.map((make) => make(ctx));
    grid.append(...state.panels.map((p) => p.section));
    const tryit = spec.tryit(ctx);
    state.panels.push(tryit);
    tryitSlot.append(tryit.section);
  }

  /** The checkpoints changed (a new epoch): follow the best unless the user picked one. */
  function setCheckpoints(ckpts) {
    const before = state.chosen;
    state.ckpts = ckpts;
    const goal = state.headline ? metricGoal(state.models, state.headline) : null;
    state.best = bestCheckpoint(ckpts, state.headline, goal);
    const kept = before && state.touched ? ckpts.find((c) => c.id === before.id) : null;
    state.chosen = kept || state.best;
    slider.input.max = String(ckpts.length - 1);
    slider.input.disabled = ckpts.length < 2;
    showChosen();
    return !before || before.id !== state.chosen.id;
  }

  return {
    root,
    /** Each live refresh of the job page: the job, its checkpoints, the model catalogue. */
    update(job, ckpts, models) {
      state.job = job;
      state.models = models || {};
      state.headline = state.models[job.model]?.headline_metric ?? null;
      if (!state.built) build(job);
      if (root.hidden) return;
      const has = ckpts.length > 0;
      grid.hidden = !has;
      tryitSlot.hidden = !has;
      slider.control.hidden = !has;
      slider.empty.hidden = has;
      if (!has) {
        setText(slider.empty, ACTIVE.has(job.status)
          ? "These panels appear after the job's first epoch, when its first checkpoint is saved."
          : "This job saved no checkpoint, so there is no trained network to look inside.");
        return;
      }
      const same = ckpts.length === state.ckpts.length && ckpts.every((c, i) => c.id === state.ckpts[i].id);
      if (!same && setCheckpoints(ckpts)) loadAll();
      for (const p of state.panels) if (p.live) p.live(job, ckpts);
    },
    destroy() {
      for (const p of state.panels) if (p.destroy) p.destroy();
    },
  };
}
