// A panel of the job page's "Inside the model" and "Try it" areas (js/inside.js): a card whose
// requests replace each other, and whose errors are shown in it as text, never thrown.
"use strict";

import { api, ApiError } from "./api.js";
import { h, setText } from "./dom.js";

/** An API error as one line of text: a 422's list of {loc, msg} becomes "field: message; ...". */
export function errorText(exc) {
  if (exc instanceof ApiError && Array.isArray(exc.detail)) {
    return exc.detail.map((d) => {
      const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body" && p !== "query").join(".") : "";
      return where ? `${where}: ${d.msg}` : String(d.msg);
    }).join("; ");
  }
  if (exc instanceof ApiError && exc.status === 404 && !exc.detail) return "not available on this server (404)";
  return exc.message || String(exc);
}

/**
 * A card: heading, optional hint and controls, a note line (loading, errors) and a body.
 * run(path, render) GETs `path` and hands the answer to render(); a newer run aborts the older
 * one, so a slider dragged fast never draws a stale answer over a newer one.
 */
export function panel(id, title, { hint = null, controls = null, wide = false } = {}) {
  const note = h("p", { class: "panel-note", hidden: true });
  const body = h("div", { class: "panel-body" });
  const section = h("section", { class: `card inside-panel${wide ? " inside-wide" : ""}`, id },
    h("h3", { text: title }), hint ? h("p", { class: "muted panel-hint", text: hint }) : null,
    controls, note, body);
  let controller = null;
  const self = {
    section, body, note,
    say(text, kind = "info") {
      note.hidden = !text;
      note.className = `panel-note panel-${kind}`;
      setText(note, text || "");
    },
    /** The request in flight, aborted; `send` (default GET) may POST instead. */
    async run(path, render, send = (signal) => api(path, { signal })) {
      if (controller) controller.abort();
      const mine = new AbortController();
      controller = mine;
      section.dataset.state = "loading";
      try {
        const data = await send(mine.signal);
        if (mine.signal.aborted) return;
        self.say(null);
        await render(data);
        section.dataset.state = "ready";
      } catch (exc) {
        if (mine.signal.aborted || exc.name === "AbortError") return;
        self.say(errorText(exc), "error");
        section.dataset.state = "error";
      }
    },
    stop() {
      if (controller) controller.abort();
    },
  };
  return self;
}
