// The submit form, generated from GET /models (each field with its type, default and range).
// The API is the judge: the form sends what was typed and shows the 422 answer's messages
// next to the fields they name; a 201 opens the new job's page.
"use strict";

import { api, ApiError, session } from "./api.js";
import { catalogue } from "./catalogue.js";
import { fmtValue, h, setText } from "./dom.js";
import { loadDatasets } from "./dsinfo.js";
import { navigate } from "./router.js";

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

// ---- building the form -----------------------------------------------------------------------
// `form` below is the page's state: the catalogue and datasets it was built from, its elements
// (ui), the current model's inputs by key, and the error slot of each field by key ("model",
// "dataset", "hp.lr", ...).

function errorSlot(form, key) {
  const p = h("p", { class: "field-error", id: `error-${key.replace(/\W/g, "-")}`, hidden: true, role: "alert" });
  form.errors.set(key, p);
  return p;
}

function field(form, key, label, input, hint) {
  return h("div", { class: "field", dataset: { field: key } },
    h("label", { for: input.id, text: label }), input,
    hint ? h("p", { class: "hint", text: hint }) : null, errorSlot(form, key));
}

function buildForm(form) {
  const modelNames = Object.keys(form.models);
  const ui = {
    model: h("select", { id: "model", name: "model" }, modelNames.map((m) => h("option", { value: m, text: m }))),
    dataset: h("select", { id: "dataset", name: "dataset" }),
    name: h("input", { id: "name", name: "name", type: "text", maxlength: "200", placeholder: "optional, e.g. relu-baseline", autocomplete: "off" }),
    device: h("select", { id: "device", name: "device" }, ["auto", "cpu", "cuda"].map((d) => h("option", { value: d, text: d }))),
    priority: h("input", { id: "priority", name: "priority", type: "number", min: "-100", max: "100", step: "1", value: "0" }),
    description: h("p", { class: "muted", id: "model-description" }),
    hyperparameters: h("div", { class: "field-grid", id: "hyperparameters" }),
    formError: h("div", { class: "banner banner-error", id: "form-error", hidden: true, role: "alert" }),
    submit: h("button", { type: "submit", class: "btn btn-primary", id: "submit-job", text: "Submit job" }),
  };
  ui.model.value = modelNames.includes("mlp") ? "mlp" : modelNames[0];
  ui.form = h("form", { id: "submit-form", class: "card form", novalidate: true },
    ui.formError,
    h("div", { class: "field-grid" },
      field(form, "model", "Model", ui.model, null),
      field(form, "dataset", "Dataset", ui.dataset, "datasets that fit the model; an upload\u2019s name alone means its newest version; upload on the Datasets page"),
      field(form, "name", "Name", ui.name, "a label for the run"),
      field(form, "device", "Device", ui.device, "auto: a GPU when the worker has one"),
      field(form, "priority", "Priority", ui.priority, "-100 to 100, higher runs first")),
    ui.description,
    h("h2", { text: "Hyperparameters" }),
    h("p", { class: "muted", text: "Every field starts at its default; only the ones you change are sent." }),
    ui.hyperparameters,
    h("div", { class: "form-actions" }, ui.submit));
  return ui;
}

/** A job may name an upload as "name" (its newest version) or "name@N" (that one). */
function uploadOptions(group) {
  const newest = h("option", { value: group.name, text: `${group.name} (newest: ${group.latest.ref})` });
  return [newest, ...group.versions.map((v) => h("option", { value: v.ref, text: `\u00a0\u00a0${v.ref}` }))];
}

/** The datasets of the model's kind, keeping the one chosen when it still fits. */
function renderDatasets({ ui, datasets }, kind) {
  const fitting = datasets.filter((d) => d.kind === kind);
  const builtin = fitting.filter((d) => d.builtin);
  // Jobs train on their own user's uploads: an admin's list of everyone's is cut to theirs.
  const uploads = fitting.filter((d) => !d.builtin && (!d.owner || !session.owner || d.owner === session.owner));
  const previous = ui.dataset.value;
  ui.dataset.replaceChildren(
    h("optgroup", { label: "Built-in" }, builtin.map((d) => h("option", { value: d.name, text: d.name }))),
    uploads.length ? h("optgroup", { label: "Your uploads" }, uploads.map(uploadOptions)) : null);
  const values = [...ui.dataset.options].map((o) => o.value);
  if (values.includes(previous)) ui.dataset.value = previous;
}

function renderHyperparameters(form, info) {
  for (const key of [...form.errors.keys()]) if (key.startsWith("hp.")) form.errors.delete(key);
  form.inputs = {};
  form.ui.hyperparameters.replaceChildren(...Object.entries(info.hyperparameters).map(([key, p]) => {
    const input = fieldInput(key, p);
    form.inputs[key] = input;
    const hint = [`default ${fmtValue(p.default)}`, rangeText(p), p.description].filter(Boolean).join(" · ");
    return field(form, `hp.${key}`, key, input, hint);
  }));
}

/** The chosen model's description, datasets and hyperparameter fields. */
function renderModel(form) {
  const info = form.models[form.ui.model.value];
  setText(form.ui.description, info.description);
  renderDatasets(form, info.datasets_kind);
  renderHyperparameters(form, info);
}

// ---- errors next to the fields they name -----------------------------------------------------

function clearErrors({ ui, errors }) {
  ui.formError.hidden = true;
  ui.formError.replaceChildren();
  for (const p of errors.values()) {
    p.hidden = true;
    p.textContent = "";
    p.closest(".field")?.classList.remove("has-error");
  }
}

function showFieldError(form, key, message) {
  const slot = form.errors.get(key);
  if (!slot) return false;
  slot.textContent = message;
  slot.hidden = false;
  slot.closest(".field")?.classList.add("has-error");
  return true;
}

/** A 422's detail (or a message): each under its field, the rest at the top; focus the first. */
function showErrors(form, detail) {
  const general = [];
  let first = null;
  for (const item of Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }]) {
    const loc = (item.loc || []).filter((p) => p !== "body");
    let key = loc[0] === "hyperparameters" && loc.length > 1 ? `hp.${loc[1]}` : String(loc[0] ?? "");
    if (!showFieldError(form, key, item.msg)) {
      general.push(loc.length ? `${loc.join(".")}: ${item.msg}` : item.msg);
      key = null;
    }
    first ||= key;
  }
  const { formError } = form.ui;
  if (general.length) {
    formError.replaceChildren(h("strong", { text: "The job was not submitted:" }), h("ul", {}, general.map((m) => h("li", { text: m }))));
    formError.hidden = false;
  }
  const target = first ? document.querySelector(`[data-field="${CSS.escape(first)}"] input, [data-field="${CSS.escape(first)}"] select`) : formError;
  if (target) target.focus?.();
}

// ---- submitting ------------------------------------------------------------------------------

/** The POST /jobs body, or null when a field cannot be read (its error is shown). */
function readBody(form) {
  const { ui } = form;
  const info = form.models[ui.model.value];
  const hyperparameters = {};
  let clientError = false;
  for (const [key, p] of Object.entries(info.hyperparameters)) {
    const value = readValue(form.inputs[key], p);
    if (value && typeof value === "object" && "invalid" in value) {
      showFieldError(form, `hp.${key}`, value.invalid);
      clientError = true;
    } else if (value !== undefined && !sameValue(value, p.default)) {
      hyperparameters[key] = value;
    }
  }
  const priority = Number(ui.priority.value || 0);
  if (!Number.isInteger(priority)) {
    showFieldError(form, "priority", "a whole number from -100 to 100");
    clientError = true;
  }
  if (clientError) return null;
  const body = { model: ui.model.value, dataset: ui.dataset.value, hyperparameters, device: ui.device.value, priority };
  if (ui.name.value.trim()) body.name = ui.name.value;
  return body;
}

async function submitJob(form, event) {
  event.preventDefault();
  clearErrors(form);
  const body = readBody(form);
  if (!body) return;
  const { submit } = form.ui;
  submit.disabled = true;
  setText(submit, "Submitting…");
  try {
    const job = await api("jobs", { method: "POST", body });
    navigate(`/jobs/${job.id}`);
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 422) showErrors(form, exc.detail);
    else showErrors(form, exc.message);
  } finally {
    submit.disabled = false;
    setText(submit, "Submit job");
  }
}

/** Ask again which datasets there are (one may have been uploaded in another tab). */
async function refreshDatasets(form) {
  try {
    form.datasets = await loadDatasets(api);
  } catch (exc) {
    console.warn("datasets", exc);
    return;
  }
  renderDatasets(form, form.models[form.ui.model.value].datasets_kind);
}

/** ?dataset=name@2 (the dataset page's "Train on" link): that dataset, with a model that fits it. */
function preselect(form, wanted) {
  const group = form.datasets.find((d) => d.name === wanted || d.versions.some((v) => v.ref === wanted));
  if (!group) return;
  const { ui, models } = form;
  if (models[ui.model.value].datasets_kind !== group.kind) {
    const fits = Object.keys(models).find((m) => models[m].datasets_kind === group.kind);
    if (!fits) return;
    ui.model.value = fits;
    renderModel(form);
  }
  ui.dataset.value = wanted;
}

function wire(form) {
  form.ui.form.addEventListener("submit", (event) => submitJob(form, event));
  form.ui.model.addEventListener("change", () => {
    clearErrors(form);
    renderModel(form);
    refreshDatasets(form);
  });
}

export async function mount(view, { params }) {
  const [models, datasets] = await Promise.all([catalogue(), loadDatasets(api)]);
  const form = { models, datasets, ui: null, inputs: {}, errors: new Map() };
  form.ui = buildForm(form);
  wire(form);
  view.append(h("p", { class: "crumbs" }, h("a", { href: "#/", text: "← Jobs" })),
    h("div", { class: "page-head" }, h("h1", { text: "New job" })), form.ui.form);
  renderModel(form);
  if (params.get("dataset")) preselect(form, params.get("dataset"));
  view.dataset.state = "ready";
  return null;
}
