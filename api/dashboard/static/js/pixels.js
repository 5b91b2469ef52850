// Arrays from the "look inside" answers (C x H x W nested lists of numbers) drawn as small
// canvases: one canvas pixel per array cell, enlarged by CSS (image-rendering: pixelated), so a
// weight or an activation stays a crisp square however small the image is.
"use strict";

import { h } from "./dom.js";

/** [min, max] over every number of a nested list. */
export function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  const visit = (v) => {
    if (Array.isArray(v)) {
      for (const item of v) visit(item);
    } else if (Number.isFinite(v)) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  };
  visit(values);
  return lo <= hi ? [lo, hi] : [0, 1];
}

const clamp01 = (t) => (t < 0 ? 0 : t > 1 ? 1 : t);
// Diverging colours: negative blue, zero white, positive red (ColorBrewer RdBu's ends).
const NEGATIVE = [33, 102, 172];
const POSITIVE = [178, 24, 43];

function diverge(t) {
  const [r, g, b] = t < 0 ? NEGATIVE : POSITIVE;
  const a = Math.min(1, Math.abs(t));
  return [255 + (r - 255) * a, 255 + (g - 255) * a, 255 + (b - 255) * a];
}

/**
 * A canvas showing `chw` (C x H x W). Three channels are drawn as RGB, any other count as grey
 * (the channels' mean). `range` [lo, hi] maps lo to black and hi to white (default: the
 * array's own extent). `diverging`: the channels' mean on the blue-white-red scale, symmetric
 * around 0 (default scale: the array's largest absolute value).
 */
export function arrayCanvas(chw, { range = null, diverging = false, className = "thumb", title = null } = {}) {
  const channels = chw.length;
  const height = chw[0].length;
  const width = chw[0][0].length;
  const canvas = h("canvas", { class: className, width, height, title });
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  const [lo, hi] = range || extent(chw);
  const span = hi - lo || 1;
  const limit = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
  const rgb = channels === 3 && !diverging;
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const at = (y * width + x) * 4;
      let colour;
      if (rgb) {
        colour = [0, 1, 2].map((c) => 255 * clamp01((chw[c][y][x] - lo) / span));
      } else {
        let sum = 0;
        for (let c = 0; c < channels; c += 1) sum += chw[c][y][x];
        const mean = sum / channels;
        colour = diverging ? diverge(mean / limit) : Array(3).fill(255 * clamp01((mean - lo) / span));
      }
      image.data.set([colour[0], colour[1], colour[2], 255], at);
    }
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

/** A canvas with a caption under it. */
export function figure(canvas, caption, className = "thumb-figure") {
  return h("figure", { class: className }, canvas, h("figcaption", { text: caption }));
}

/** Horizontal probability bars as plain elements: [{label, probability}], the top one marked. */
export function probabilityBars(items, { highlight = null } = {}) {
  return h("div", { class: "prob-bars" }, items.map((item) => {
    const percent = 100 * item.probability;
    return h("div", { class: `prob-row${item.label === highlight ? " prob-top" : ""}`, dataset: { label: String(item.label) } },
      h("span", { class: "prob-label", text: String(item.label) }),
      h("span", { class: "prob-track" }, h("span", { class: "prob-fill", style: { width: `${percent.toFixed(1)}%` } })),
      h("span", { class: "prob-value", text: `${percent.toFixed(1)}%` }));
  }));
}
