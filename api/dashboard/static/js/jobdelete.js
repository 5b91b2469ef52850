// The job page's Delete button (DELETE jobs/{id}): shown for a finished job only, asks for a
// confirmation inline, then goes to the jobs list. A refusal (the parent of a fork, a trial of
// a running sweep) is shown as the API words it.
"use strict";

import { api } from "./api.js";
import { showError } from "./banner.js";
import { ACTIVE, h } from "./dom.js";
import { navigate } from "./router.js";

/** Put the button into the page head of `view`; update(job) after each refresh shows it. */
export function mountDelete(view, jobId) {
  const ask = h("button", { type: "button", class: "btn btn-danger", id: "delete-job", text: "Delete job", hidden: true,
    title: "Delete this finished job with its metrics, checkpoints, texts and logs" });
  const yes = h("button", { type: "button", class: "btn btn-small btn-danger", id: "delete-job-yes", text: "Yes, delete" });
  const no = h("button", { type: "button", class: "btn btn-small", id: "delete-job-no", text: "Keep" });
  const confirm = h("span", { class: "confirm-delete", id: "delete-job-confirm", hidden: true },
    h("span", { text: `Delete job #${jobId} with its metrics, checkpoints and logs? This cannot be undone. ` }), yes, no);
  const actions = view.querySelector(".page-head .actions");
  if (actions) actions.append(ask, confirm);
  ask.addEventListener("click", () => { ask.hidden = true; confirm.hidden = false; });
  no.addEventListener("click", () => { confirm.hidden = true; ask.hidden = false; });
  yes.addEventListener("click", async () => {
    yes.disabled = true;
    try {
      await api(`jobs/${jobId}`, { method: "DELETE" });
      navigate("/");
    } catch (exc) {
      showError(exc.message);
      confirm.hidden = true;
      ask.hidden = false;
    } finally {
      yes.disabled = false;
    }
  });
  return {
    update(job) {
      const finished = !ACTIVE.has(job.status);
      if (!finished) confirm.hidden = true;
      ask.hidden = !finished || !confirm.hidden;
    },
  };
}
