// The model catalogue (GET /models), fetched once per page load and shared by every page: the
// form's fields, the model filter, and what the API says about each family's metrics (its
// headline metric, and whether lower or higher is better), which the dashboard never repeats.
"use strict";

import { api } from "./api.js";

let pending = null;

/** GET /models: {model name: info}. A failed fetch is forgotten, so the next call asks again. */
export function catalogue() {
  if (!pending) {
    pending = api("models").catch((exc) => {
      pending = null;
      throw exc;
    });
  }
  return pending;
}

/** The headline metric of a model family ("val_accuracy", ...), or null when unknown. */
export function headlineMetric(models, model) {
  return models[model]?.headline_metric ?? null;
}

/**
 * Which way a metric is better: "min", "max", or null where no family says (then no run's
 * value is the best). Families that report the same metric agree on its goal.
 */
export function metricGoal(models, name) {
  for (const info of Object.values(models)) {
    const goal = info.metrics?.[name];
    if (goal) return goal;
  }
  return null;
}

/** "val_perplexity" -> "Validation perplexity": a metric's name as a chart title. */
export function metricTitle(name) {
  const words = name.replace(/^val_/, "validation ").replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}
