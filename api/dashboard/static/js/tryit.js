// "Try it" on a job's page: draw a digit for a classifier (POST /jobs/{id}/predict with the
// drawing as a PNG file), or continue a prompt with a language model (POST /jobs/{id}/generate).
// Both use the checkpoint the page's slider has chosen.
"use strict";

import { api } from "./api.js";
import { h, setText } from "./dom.js";
import { panel } from "./panel.js";
import { probabilityBars } from "./pixels.js";

const PAD = 280; // drawing pixels; the server shrinks the drawing to the model's input size
const STROKE = 22; // about the stroke width of an MNIST digit at this size
const EVERY_MS = 200; // at most this often while the pen moves; always once when it lifts

function canvasBlob(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

/** Pointer events (mouse, pen, touch alike) that draw thick white lines on black. */
function wirePad(canvas, { onStroke, onLift }) {
  const ctx = canvas.getContext("2d");
  let last = null;
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
  };
  const line = (from, to) => {
    ctx.beginPath();
    ctx.moveTo(from[0], from[1]);
    ctx.lineTo(to[0], to[1]);
    ctx.stroke();
  };
  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    Object.assign(ctx, { strokeStyle: "#fff", lineWidth: STROKE, lineCap: "round", lineJoin: "round" });
    last = at(event);
    line(last, last); // a tap leaves a dot
    onStroke();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const point = at(event);
    line(last, point);
    last = point;
    onStroke();
  });
  const lift = () => {
    if (!last) return;
    last = null;
    onLift();
  };
  canvas.addEventListener("pointerup", lift);
  canvas.addEventListener("pointercancel", lift);
}

export function digitPad(ctx) {
  const canvas = h("canvas", { id: "tryit-canvas", class: "draw-pad", width: PAD, height: PAD,
    "aria-label": "drawing pad: draw a digit with the mouse, a pen or a finger" });
  const clear = h("button", { type: "button", class: "btn", id: "tryit-clear", text: "Clear" });
  const label = h("div", { class: "tryit-label", id: "tryit-label", text: "–" });
  const meta = h("p", { class: "muted", id: "tryit-meta", text: "Draw in the black square." });
  const bars = h("div", { id: "tryit-bars" });
  const p = panel("tryit", "Try it: draw a digit", {
    hint: "Light strokes on a dark ground, as in the training images; the network answers as you draw.",
  });
  p.body.append(h("div", { class: "tryit-row" },
    h("div", { class: "tryit-pad" }, canvas, h("div", { class: "tryit-actions" }, clear)),
    h("div", { class: "tryit-result" }, h("span", { class: "muted", text: "Predicted" }), label, meta, bars)));
  const pen = canvas.getContext("2d");
  let blank = true;
  let timer = null;
  let busy = false;
  let again = false;

  const wipe = () => {
    pen.fillStyle = "#000";
    pen.fillRect(0, 0, PAD, PAD);
    blank = true;
  };

  // One request at a time; strokes drawn meanwhile are sent as soon as it answers.
  async function send() {
    if (blank) return;
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    const form = new FormData();
    form.append("files", await canvasBlob(canvas), "drawing.png");
    if (ctx.checkpoint()) form.append("checkpoint", String(ctx.checkpoint()));
    await p.run(null, (d) => {
      const [prediction] = d.predictions;
      setText(label, String(prediction.label));
      setText(meta, `checkpoint ${d.checkpoint}, epoch ${d.epoch}`);
      bars.replaceChildren(probabilityBars(prediction.probabilities.map((probability, i) => ({ label: i, probability })),
        { highlight: prediction.label }));
    }, (signal) => api(`jobs/${ctx.jobId}/predict`, { method: "POST", body: form, signal }));
    busy = false;
    if (again && !blank) {
      again = false;
      send();
    }
  }

  wirePad(canvas, {
    onStroke: () => {
      blank = false;
      if (timer === null) timer = window.setTimeout(() => { timer = null; send(); }, EVERY_MS);
    },
    onLift: () => {
      if (timer !== null) window.clearTimeout(timer);
      timer = null;
      send();
    },
  });
  clear.addEventListener("click", () => {
    wipe();
    again = false;
    setText(label, "–");
    setText(meta, "Draw in the black square.");
    bars.replaceChildren();
    p.say(null);
  });
  wipe();
  p.load = () => send(); // another checkpoint: ask it about the same drawing
  p.destroy = () => {
    if (timer !== null) window.clearTimeout(timer);
    p.stop();
  };
  return p;
}

function numberField(id, label, attrs) {
  const input = h("input", { type: "number", id, class: "input-narrow", ...attrs });
  return { input, field: h("label", { class: "field-inline", for: id }, label, input) };
}

export function generator(ctx) {
  const prompt = h("textarea", { id: "gen-prompt", rows: 3, class: "gen-prompt-input", "aria-label": "prompt" });
  prompt.value = "The ";
  const max = numberField("gen-max", "max tokens", { min: "0", max: "2000", step: "1", value: "200" });
  const temp = numberField("gen-temp", "temperature", { min: "0.05", max: "2", step: "0.05", value: "0.8" });
  const seed = numberField("gen-seed", "seed", { min: "0", step: "1", placeholder: "random" });
  const go = h("button", { type: "submit", class: "btn btn-primary", id: "gen-button", text: "Generate" });
  // novalidate: the API checks the ranges and its 422 says which field, shown in the panel.
  const form = h("form", { class: "gen-form", id: "gen-form", novalidate: true }, prompt,
    h("div", { class: "panel-controls" }, max.field, temp.field, seed.field, go));
  const output = h("pre", { class: "gen-output", id: "gen-output", hidden: true });
  const meta = h("p", { class: "muted", id: "gen-meta" });
  const unknown = h("p", { class: "gen-unknown", id: "gen-unknown", hidden: true });
  const p = panel("tryit", "Try it: generate text", {
    hint: "The network continues the prompt one token at a time, drawing each from its softmax.",
    controls: form, wide: true,
  });
  p.body.append(output, meta, unknown);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    // Empty number fields are left out, so the API's defaults apply; bad values come back as
    // a 422 naming the field, shown in the panel.
    const body = { prompt: prompt.value };
    if (max.input.value !== "") body.max_tokens = Number(max.input.value);
    if (temp.input.value !== "") body.temperature = Number(temp.input.value);
    if (seed.input.value !== "") body.seed = Number(seed.input.value);
    if (ctx.checkpoint()) body.checkpoint = ctx.checkpoint();
    go.disabled = true;
    p.say("Generating…");
    await p.run(null, (d) => {
      const start = d.text.length - d.continuation.length;
      output.replaceChildren(h("span", { class: "gen-given", text: d.text.slice(0, start) }),
        h("span", { class: "gen-new", text: d.continuation }));
      output.hidden = false;
      setText(meta, `${d.tokens} tokens · seed ${d.seed} · checkpoint ${d.checkpoint}, epoch ${d.epoch}`);
      unknown.hidden = d.unknown.length === 0;
      const how = d.tokenizer === "char" ? "dropped" : "read as <unk>";
      setText(unknown, `Not in the model's vocabulary (${how}): ${d.unknown.map((t) => JSON.stringify(t)).join(", ")}`);
    }, (signal) => api(`jobs/${ctx.jobId}/generate`, { method: "POST", body, signal }));
    go.disabled = false;
  });
  p.destroy = p.stop;
  return p;
}
