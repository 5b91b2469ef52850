// The datasets list (#/datasets): the built-in datasets and the user's uploads, one row per name
// (its newest version and how many there are), with the upload form under it. An upload adds
// its row (or its new version) as soon as the server has stored it.
"use strict";

import { api, session } from "./api.js";
import { showError } from "./banner.js";
import { fmtBytes, h, scrollTable } from "./dom.js";
import { examplesText, groupJobs, jobLinks, loadDatasets, readRecord } from "./dsinfo.js";
import { uploadForm } from "./upload.js";

const COLUMNS = ["name", "version", "kind", "size", "examples", "classes", "owner", "jobs"];
const NUMERIC = new Set(["size", "examples", "classes"]);

function datasetHref(group) {
  const theirs = !group.builtin && group.owner && group.owner !== session.owner;
  return `#/datasets/${encodeURIComponent(group.name)}${theirs ? `?owner=${encodeURIComponent(group.owner)}` : ""}`;
}

function versionText(group) {
  if (group.builtin) return "built-in";
  const n = group.versions.length;
  return `${group.latest.ref} · ${n} version${n === 1 ? "" : "s"}`;
}

function classesText(record) {
  if (record.classes) return String(record.classes.length);
  return "–";
}

function buildRow(group) {
  const { latest } = group;
  const cell = (column, ...content) => h("td", { class: NUMERIC.has(column) ? "num" : null, dataset: { label: column } }, ...content);
  const name = h("a", { class: "dataset-name", href: datasetHref(group), text: group.name, title: latest.description || null });
  return h("tr", { dataset: { dataset: group.name, source: group.source } },
    cell("name", name, latest.description ? h("span", { class: "owner muted", text: latest.description }) : null),
    cell("version", versionText(group)),
    cell("kind", latest.kind ?? "–"),
    cell("size", fmtBytes(latest.size)),
    cell("examples", examplesText(latest)),
    cell("classes", classesText(latest)),
    cell("owner", group.builtin ? "built-in" : group.owner ?? "–"),
    cell("jobs", jobLinks(groupJobs(group))));
}

/**
 * GET /datasets may leave out which jobs used each version (the contract puts them on
 * GET /datasets/{name}): ask for those pages then, at most a few dozen, and fill them in.
 */
async function fillJobs(groups, signal) {
  const missing = groups.filter((g) => !g.builtin && groupJobs(g) === null).slice(0, 40);
  await Promise.all(missing.map(async (group) => {
    try {
      const theirs = group.owner && group.owner !== session.owner ? `?owner=${encodeURIComponent(group.owner)}` : "";
      const body = await api(`datasets/${encodeURIComponent(group.name)}${theirs}`, { signal });
      const versions = Array.isArray(body) ? body : body.versions || [];
      const byVersion = new Map(versions.map((v) => [readRecord(v, group.name).version, readRecord(v, group.name)]));
      for (const v of group.versions) v.jobs = byVersion.get(v.version)?.jobs ?? v.jobs;
    } catch (exc) {
      if (exc.name !== "AbortError") console.warn("datasets", group.name, exc);
    }
  }));
}

function emptyUploads() {
  return h("tr", { class: "no-uploads" }, h("td", { colspan: String(COLUMNS.length), class: "muted",
    text: "No uploads yet: the form below stores an image archive or a text file as a dataset jobs can train on." }));
}

async function refresh(page) {
  const groups = await loadDatasets(api);
  await fillJobs(groups, page.controller.signal);
  if (page.controller.signal.aborted) return;
  const rows = groups.map(buildRow);
  if (!groups.some((g) => !g.builtin)) rows.push(emptyUploads());
  page.tbody.replaceChildren(...rows);
  const uploads = groups.filter((g) => !g.builtin);
  // An admin signed in with a key sees every user's uploads; keyless local use has one user.
  const everyone = session.isAdmin && session.via !== "local" ? " (every user's)" : "";
  page.count.textContent = `${uploads.length} upload${uploads.length === 1 ? "" : "s"}${everyone}`;
  page.table.dataset.rows = String(groups.length);
}

export async function mount(view) {
  const tbody = h("tbody");
  const table = h("table", { class: "jobs-table datasets-table", id: "datasets" },
    h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { text: c, class: NUMERIC.has(c) ? "num" : null })))), tbody);
  const count = h("span", { class: "muted", id: "datasets-count" });
  const page = { tbody, table, count, controller: new AbortController() };
  const reload = () => refresh(page).catch((exc) => showError(`Cannot list the datasets: ${exc.message}`));
  view.append(
    h("div", { class: "page-head" }, h("h1", { text: "Datasets" }), count),
    scrollTable(table, "datasets-table-wrap"),
    uploadForm(() => reload()));
  await refresh(page);
  view.dataset.state = "ready";
  return () => page.controller.abort();
}
