// Datasets as the pages use them: the API's records (GET /datasets lists every version of every
// upload, plus the built-in datasets) read into one shape, grouped by name, and their summaries
// (what the server found in an upload) told as text. The datasets list, a dataset's page, the
// upload form and the New job form all read records through here.
"use strict";

import { fmtBytes, h } from "./dom.js";

/** A version number from the record: an integer, or the N of "name@N"; null for built-ins. */
function versionNumber(d) {
  const v = d.version;
  if (Number.isInteger(v)) return v;
  if (typeof v === "string") {
    const m = v.match(/@(\d+)$/) || v.match(/^(\d+)$/);
    if (m) return Number(m[1]);
  }
  return null;
}

/** One record (a list item, a version of GET /datasets/{name}, or an upload's answer). */
export function readRecord(d, name = null) {
  const summary = d.summary && typeof d.summary === "object" ? d.summary : {};
  const version = versionNumber(d);
  const recordName = d.name ?? name;
  const jobs = d.jobs ?? d.job_ids ?? d.used_by ?? null;
  return {
    name: recordName,
    version,
    ref: version === null ? recordName : `${recordName}@${version}`,
    kind: d.kind ?? summary.kind ?? null,
    source: d.source ?? (version === null ? "builtin" : "uploaded"),
    size: d.size ?? d.size_bytes ?? null,
    sha256: d.sha256 ?? null,
    examples: d.examples ?? summary.examples ?? null,
    classes: Array.isArray(summary.classes) ? summary.classes : null,
    owner: d.owner ?? null,
    description: d.description ?? "",
    created: d.created_at ?? d.created ?? null,
    jobs: Array.isArray(jobs) ? jobs.map((j) => (typeof j === "object" && j !== null ? j.id : j)) : null,
    summary,
  };
}

/**
 * Records grouped by name: [{name, kind, source, owner, builtin, versions (newest first),
 * latest}], built-in datasets first, then uploads by name.
 */
export function groupByName(records) {
  const groups = new Map();
  for (const record of records) {
    const key = `${record.source}\u0000${record.owner ?? ""}\u0000${record.name}`;
    if (!groups.has(key)) {
      groups.set(key, { name: record.name, kind: record.kind, source: record.source,
        owner: record.owner, builtin: record.source === "builtin", versions: [] });
    }
    groups.get(key).versions.push(record);
  }
  const out = [...groups.values()];
  for (const group of out) {
    group.versions.sort((a, b) => (b.version ?? 0) - (a.version ?? 0));
    group.latest = group.versions[0];
    group.kind = group.latest.kind;
  }
  return out.sort((a, b) => Number(a.builtin === false) - Number(b.builtin === false)
    || a.name.localeCompare(b.name) || String(a.owner).localeCompare(String(b.owner)));
}

/** GET /datasets, read and grouped. */
export async function loadDatasets(api) {
  const body = await api("datasets");
  const items = Array.isArray(body) ? body : body.items || [];
  return groupByName(items.map((d) => readRecord(d)));
}

/** "1 × 8 × 8" from an images summary, or null. */
export function shapeText(summary) {
  const { channels, height, width } = summary || {};
  if (![channels, height, width].every(Number.isFinite)) return null;
  return `${channels} × ${height} × ${width}`;
}

/** Every job id that used any version of a group, or null where the API did not say. */
export function groupJobs(group) {
  const known = group.versions.filter((v) => v.jobs !== null);
  if (!known.length) return null;
  return [...new Set(known.flatMap((v) => v.jobs))].sort((a, b) => a - b);
}

/** Links to jobs (#/jobs/N), at most `max` of them, then "+ K more". */
export function jobLinks(ids, max = 6) {
  if (ids === null || ids === undefined) return "–";
  if (!ids.length) return "none";
  const shown = ids.slice(0, max).flatMap((id, i) => [i ? ", " : null, h("a", { href: `#/jobs/${id}`, text: `#${id}` })]);
  return h("span", { class: "job-links" }, shown, ids.length > max ? ` + ${ids.length - max} more` : null);
}

/**
 * The summary of an upload as label/value rows (text values, never markup), in the order a
 * person reads them: what it is, how many, what shape, how validation is split, its hash.
 */
export function summaryRows(record) {
  const s = record.summary || {};
  const rows = [["version", record.ref], ["kind", record.kind]];
  if (s.format) rows.push(["format", s.format]);
  if (record.kind === "images") {
    rows.push(["examples", fmtCount(s.examples ?? record.examples)]);
    if (record.classes) rows.push(["classes", String(record.classes.length)]);
    const shape = shapeText(s);
    if (shape) rows.push(["shape (C × H × W)", shape]);
    if (s.size_note) rows.push(["size", s.size_note]);
    if (Number.isFinite(s.train)) rows.push(["split", `${fmtCount(s.train)} train · ${fmtCount(s.val ?? 0)} val`]);
    if (s.validation) rows.push(["validation", s.validation]);
  } else {
    if (Number.isFinite(s.characters)) rows.push(["characters", fmtCount(s.characters)]);
    if (Number.isFinite(s.documents)) rows.push(["documents", fmtCount(s.documents)]);
    for (const [tokenizer, size] of Object.entries(s.vocab || {})) rows.push([`vocabulary (${tokenizer})`, fmtCount(size)]);
  }
  if (record.size !== null) rows.push(["stored size", fmtBytes(record.size)]);
  if (record.sha256) rows.push(["sha256", record.sha256]);
  if (record.description) rows.push(["description", record.description]);
  return rows;
}

/** How much a version holds: images counted, text in characters. */
export function examplesText(record) {
  if (record.examples !== null) return fmtCount(record.examples);
  const chars = record.summary?.characters;
  return Number.isFinite(chars) ? `${fmtCount(chars)} chars` : "–";
}

export function fmtCount(n) {
  return Number.isFinite(n) ? n.toLocaleString("en-US") : "–";
}

/** summaryRows as a <dl class="summary">, each entry keyed (data-key) for tests and styling. */
export function summaryList(record) {
  return h("dl", { class: "summary dataset-summary" }, summaryRows(record).map(([label, value]) =>
    h("div", { dataset: { key: label } }, h("dt", { text: label }),
      h("dd", { class: label === "sha256" ? "sha" : null }, label === "sha256" ? h("code", { text: value }) : value))));
}

/** A table of the classes: name, label, train and val counts. */
export function classTable(classes) {
  return h("table", { class: "data-table class-table cards-narrow" },
    h("thead", {}, h("tr", {}, ["class", "label", "train", "val"].map((t) => h("th", { text: t, class: t === "class" ? null : "num" })))),
    h("tbody", {}, classes.map((c) => h("tr", { dataset: { label: String(c.label) } },
      h("td", { text: String(c.name), dataset: { label: "class" } }),
      h("td", { class: "num", text: String(c.label), dataset: { label: "label" } }),
      h("td", { class: "num", text: fmtCount(c.train), dataset: { label: "train" } }),
      h("td", { class: "num", text: fmtCount(c.val), dataset: { label: "val" } })))));
}
