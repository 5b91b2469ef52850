// A dataset's page (#/datasets/{name}, ?v=N picks a version): its versions (size, sha256, when,
// examples, the jobs that used each, a Delete button the API may refuse with 409), and for the
// chosen version what it holds: images as a grid of samples per class and a histogram of the
// classes (train and val counts, from the upload's summary); text as its opening and the
// vocabulary size of each tokenizer.
"use strict";

import { api, ApiError, session } from "./api.js";
import { baseLayout, draw, plotText, purge } from "./charts.js";
import { fmtBytes, fmtTime, h, scrollTable } from "./dom.js";
import { classTable, examplesText, fmtCount, jobLinks, readRecord, summaryList } from "./dsinfo.js";
import { errorText, panel } from "./panel.js";
import { arrayCanvas } from "./pixels.js";
import { navigate } from "./router.js";

const PER_CLASS = 8;

function versionPath(name, version) {
  return `datasets/${encodeURIComponent(name)}/versions/${version}`;
}

/** An admin looks at another user's upload with ?owner=them, on the page and to the API. */
function ownerQuery(page, joiner = "?") {
  return page.owner ? `${joiner}owner=${encodeURIComponent(page.owner)}` : "";
}

// ---- the versions table ----------------------------------------------------------------------

function deleteCell(page, record) {
  const cell = h("td", { class: "col-actions", dataset: { label: "" } });
  const ask = h("button", { type: "button", class: "btn btn-small btn-danger delete-version", text: "Delete" });
  const confirm = h("span", { class: "confirm-delete", hidden: true },
    h("span", { text: `Delete ${record.ref}? ` }),
    h("button", { type: "button", class: "btn btn-small btn-danger confirm-yes", text: "Yes, delete",
      on: { click: () => deleteVersion(page, record, false) } }),
    h("button", { type: "button", class: "btn btn-small confirm-no", text: "Keep",
      on: { click: () => { confirm.hidden = true; ask.hidden = false; } } }));
  ask.addEventListener("click", () => { ask.hidden = true; confirm.hidden = false; });
  cell.append(ask, confirm);
  return cell;
}

function versionRow(page, record) {
  const selected = record.version === page.selected.version;
  const link = h("a", { href: `#/datasets/${encodeURIComponent(record.name)}?v=${record.version}${ownerQuery(page, "&")}`, text: record.ref });
  return h("tr", { class: selected ? "row-selected" : null, dataset: { version: String(record.version) } },
    h("td", { dataset: { label: "version" } }, link, selected ? h("span", { class: "muted", text: " · shown" }) : null),
    h("td", { class: "num", text: fmtBytes(record.size), dataset: { label: "size" } }),
    h("td", { class: "sha", dataset: { label: "sha256" } }, h("code", { text: record.sha256 ?? "–", title: record.sha256 })),
    h("td", { text: fmtTime(record.created), dataset: { label: "created" } }),
    h("td", { class: "num", text: examplesText(record), dataset: { label: "examples" } }),
    h("td", { dataset: { label: "jobs" } }, jobLinks(record.jobs)),
    deleteCell(page, record));
}

function versionsCard(page) {
  page.versionsError = h("div", { class: "banner banner-error", id: "versions-error", hidden: true, role: "alert" });
  const table = h("table", { class: "jobs-table versions-table", id: "dataset-versions" },
    h("thead", {}, h("tr", {}, ["version", "size", "sha256", "created", "examples", "jobs", ""].map((t) =>
      h("th", { text: t, class: t === "size" || t === "examples" ? "num" : null })))),
    h("tbody", {}, page.versions.map((v) => versionRow(page, v))));
  return h("section", { class: "card", id: "dataset-versions-card" },
    h("div", { class: "card-head" }, h("h2", { text: "Versions" }),
      h("span", { class: "muted", text: `a job given "${page.name}" trains on the newest; "${page.name}@N" on that one` })),
    page.versionsError, scrollTable(table, "cards-narrow-wrap"));
}

async function deleteVersion(page, record, force) {
  const box = page.versionsError;
  box.hidden = true;
  box.replaceChildren();
  try {
    await api(`${versionPath(page.name, record.version)}?force=${force}${ownerQuery(page, "&")}`, { method: "DELETE" });
  } catch (exc) {
    // 409: jobs used this version; the message names them. An admin may force it.
    box.append(h("strong", { text: exc.status === 409 ? `${record.ref} was not deleted: ` : "Delete failed: " }),
      errorText(exc));
    if (exc instanceof ApiError && exc.status === 409 && session.isAdmin) {
      box.append(" ", h("button", { type: "button", class: "btn btn-small btn-danger", id: "force-delete",
        text: "Delete anyway (admin)", on: { click: () => deleteVersion(page, record, true) } }));
    }
    box.dataset.status = String(exc.status ?? "");
    box.hidden = false;
    return;
  }
  if (page.versions.length <= 1) navigate("/datasets");
  else await show(page, page.selected.version === record.version ? null : page.selected.version);
}

// ---- what the chosen version holds -----------------------------------------------------------

function imageSamples(page) {
  const samples = panel("dataset-samples", "Samples per class", {
    hint: `up to ${PER_CLASS} images of each class, as the jobs see them (after conversion to one size)`, wide: true });
  page.panels.push(samples);
  samples.run(`${versionPath(page.name, page.selected.version)}/samples?per_class=${PER_CLASS}${ownerQuery(page, "&")}`, (data) => {
    const classes = data.classes || [];
    const range = [0, 1]; // the API sends pixels in [0, 1]: every image on one scale
    samples.body.replaceChildren(h("div", { class: "sample-rows" }, classes.map((c) =>
      h("div", { class: "sample-row", dataset: { label: String(c.label) } },
        h("div", { class: "sample-class" }, h("strong", { text: String(c.name) }),
          h("span", { class: "muted", text: ` label ${c.label} · ${fmtCount(c.count)} examples` })),
        h("div", { class: "thumb-grid" }, (c.images || []).map((img, i) =>
          arrayCanvas(img, { range, className: "thumb sample", title: `${c.name} #${i + 1}` })))))));
    page.sampleCounts = classes;
  });
  return samples.section;
}

/** Train and val counts per class, as grouped bars; only train when val is split by seed. */
function histogram(page) {
  const { classes } = page.selected;
  const card = panel("dataset-histogram", "Classes", { hint: page.selected.summary.validation || null, wide: true });
  page.panels.push(card);
  const chart = h("div", { class: "chart", id: "dataset-histogram-chart" });
  card.body.append(chart);
  if (!classes || !classes.length) {
    card.say("the server did not describe this version's classes", "info");
    return card.section;
  }
  const names = classes.map((c) => plotText(c.name));
  const traces = [{ type: "bar", name: "train", x: names, y: classes.map((c) => c.train ?? 0), marker: { color: "#1d6fd6" } }];
  if (classes.some((c) => c.val)) traces.push({ type: "bar", name: "val", x: names, y: classes.map((c) => c.val ?? 0), marker: { color: "#ff7f0e" } });
  const layout = baseLayout({ xTitle: "class", yTitle: "examples", legend: traces.length > 1 });
  layout.barmode = "group";
  layout.xaxis.type = "category";
  page.charts.push(chart);
  card.section.dataset.state = "loading";
  draw(chart, traces, layout).then(() => { card.section.dataset.state = "ready"; },
    (exc) => { card.say(exc.message, "error"); card.section.dataset.state = "error"; });
  card.body.append(h("details", { class: "class-counts" }, h("summary", { text: "Counts as a table" }), classTable(classes)));
  return card.section;
}

function textSample(page) {
  const card = panel("dataset-text", "Sample", { hint: "the opening of the text, as uploaded", wide: true });
  page.panels.push(card);
  const fromSummary = page.selected.summary;
  card.run(`${versionPath(page.name, page.selected.version)}/samples${ownerQuery(page)}`, (data) => {
    const sample = data.sample ?? fromSummary.sample ?? "";
    const vocab = data.vocab ?? fromSummary.vocab ?? {};
    card.body.replaceChildren(
      h("pre", { class: "dataset-sample", id: "dataset-text-sample", text: sample }),
      h("h3", { text: "Vocabulary" }),
      h("table", { class: "kv-table", id: "dataset-vocab" }, h("tbody", {}, Object.entries(vocab).map(([tokenizer, size]) =>
        h("tr", { dataset: { tokenizer } }, h("th", { text: `${tokenizer}-level tokens` }), h("td", { text: fmtCount(size) }))))));
  });
  return card.section;
}

function contents(page) {
  const record = page.selected;
  const about = h("section", { class: "card", id: "dataset-version" },
    h("h2", { text: `${record.ref}: what the server found` }), summaryList(record));
  const parts = [about];
  if (record.kind === "images") parts.push(h("div", { class: "inside-grid" }, histogram(page), imageSamples(page)));
  else if (record.kind === "text") parts.push(h("div", { class: "inside-grid" }, textSample(page)));
  return parts;
}

// ---- the page --------------------------------------------------------------------------------

function leave(page) {
  for (const p of page.panels) p.stop();
  for (const c of page.charts) purge(c);
  page.panels = [];
  page.charts = [];
}

/** Load the versions and draw the page for `version` (null: the newest). */
async function show(page, version) {
  const body = await api(`datasets/${encodeURIComponent(page.name)}${ownerQuery(page)}`);
  if (body.builtin) {
    builtinPage(page, readRecord(body.builtin));
    return;
  }
  const versions = (Array.isArray(body) ? body : body.versions || []).map((v) => readRecord(v, page.name));
  versions.sort((a, b) => b.version - a.version);
  if (!versions.length) {
    navigate("/datasets");
    return;
  }
  leave(page);
  page.versions = versions;
  page.selected = versions.find((v) => v.version === version) || versions[0];
  const { view } = page;
  const owner = body.owner ?? page.selected.owner;
  view.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "#/datasets", text: "← Datasets" })),
    h("div", { class: "page-head" },
      h("div", { class: "title-line" }, h("h1", { class: "job-title", text: page.name }),
        h("span", { class: "badge status-queued", text: page.selected.kind ?? "?" }),
        owner && owner !== session.owner ? h("span", { class: "muted", text: `by ${owner}` }) : null),
      h("a", { class: "btn", href: `#/new?dataset=${encodeURIComponent(page.selected.ref)}`, text: `Train on ${page.selected.ref}` })),
    versionsCard(page),
    ...contents(page));
  view.dataset.version = String(page.selected.version);
  view.dataset.kind = page.selected.kind ?? "";
}

/** A built-in dataset has no versions or samples to show: what it is, and how to train on it. */
function builtinPage(page, record) {
  page.view.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "#/datasets", text: "← Datasets" })),
    h("div", { class: "page-head" }, h("h1", { text: record.name }),
      h("a", { class: "btn", href: `#/new?dataset=${encodeURIComponent(record.name)}`, text: `Train on ${record.name}` })),
    h("section", { class: "card", id: "dataset-builtin" }, h("h2", { text: "Built-in dataset" }),
      h("p", { text: record.description || "" }),
      h("dl", { class: "summary" }, [["kind", record.kind], ["examples", fmtCount(record.examples)], ["size", fmtBytes(record.size)]]
        .map(([k, v]) => h("div", { dataset: { key: k } }, h("dt", { text: k }), h("dd", { text: v ?? "–" }))))));
  page.view.dataset.kind = record.kind ?? "";
}

function notFound(view, name) {
  view.replaceChildren(h("div", { class: "empty" }, h("h2", { text: `No dataset named ${name}` }),
    h("p", {}, "Upload one on the ", h("a", { href: "#/datasets", text: "datasets page" }), ".")));
}

export async function mount(view, { params, match }) {
  const name = decodeURIComponent(match[1]);
  const page = { view, name, owner: params.get("owner") || null, versions: [], selected: null, panels: [], charts: [], versionsError: null };
  const wanted = Number.parseInt(params.get("v") || "", 10);
  try {
    await show(page, Number.isInteger(wanted) ? wanted : null);
  } catch (exc) {
    if (!(exc instanceof ApiError && exc.status === 404)) throw exc;
    notFound(view, name);
  }
  view.dataset.state = "ready";
  return () => leave(page);
}
