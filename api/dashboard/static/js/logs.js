// The job page's "Logs" panel (#/jobs/42): what the job's worker did and what its training
// logged (GET jobs/{id}/logs?after=), followed live while the job is queued or running.
// Every part of a line is set as text (textContent), never as HTML: a log holds whatever the
// training code and its data wrote. Scrolls along with new lines unless the reader scrolled up.
"use strict";

import { api, ApiError, poll } from "./api.js";
import { ACTIVE, h, setText } from "./dom.js";
import { REFRESH_MS } from "./state.js";

const PAGE = 1000; // lines per request
const MAX_ROWS = 20000; // lines kept on the page (the oldest are removed past it)
const LEVEL_COLORS = {
  DEBUG: "#6b7280", INFO: "#2563eb", WARNING: "#b45309", ERROR: "#dc2626", CRITICAL: "#991b1b",
};
const NEAR_BOTTOM_PX = 24;

function lineRow(line) {
  const level = String(line.level || "INFO");
  const date = new Date(line.time);
  const ok = !Number.isNaN(date.getTime());
  const attempt = line.attempt === null || line.attempt === undefined ? "" : `#${line.attempt} `;
  return h("div", {
    class: `log-line log-${level.toLowerCase()}`,
    dataset: { id: String(line.id), level },
    style: { display: "flex", gap: "0.75em", padding: "1px 0", alignItems: "baseline" },
  },
  h("time", {
    text: ok ? date.toLocaleTimeString() : String(line.time), title: ok ? date.toISOString() : "",
    style: { color: "#6b7280", flex: "none" },
  }),
  h("span", {
    class: "log-level", text: level,
    style: { color: LEVEL_COLORS[level] || "inherit", fontWeight: "600", flex: "none", minWidth: "5.5em" },
  }),
  h("span", {
    class: "log-source", text: `${attempt}${String(line.source || "").replace(/^trainyard\./, "")}`,
    style: { color: "#6b7280", flex: "none", minWidth: "6em" },
  }),
  h("span", {
    class: "log-message", text: String(line.message ?? ""),
    style: { whiteSpace: "pre-wrap", overflowWrap: "anywhere", flex: "1 1 auto" },
  }));
}

/**
 * The panel, placed above the job's curves in `view`; it polls until the job has ended and
 * stops by itself once the page is left (its section no longer in the document).
 */
export function mountLogs(view, jobId) {
  const note = h("p", { class: "muted", id: "job-log-note", text: "Loading the log…" });
  const state = h("span", { class: "muted", id: "job-log-state" });
  const jump = h("button", { type: "button", class: "btn btn-small", text: "↓ Newest", hidden: true });
  const list = h("div", {
    id: "job-log-lines", role: "log", "aria-label": "job log",
    style: {
      fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace", fontSize: "0.85em",
      maxHeight: "28em", overflowY: "auto", lineHeight: "1.45",
    },
  });
  const section = h("section", { class: "card", id: "job-logs" },
    h("div", { style: { display: "flex", gap: "1em", alignItems: "baseline" } },
      h("h2", { text: "Logs" }), state, jump),
    note, list);
  const anchor = view.querySelector(".chart-grid");
  if (anchor) anchor.before(section);
  else view.append(section);

  let after = 0;
  let endedReads = 0;
  const atBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight <= NEAR_BOTTOM_PX;
  const toBottom = () => { list.scrollTop = list.scrollHeight; jump.hidden = true; };
  jump.addEventListener("click", toBottom);
  list.addEventListener("scroll", () => { if (atBottom()) jump.hidden = true; });

  function show(lines) {
    if (!lines.length) return;
    const follow = atBottom();
    list.append(...lines.map(lineRow));
    while (list.childElementCount > MAX_ROWS) list.firstElementChild.remove();
    note.hidden = true;
    if (follow) toBottom();
    else jump.hidden = false; // the reader scrolled up: leave the view where it is
  }

  async function tick() {
    if (!section.isConnected) return false; // the page was left
    let page;
    do {
      try {
        page = await api(`jobs/${jobId}/logs?after=${after}&limit=${PAGE}`);
      } catch (exc) {
        if (exc instanceof ApiError && exc.status === 404) {
          setText(note, "This job has no log here (it does not exist, or is not yours).");
          note.hidden = false;
          return false;
        }
        setText(state, `cannot read the log: ${exc.message}`);
        return true;
      }
      show(page.lines);
      after = page.next_after;
    } while (page.lines.length === PAGE && section.isConnected);
    const live = ACTIVE.has(page.job_status);
    section.dataset.status = page.job_status;
    section.dataset.lines = String(list.childElementCount);
    if (!list.childElementCount) {
      setText(note, live ? "No lines yet: the log starts when a worker claims the job."
        : "This job has no log lines (jobs run before logs existed have none).");
      note.hidden = false;
    }
    if (live) {
      endedReads = 0;
      setText(state, "following (live)");
      section.dataset.state = "following";
      return true;
    }
    // one more read after the end: a cancelled job's worker says how it stopped a moment later
    endedReads += 1;
    setText(state, `job ${page.job_status}`);
    section.dataset.state = endedReads > 1 ? "ended" : "ending";
    return endedReads <= 1;
  }

  poll(tick, REFRESH_MS);
  return section;
}
