// "Inside the model" panels of the RNN language model: its embedding table projected to 2-D,
// the nearest neighbours of a token, and the next-token distribution after a prompt.
"use strict";

import { baseLayout, draw, isNarrow, plotText, purge, runColor } from "./charts.js";
import { h, scrollTable, setText } from "./dom.js";
import { panel } from "./panel.js";

const POINTS = 300;
const NEIGHBOURS = 10;
const TOP = 20;

/** A token as it can be seen: a space, a newline or a tab would otherwise be invisible. */
export function visibleToken(token) {
  if (token === "") return "∅";
  return String(token).replace(/ /g, "␣").replace(/\n/g, "⏎").replace(/\t/g, "⇥");
}

/** A one-line form: its submit (Enter or the button) calls onSubmit; no page reload. */
function inlineForm(id, label, input, button, onSubmit) {
  const form = h("form", { class: "panel-controls", id }, h("label", { for: input.id, text: label }), input, button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onSubmit();
  });
  return form;
}

export function embeddingsPanel(ctx) {
  const method = h("select", { id: "inside-embed-method", "aria-label": "projection" },
    h("option", { value: "pca", text: "PCA" }), h("option", { value: "tsne", text: "t-SNE" }));
  const p = panel("inside-embeddings", "Embeddings in 2-D", {
    hint: "Each token's learned vector, projected to a plane: tokens the network treats alike land near each other.",
    controls: h("div", { class: "panel-controls" }, h("label", { for: "inside-embed-method", text: "Projection" }), method),
    wide: true,
  });
  const chart = h("div", { class: "chart", id: "inside-embeddings-chart" });
  const text = h("p", { class: "muted panel-caption", id: "inside-embeddings-caption" });
  p.body.append(text, chart);
  p.load = () => {
    if (method.value === "tsne") p.say("Computing t-SNE…");
    return p.run(`jobs/${ctx.jobId}/inspect/embeddings?${ctx.query({ method: method.value, limit: String(POINTS) })}`, async (d) => {
      setText(text, `${d.points.length} of ${d.vocab_size} tokens at epoch ${d.epoch} (${d.method === "tsne" ? "t-SNE" : "PCA"})`);
      const labels = d.points.map((pt) => plotText(visibleToken(pt.token)));
      const layout = baseLayout({ xTitle: "", yTitle: "", legend: false });
      layout.height = isNarrow() ? 380 : 480;
      await draw(chart, [{
        type: "scatter", mode: "markers+text", x: d.points.map((pt) => pt.x), y: d.points.map((pt) => pt.y),
        text: labels, textposition: "top center", textfont: { size: 11 },
        marker: { size: 5, color: runColor(0), opacity: 0.7 },
        hovertemplate: "%{text}<extra></extra>",
      }], layout);
    });
  };
  method.addEventListener("change", () => p.load());
  p.destroy = () => {
    p.stop();
    purge(chart);
  };
  return p;
}

export function neighboursPanel(ctx) {
  const word = ctx.job && ctx.job.hyperparameters && ctx.job.hyperparameters.tokenizer === "word";
  const token = h("input", { type: "text", id: "inside-neighbour-token", value: word ? "the" : "e",
    "aria-label": "token", class: "input-narrow" });
  const button = h("button", { type: "submit", class: "btn", text: "Find" });
  const p = panel("inside-neighbours", "Nearest neighbours", {
    hint: "The tokens whose embeddings point the most the same way (cosine similarity).",
    controls: inlineForm("inside-neighbour-form", "Token", token, button, () => p.load()),
  });
  const body = h("tbody");
  p.body.append(scrollTable(h("table", { class: "data-table", id: "inside-neighbours-table" },
    h("thead", {}, h("tr", {}, h("th", { text: "token" }), h("th", { class: "num", text: "similarity" }))), body)));
  p.load = () => {
    if (!token.value) {
      body.replaceChildren();
      p.say("Type a token from the model's vocabulary.");
      return null;
    }
    return p.run(`jobs/${ctx.jobId}/inspect/neighbours?${ctx.query({ token: token.value, k: String(NEIGHBOURS) })}`, (d) => {
      body.replaceChildren(...d.neighbours.map((n) => h("tr", {},
        h("td", {}, h("code", { text: visibleToken(n.token) })),
        h("td", { class: "num", text: n.similarity.toFixed(3) }))));
    });
  };
  p.destroy = p.stop;
  return p;
}

export function nextTokenPanel(ctx) {
  const prompt = h("input", { type: "text", id: "inside-next-prompt", value: "The", "aria-label": "prompt" });
  const button = h("button", { type: "submit", class: "btn", text: "Predict" });
  const p = panel("inside-next-token", "What comes next", {
    hint: `The ${TOP} likeliest next tokens after the prompt, by the network's softmax.`,
    controls: inlineForm("inside-next-form", "Prompt", prompt, button, () => p.load()),
  });
  const chart = h("div", { class: "chart", id: "inside-next-chart" });
  p.body.append(chart);
  p.load = () => p.run(`jobs/${ctx.jobId}/inspect/next-token?${ctx.query({ prompt: prompt.value, top: String(TOP) })}`, async (d) => {
    const items = [...d.tokens].reverse(); // plotly draws the first bar at the bottom
    const labels = items.map((t) => plotText(visibleToken(t.token)));
    const layout = baseLayout({ xTitle: "probability", yTitle: "", legend: false });
    // Bars at 0..n-1 named by tick labels: two tokens that look alike stay two bars.
    layout.yaxis = { ...layout.yaxis, tickmode: "array", tickvals: items.map((_, i) => i), ticktext: labels,
      automargin: true, gridcolor: "rgba(0,0,0,0)" };
    layout.xaxis = { ...layout.xaxis, tickformat: ".1%", rangemode: "tozero" };
    layout.height = Math.max(260, 22 * items.length + 70);
    await draw(chart, [{
      type: "bar", orientation: "h", x: items.map((t) => t.probability), y: items.map((_, i) => i),
      text: labels, textposition: "none", marker: { color: runColor(0) },
      hovertemplate: "%{text}: %{x:.1%}<extra></extra>",
    }], layout);
  });
  p.destroy = () => {
    p.stop();
    purge(chart);
  };
  return p;
}
