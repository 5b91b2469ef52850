// The submit form, generated from GET /models (each field with its type, default and range).
// The API is the judge: the form sends what was typed and shows the 422 answer's messages
// next to the fields they name; a 201 opens the new job's page.
"use strict";

import { api, ApiError } from "./api.js";
import { fmtValue, h, setText } from "./dom.js";
import { navigate } from "../app.js";

function rangeText(info) {
  const parts = [];
  if (info.choices) parts.push(`one of ${info.choices.join(", ")}`);
  const lo = info.minimum;
  const hi = info.maximum;
  if (info.type === "int_list") {
    parts.push(`${info.min_items ?? 1} to ${info.max_items ?? "∞"} integers, comma-separated`);
    if (lo !== null && hi !== null) parts.push(`each ${lo} to ${hi}`);
  } else if (lo !== null && lo !== undefined && hi !== null && hi !== undefined) {
    parts.push(info.exclusive_minimum ? `> ${lo} and ≤ ${hi}` : `${lo} to ${hi}`);
  } else if (lo !== null && lo !== undefined) {
    parts.push(info.exclusive_minimum ? `> ${lo}` : `≥ ${lo}`);
  }
  return parts.join("; ");
}

function fieldInput(key, info) {
  const id = `hp-${key}`;
  if (info.choices) {
    const select = h("select", { id, name: key }, info.choices.map((c) => h("option", { value: String(c), text: String(c) })));
    select.value = String(info.default);
    return select;
  }
  if (info.type === "bool") return h("input", { id, name: key, type: "checkbox", checked: Boolean(info.default) });
  if (info.type === "int" || info.type === "float") {
    return h("input", {
      id, name: key, type: "number", value: String(info.default),
      step: info.type === "int" ? "1" : "any",
      min: info.minimum ?? null, max: info.maximum ?? null, inputmode: info.type === "int" ? "numeric" : "decimal",
    });
  }
  const text = Array.isArray(info.default) ? info.default.join(", ") : String(info.default ?? "");
  return h("input", { id, name: key, type: "text", value: text, autocomplete: "off" });
}

/** The typed value, in the catalogue's type where it parses; else the raw text (the API says why). */
function readValue(input, info) {
  if (info.type === "bool") return input.checked;
  const raw = input.value.trim();
  if (info.choices) {
    const match = info.choices.find((c) => String(c) === raw);
    return match === undefined ? raw : match;
  }
  if (info.type === "int" || info.type === "float") {
    if (input.validity && input.validity.badInput) return { invalid: "must be a number" };
    if (raw === "") return undefined; // empty: the default
    const n = Number(raw);
    return Number.isFinite(n) ? n : raw;
  }
  if (info.type === "int_list") {
    if (raw === "") return undefined;
    const parts = raw.replace(/^\[|\]$/g, "").split(/[\s,]+/).filter(Boolean);
    return parts.every((p) => /^-?\d+$/.test(p)) ? parts.map(Number) : raw;
  }
  return raw;
}

function sameValue(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

export async function mount(view) {
  const [models, datasets] = await Promise.all([api("models"), api("datasets")]);
  const modelNames = Object.keys(models);

  const errors = new Map(); // field key ("model", "dataset", "hp.lr", ...) -> <p>
  const errorSlot = (key) => {
    const p = h("p", { class: "field-error", id: `error-${key.replace(/\W/g, "-")}`, hidden: true, role: "alert" });
    errors.set(key, p);
    return p;
  };
  const field = (key, label, input, hint) => h("div", { class: "field", dataset: { field: key } },
    h("label", { for: input.id, text: label }), input,
    hint ? h("p", { class: "hint", text: hint }) : null, errorSlot(key));

  const modelSelect = h("select", { id: "model", name: "model" }, modelNames.map((m) => h("option", { value: m, text: m })));
  modelSelect.value = modelNames.includes("mlp") ? "mlp" : modelNames[0];
  const datasetSelect = h("select", { id: "dataset", name: "dataset" });
  const nameInput = h("input", { id: "name", name: "name", type: "text", maxlength: "200", placeholder: "optional, e.g. relu-baseline", autocomplete: "off" });
  const deviceSelect = h("select", { id: "device", name: "device" }, ["auto", "cpu", "cuda"].map((d) => h("option", { value: d, text: d })));
  const description = h("p", { class: "muted", id: "model-description" });
  const hpBox = h("div", { class: "field-grid", id: "hyperparameters" });
  const formError = h("div", { class: "banner banner-error", id: "form-error", hidden: true, role: "alert" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", id: "submit-job", text: "Submit job" });
  let inputs = {};

  function buildModel() {
    const info = models[modelSelect.value];
    setText(description, info.description);
    const kind = info.datasets_kind;
    const fitting = datasets.filter((d) => d.kind === kind);
    const previous = datasetSelect.value;
    datasetSelect.replaceChildren(...fitting.map((d) => h("option", { value: d.name,
      text: `${d.name}${d.source === "uploaded" ? " (uploaded)" : ""}` })));
    if (fitting.some((d) => d.name === previous)) datasetSelect.value = previous;
    for (const key of [...errors.keys()]) if (key.startsWith("hp.")) errors.delete(key);
    inputs = {};
    hpBox.replaceChildren(...Object.entries(info.hyperparameters).map(([key, p]) => {
      const input = fieldInput(key, p);
      inputs[key] = input;
      const hint = [`default ${fmtValue(p.default)}`, rangeText(p), p.description].filter(Boolean).join(" · ");
      return field(`hp.${key}`, key, input, hint);
    }));
  }

  function clearErrors() {
    formError.hidden = true;
    formError.replaceChildren();
    for (const p of errors.values()) {
      p.hidden = true;
      p.textContent = "";
      p.closest(".field")?.classList.remove("has-error");
    }
  }

  function showFieldError(key, message) {
    const slot = errors.get(key);
    if (!slot) return false;
    slot.textContent = message;
    slot.hidden = false;
    slot.closest(".field")?.classList.add("has-error");
    return true;
  }

  function showErrors(detail) {
    const general = [];
    let first = null;
    for (const item of Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }]) {
      const loc = (item.loc || []).filter((p) => p !== "body");
      let key = loc[0] === "hyperparameters" && loc.length > 1 ? `hp.${loc[1]}` : String(loc[0] ?? "");
      if (!showFieldError(key, item.msg)) {
        general.push(loc.length ? `${loc.join(".")}: ${item.msg}` : item.msg);
        key = null;
      }
      first ||= key;
    }
    if (general.length) {
      formError.replaceChildren(h("strong", { text: "The job was not submitted:" }), h("ul", {}, general.map((m) => h("li", { text: m }))));
      formError.hidden = false;
    }
    const target = first ? document.querySelector(`[data-field="${CSS.escape(first)}"] input, [data-field="${CSS.escape(first)}"] select`) : formError;
    if (target) target.focus?.();
  }

  async function onSubmit(event) {
    event.preventDefault();
    clearErrors();
    const info = models[modelSelect.value];
    const hyperparameters = {};
    let clientError = false;
    for (const [key, p] of Object.entries(info.hyperparameters)) {
      const value = readValue(inputs[key], p);
      if (value && typeof value === "object" && "invalid" in value) {
        showFieldError(`hp.${key}`, value.invalid);
        clientError = true;
      } else if (value !== undefined && !sameValue(value, p.default)) {
        hyperparameters[key] = value;
      }
    }
    if (clientError) return;
    const body = { model: modelSelect.value, dataset: datasetSelect.value, hyperparameters, device: deviceSelect.value };
    if (nameInput.value.trim()) body.name = nameInput.value;
    submit.disabled = true;
    setText(submit, "Submitting…");
    try {
      const job = await api("jobs", { method: "POST", body });
      navigate(`/jobs/${job.id}`);
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 422) showErrors(exc.detail);
      else showErrors(exc.message);
    } finally {
      submit.disabled = false;
      setText(submit, "Submit job");
    }
  }

  modelSelect.addEventListener("change", () => {
    clearErrors();
    buildModel();
  });
  const form = h("form", { id: "submit-form", class: "card form", novalidate: true, on: { submit: onSubmit } },
    formError,
    h("div", { class: "field-grid" },
      field("model", "Model", modelSelect, null),
      field("dataset", "Dataset", datasetSelect, "datasets that fit the model; upload text with POST /datasets"),
      field("name", "Name", nameInput, "a label for the run"),
      field("device", "Device", deviceSelect, "auto: a GPU when the worker has one")),
    description,
    h("h2", { text: "Hyperparameters" }),
    h("p", { class: "muted", text: "Every field starts at its default; only the ones you change are sent." }),
    hpBox,
    h("div", { class: "form-actions" }, submit));
  view.append(h("p", { class: "crumbs" }, h("a", { href: "#/", text: "← Jobs" })),
    h("div", { class: "page-head" }, h("h1", { text: "New job" })), form);
  buildModel();
  view.dataset.state = "ready";
  return null;
}
