// What the pages share while the tab is open: how often they poll, and which runs are ticked.
"use strict";

export const REFRESH_MS = 2000; // live updates: every view polls the API at most this often

// Runs ticked on the jobs page, kept while paging and filtering, for "Compare selected"; the job
// page adds its own run to them.
export const selection = new Set();
