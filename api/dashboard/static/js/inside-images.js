// "Inside the model" panels of the image classifiers (mlp, cnn): first-layer CNN filters, the
// feature maps of one validation image, first-layer MLP units, the validation confusion matrix
// per epoch, and the validation images the network got wrong most confidently.
// Each panel is panel() of inside.js plus load(checkpoint) and, for the live ones, live(job).
"use strict";

import { baseLayout, draw, isNarrow, purge } from "./charts.js";
import { fmtNumber, h, setText } from "./dom.js";
import { panel } from "./panel.js";
import { arrayCanvas, extent, figure } from "./pixels.js";

const MISTAKES = 16;
const UNITS = 64;

function caption(id) {
  return h("p", { class: "muted panel-caption", id });
}

export function filtersPanel(ctx) {
  const p = panel("inside-filters", "First-layer filters", {
    hint: "What each filter of the first convolution looks for, as a small image: all drawn on one scale, black the smallest weight, white the largest.",
  });
  const grid = h("div", { class: "thumb-grid", id: "inside-filter-grid" });
  const text = caption("inside-filters-caption");
  p.body.append(text, grid);
  p.load = () => p.run(`jobs/${ctx.jobId}/inspect/filters?${ctx.query()}`, (d) => {
    const [cout, cin, kh, kw] = d.shape;
    setText(text, `${d.layer}: ${cout} filters of ${cin} x ${kh} x ${kw} at epoch ${d.epoch} ` +
      `(weights from ${fmtNumber(d.min)} to ${fmtNumber(d.max)})`);
    grid.replaceChildren(...d.filters.map((f, i) => arrayCanvas(f, {
      range: [d.min, d.max], className: "thumb filter", title: `filter ${i}`,
    })));
  });
  p.destroy = p.stop;
  return p;
}

function mapsBlock(block) {
  const range = extent(block.maps); // one scale per block: a quiet channel shows as quiet
  const shown = block.maps.length < block.shape[0] ? ` (the first ${block.maps.length} channels)` : "";
  return h("div", { class: "fmap-block" },
    h("h4", { text: `${block.name}: ${block.shape.join(" x ")}${shown}` }),
    h("div", { class: "thumb-grid" }, block.maps.map((m, i) => arrayCanvas([m], {
      range, className: "thumb fmap", title: `channel ${i}`,
    }))));
}

export function featureMapsPanel(ctx) {
  const index = h("input", { type: "number", id: "inside-image-index", min: "0", step: "1", value: "0", class: "input-narrow" });
  const p = panel("inside-feature-maps", "Feature maps of a validation image", {
    hint: "The image, then what each convolution block makes of it (each block's channels on one scale).",
    controls: h("div", { class: "panel-controls" },
      h("label", { for: "inside-image-index", text: "validation image #" }), index),
    wide: true,
  });
  const input = h("div", { class: "fmap-input" });
  const blocks = h("div", { class: "fmap-blocks" });
  p.body.append(input, blocks);
  p.load = () => {
    const i = Math.max(0, Math.floor(Number(index.value) || 0));
    return p.run(`jobs/${ctx.jobId}/inspect/feature-maps?${ctx.query({ index: String(i) })}`, (d) => {
      index.max = String(d.validation_size - 1);
      const verdict = d.label === d.predicted ? "right" : "wrong";
      input.replaceChildren(figure(arrayCanvas(d.image, { className: "thumb thumb-large" }),
        `#${d.index} of ${d.validation_size}: label ${d.label}, predicted ${d.predicted} (${verdict})`));
      blocks.replaceChildren(...d.blocks.map(mapsBlock));
    });
  };
  index.addEventListener("change", () => p.load());
  p.destroy = p.stop;
  return p;
}

export function unitsPanel(ctx) {
  const p = panel("inside-units", "First-layer units", {
    hint: "Each hidden unit's incoming weights, laid out like the input image: red where a bright pixel raises the unit, blue where it lowers it (each unit on its own scale).",
    wide: true,
  });
  const grid = h("div", { class: "thumb-grid", id: "inside-unit-grid" });
  const text = caption("inside-units-caption");
  p.body.append(text, grid);
  p.load = () => p.run(`jobs/${ctx.jobId}/inspect/units?${ctx.query({ limit: String(UNITS) })}`, (d) => {
    setText(text, `${d.units.length} of ${d.total_units} units at epoch ${d.epoch}, ` +
      `each a ${d.shape.join(" x ")} image of weights`);
    grid.replaceChildren(...d.units.map((u, i) => arrayCanvas(u, {
      diverging: true, className: "thumb unit", title: `unit ${i}`,
    })));
  });
  p.destroy = p.stop;
  return p;
}

export function mistakesPanel(ctx) {
  const p = panel("inside-mistakes", "Most confident mistakes", {
    hint: "Validation images the network got wrong, surest first.",
  });
  const grid = h("div", { class: "thumb-grid", id: "inside-mistake-grid" });
  const text = caption("inside-mistakes-caption");
  p.body.append(text, grid);
  p.load = () => p.run(`jobs/${ctx.jobId}/inspect/mistakes?${ctx.query({ limit: String(MISTAKES) })}`, (d) => {
    setText(text, d.wrong === 0
      ? `No mistakes: all ${d.validation_size} validation images right at epoch ${d.epoch}.`
      : `${d.wrong} of ${d.validation_size} validation images wrong at epoch ${d.epoch}; the ${d.items.length} surest:`);
    grid.replaceChildren(...d.items.map((m) => figure(arrayCanvas(m.image, { className: "thumb mistake" }),
      `true ${m.label} → predicted ${m.predicted} (${Math.round(100 * m.confidence)}%)`)));
  });
  p.destroy = p.stop;
  return p;
}

// ---- confusion matrix: its own epochs, followed live --------------------------------------------

function drawConfusion(chart, d) {
  const labels = Array.from({ length: d.num_classes }, (_, i) => String(i));
  const layout = baseLayout({ xTitle: "predicted", yTitle: "true label", legend: false });
  layout.xaxis = { ...layout.xaxis, type: "category", gridcolor: "rgba(0,0,0,0)", side: "bottom" };
  layout.yaxis = { ...layout.yaxis, type: "category", autorange: "reversed", gridcolor: "rgba(0,0,0,0)" };
  layout.height = isNarrow() ? 340 : 380;
  return draw(chart, [{
    type: "heatmap", z: d.matrix, x: labels, y: labels, showscale: false,
    colorscale: [[0, "#f7fbff"], [0.5, "#6baed6"], [1, "#08306b"]], // white = none, dark = many
    texttemplate: "%{z}", xgap: 1, ygap: 1,
    hovertemplate: "true %{y}, predicted %{x}: %{z}<extra></extra>",
  }], layout);
}

export function confusionPanel(ctx) {
  const input = h("input", { type: "range", id: "confusion-epoch", min: "0", max: "0", step: "1", value: "0",
    "aria-label": "epoch of the confusion matrix" });
  const label = h("span", { class: "slider-value", id: "confusion-label" });
  const p = panel("inside-confusion", "Confusion matrix (validation set)", {
    hint: "Rows: the true label; columns: what the network said. Stored at every epoch's end, so it fills in while the job trains.",
    controls: h("div", { class: "slider-line" }, h("label", { for: "confusion-epoch", text: "Epoch" }), input, label),
  });
  const chart = h("div", { class: "chart", id: "inside-confusion-chart" });
  p.body.append(chart);
  let epochs = [];
  let follow = true; // at the newest epoch: live updates move the slider along
  let seen = null;

  const show = (epoch) => p.run(`jobs/${ctx.jobId}/confusion${epoch ? `?epoch=${epoch}` : ""}`, async (d) => {
    epochs = d.epochs;
    input.max = String(epochs.length - 1);
    input.value = String(epochs.indexOf(d.epoch));
    input.disabled = epochs.length < 2;
    const share = d.total ? ` (${(100 * d.correct / d.total).toFixed(1)}%)` : "";
    setText(label, `epoch ${d.epoch} · ${d.correct} of ${d.total} right${share}`);
    chart.dataset.epoch = String(d.epoch);
    await drawConfusion(chart, d);
  });

  input.addEventListener("input", () => setText(label, `epoch ${epochs[Number(input.value)] ?? "?"}`));
  input.addEventListener("change", () => {
    const i = Number(input.value);
    follow = i === epochs.length - 1;
    show(epochs[i]);
  });
  // The matrix belongs to an epoch, not to the chosen checkpoint: load() leaves it alone, and
  // each live refresh asks again once a new epoch has ended (or the job has finished).
  p.live = (job, ckpts) => {
    const key = `${job.status}:${ckpts.length}:${job.progress ? job.progress.epoch : ""}`;
    if (key === seen) return;
    seen = key;
    if (follow) show(null);
  };
  p.destroy = () => {
    p.stop();
    purge(chart);
  };
  return p;
}
