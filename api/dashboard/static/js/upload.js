// The upload form of the datasets page: name, file, kind, optional shape, description. The file
// goes up with XMLHttpRequest rather than fetch, because only XHR reports upload progress: the
// bar shows the bytes sent, then "preparing…" while the server checks and converts the upload,
// then what the server found (or its 422/413 message, in the form).
"use strict";

import { apiUrl, session } from "./api.js";
import { classTable, readRecord, summaryList } from "./dsinfo.js";
import { fmtBytes, h, setText } from "./dom.js";

const FIELDS = ["name", "file", "kind", "channels", "height", "width", "description"];

function numberInput(id, label) {
  return h("input", { id, name: label, type: "number", min: "1", max: "4096", step: "1",
    inputmode: "numeric", placeholder: "auto" });
}

function field(ui, key, label, input, hint) {
  const error = h("p", { class: "field-error", id: `upload-error-${key}`, hidden: true, role: "alert" });
  ui.errors[key] = error;
  return h("div", { class: "field", dataset: { field: key } },
    h("label", { for: input.id, text: label }), input, hint ? h("p", { class: "hint", text: hint }) : null, error);
}

function buildForm() {
  const ui = {
    errors: {},
    name: h("input", { id: "upload-name", name: "name", type: "text", required: true, maxlength: "64",
      pattern: "[a-z0-9][a-z0-9_\\-]{0,63}", placeholder: "e.g. my-digits", autocomplete: "off" }),
    file: h("input", { id: "upload-file", name: "file", type: "file", required: true,
      accept: ".zip,.tar,.tgz,.tar.gz,.gz,.npz,.txt,.bin,.idx,.ubyte" }),
    kind: h("select", { id: "upload-kind", name: "kind" },
      ["auto", "images", "text"].map((k) => h("option", { value: k, text: k }))),
    channels: numberInput("upload-channels", "channels"),
    height: numberInput("upload-height", "height"),
    width: numberInput("upload-width", "width"),
    description: h("input", { id: "upload-description", name: "description", type: "text", maxlength: "500",
      placeholder: "optional", autocomplete: "off" }),
    formError: h("div", { class: "banner banner-error", id: "upload-error", hidden: true, role: "alert" }),
    submit: h("button", { type: "submit", class: "btn btn-primary", id: "upload-submit", text: "Upload" }),
    bar: h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }, h("span")),
    barLabel: h("div", { class: "progress-label", id: "upload-progress-label" }),
    result: h("div", { id: "upload-result", hidden: true }),
  };
  ui.progress = h("div", { class: "progress upload-progress", id: "upload-progress", hidden: true }, ui.bar, ui.barLabel);
  ui.form = h("form", { id: "upload-form", class: "card form", novalidate: true },
    h("h2", { text: "Upload a dataset" }),
    h("p", { class: "muted panel-hint", text: "Images: a zip or tar(.gz) of class folders (<class>/<image>.png, optionally under train/ and val/), MNIST IDX files or CIFAR-10 batches in one archive, or an .npz with x and y. Text: a UTF-8 file or an archive of .txt files. Uploading to a name you have used makes its next version." }),
    ui.formError,
    h("div", { class: "field-grid" },
      field(ui, "name", "Name", ui.name, "a-z, 0-9, _ and -; an existing name gets a new version"),
      field(ui, "file", "File", ui.file, null),
      field(ui, "kind", "Kind", ui.kind, "auto: found from the file"),
      field(ui, "description", "Description", ui.description, null)),
    h("details", { class: "upload-shape" },
      h("summary", { text: "Image size (optional: else the most common size found)" }),
      h("div", { class: "field-grid" },
        field(ui, "channels", "Channels", ui.channels, "1 grey, 3 colour"),
        field(ui, "height", "Height", ui.height, "pixels"),
        field(ui, "width", "Width", ui.width, "pixels"))),
    h("div", { class: "form-actions upload-actions" }, ui.submit, ui.progress),
    ui.result);
  return ui;
}

// ---- progress and answers --------------------------------------------------------------------

function setProgress(ui, sent, total, phase) {
  const fraction = total > 0 ? Math.min(1, sent / total) : 0;
  const percent = Math.round(fraction * 100);
  ui.lastSent = sent;
  ui.progress.hidden = false;
  ui.progress.dataset.phase = phase;
  ui.bar.setAttribute("aria-valuenow", String(percent));
  ui.bar.className = `bar bar-${phase === "done" ? "succeeded" : phase === "failed" ? "failed" : "running"}`;
  ui.bar.firstChild.style.width = `${(fraction * 100).toFixed(1)}%`;
  const sentText = `${fmtBytes(sent)} of ${fmtBytes(total)} (${percent} %)`;
  const label = {
    sending: `sending ${sentText}`,
    preparing: `${sentText} sent · preparing… (the server checks and converts it)`,
    done: `${sentText} sent · ready`,
    failed: `${sentText} sent · refused`,
  }[phase];
  setText(ui.barLabel, label);
}

function clearErrors(ui) {
  ui.formError.hidden = true;
  ui.formError.replaceChildren();
  for (const p of Object.values(ui.errors)) {
    p.hidden = true;
    p.textContent = "";
    p.closest(".field")?.classList.remove("has-error");
  }
}

/** An error answer's detail: each message under the field it names, all of them at the top. */
function showErrors(ui, status, detail) {
  const items = Array.isArray(detail) ? detail : [{ loc: [], msg: detail || `the API answered ${status}` }];
  const lines = items.map((item) => {
    const loc = (item.loc || []).filter((p) => p !== "body");
    const key = String(loc[0] ?? "");
    const slot = FIELDS.includes(key) ? ui.errors[key] : null;
    if (slot) {
      slot.textContent = item.msg;
      slot.hidden = false;
      slot.closest(".field")?.classList.add("has-error");
      if (slot.closest("details")) slot.closest("details").open = true;
    }
    return key && key !== "file" ? `${key}: ${item.msg}` : String(item.msg);
  });
  const heading = status === 413 ? "Too large (413):" : status === 422 ? "The upload was refused:" : `The upload failed (${status || "no answer"}):`;
  ui.formError.replaceChildren(h("strong", { text: heading }), h("ul", {}, lines.map((m) => h("li", { text: m }))));
  ui.formError.dataset.status = String(status);
  ui.formError.hidden = false;
}

function showResult(ui, answer) {
  const record = readRecord(answer);
  const parts = [
    h("div", { class: "card-head" },
      h("h3", { text: `Stored ${record.ref}` }),
      h("a", { class: "btn btn-small", href: `#/datasets/${encodeURIComponent(record.name)}?v=${record.version ?? ""}`, text: "Open its page" })),
    summaryList(record),
  ];
  if (record.classes) parts.push(h("h3", { class: "result-subhead", text: `${record.classes.length} classes` }), classTable(record.classes));
  if (typeof record.summary.sample === "string") {
    parts.push(h("h3", { class: "result-subhead", text: "Sample" }), h("pre", { class: "dataset-sample", text: record.summary.sample }));
  }
  ui.result.replaceChildren(...parts);
  ui.result.className = "upload-result";
  ui.result.hidden = false;
}

// ---- sending ---------------------------------------------------------------------------------

function formData(ui) {
  const body = new FormData();
  body.append("name", ui.name.value.trim());
  body.append("file", ui.file.files[0]);
  if (ui.kind.value !== "auto") body.append("kind", ui.kind.value); // absent: the server detects
  for (const key of ["channels", "height", "width"]) {
    if (ui[key].value.trim()) body.append(key, ui[key].value.trim());
  }
  if (ui.description.value.trim()) body.append("description", ui.description.value);
  return body;
}

/**
 * POST datasets with the same headers api.js sends (Accept, and the session's CSRF token; the
 * session cookie goes along as with fetch, same origin). Resolves {status, data}.
 */
function send(ui, body, total) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", apiUrl("datasets"));
    xhr.setRequestHeader("Accept", "application/json");
    if (session.csrf) xhr.setRequestHeader("X-CSRF-Token", session.csrf);
    xhr.upload.addEventListener("progress", (e) => setProgress(ui, e.loaded, e.lengthComputable ? e.total : total, "sending"));
    // Every byte is sent: the server now reads, validates and converts it.
    xhr.upload.addEventListener("load", () => setProgress(ui, total, total, "preparing"));
    xhr.addEventListener("load", () => {
      let data = null;
      if ((xhr.getResponseHeader("content-type") || "").includes("application/json")) {
        try {
          data = JSON.parse(xhr.responseText);
        } catch {
          data = null;
        }
      }
      resolve({ status: xhr.status, data });
    });
    xhr.addEventListener("error", () => resolve({ status: 0, data: { detail: "the connection failed before the server answered" } }));
    xhr.addEventListener("abort", () => resolve({ status: 0, data: { detail: "the upload was cancelled" } }));
    xhr.send(body);
  });
}

/** Client-side checks the server repeats: only what stops a request from being worth sending. */
function checkLocally(ui) {
  const problems = [];
  if (!ui.name.value.trim()) problems.push({ loc: ["body", "name"], msg: "a name is needed" });
  if (!ui.file.files.length) problems.push({ loc: ["body", "file"], msg: "choose a file to upload" });
  return problems;
}

async function submitUpload(ui, onUploaded) {
  clearErrors(ui);
  const problems = checkLocally(ui);
  if (problems.length) {
    showErrors(ui, 422, problems);
    return;
  }
  const total = ui.file.files[0].size;
  ui.submit.disabled = true;
  ui.result.hidden = true;
  setProgress(ui, 0, total, "sending");
  const { status, data } = await send(ui, formData(ui), total);
  ui.submit.disabled = false;
  if (status === 401) window.dispatchEvent(new CustomEvent("trainyard:signed-out"));
  if (status >= 200 && status < 300 && data) {
    setProgress(ui, total, total, "done");
    showResult(ui, data);
    onUploaded(readRecord(data));
  } else {
    setProgress(ui, ui.lastSent ?? 0, total, "failed");
    showErrors(ui, status, data && data.detail !== undefined ? data.detail : null);
  }
}

/** The upload card; onUploaded(record) runs after each stored upload. */
export function uploadForm(onUploaded) {
  const ui = buildForm();
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitUpload(ui, onUploaded);
  });
  return ui.form;
}
