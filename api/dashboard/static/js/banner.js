// The page-wide error banner (#error in index.html): one message at a time, or none.
"use strict";

import { setText } from "./dom.js";

/** Show `message` in the banner; a falsy message hides it. */
export function showError(message) {
  const banner = document.getElementById("error");
  if (!message) {
    banner.hidden = true;
    return;
  }
  setText(banner, message);
  banner.hidden = false;
}
