// Charts: plotly.js from the installed plotly Python package (served at the URL the page's
// <meta name="plotly-url"> names), loaded only on the pages that draw charts.
"use strict";

let plotlyPromise = null;

export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyPromise) {
    plotlyPromise = new Promise((resolve, reject) => {
      const meta = document.querySelector('meta[name="plotly-url"]');
      const script = document.createElement("script");
      script.src = meta ? meta.content : "static/vendor/plotly.min.js";
      script.async = true;
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => {
        plotlyPromise = null;
        reject(new Error("could not load plotly.js (is the plotly package installed?)"));
      };
      document.head.append(script);
    });
  }
  return plotlyPromise;
}

// Ten colours that stay distinguishable (d3's category10, also plotly's default); past ten
// runs the colours repeat with another dash pattern, so 40 runs still differ in the legend.
export const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
const DASHES = ["solid", "dash", "dot", "dashdot"];

export function runColor(i) {
  return PALETTE[i % PALETTE.length];
}

export function runDash(i) {
  return DASHES[Math.floor(i / PALETTE.length) % DASHES.length];
}

/**
 * Text for plotly. Plotly reads a few HTML-like tags in names and labels (<b>, <br>, <a>), so
 * user text is escaped first: "<img ...>" then shows as those characters, never as markup.
 * Only entities plotly decodes may be used (its svg_text_utils: numeric ones, and of the
 * named ones only amp, lt, gt, nbsp and a few symbols; "&quot;" would show as written).
 * Quotes matter only inside a tag, where no user text can be once "<" is escaped; they are
 * written as numeric entities all the same.
 */
export function plotText(text) {
  return String(text ?? "")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&#34;")
    .replace(/'/g, "&#39;");
}

export function isNarrow() {
  return window.matchMedia("(max-width: 700px)").matches;
}

export function baseLayout({ title, xTitle, yTitle, logY = false, legend = true, many = false, maxX = null }) {
  const narrow = isNarrow();
  const layout = {
    title: title ? { text: plotText(title), x: 0, xanchor: "left", font: { size: 14 } } : undefined,
    margin: { l: 56, r: 12, t: title ? 36 : 12, b: 44 },
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#1d232a" },
    paper_bgcolor: "#ffffff",
    plot_bgcolor: "#ffffff",
    xaxis: { title: { text: xTitle || "" }, gridcolor: "#eceff3", zeroline: false, automargin: true },
    yaxis: {
      title: { text: yTitle || "" }, gridcolor: "#eceff3", zeroline: false, automargin: true,
      type: logY ? "log" : "linear", exponentformat: "power",
    },
    // Many runs: a scrolling legend on the right (below on a phone, where more than ten runs
    // are told apart by the tables' colour swatches and the hover labels instead).
    showlegend: legend && !(narrow && many === "lots"),
    legend: narrow || !many
      ? { orientation: "h", y: narrow ? -0.32 : -0.22, x: 0, yanchor: "top", font: { size: 11 } }
      : { orientation: "v", x: 1.02, y: 1, font: { size: 11 } },
    hovermode: "closest",
    height: narrow ? 320 : 340,
  };
  if (xTitle === "epoch" && maxX) layout.xaxis.dtick = Math.max(1, Math.ceil(maxX / 10));
  return layout;
}

/** A legend entry: at most `max` characters, the rest shown on hover. */
export function shorten(text, max = 60) {
  const value = String(text ?? "");
  return value.length > max ? `${value.slice(0, max - 1)}…` : value;
}

export const PLOT_CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
};

/** Draw (or redraw in place) a chart; resolves when plotly has rendered it. */
export async function draw(el, traces, layout) {
  const Plotly = await loadPlotly();
  el.classList.remove("chart-empty-state");
  await Plotly.react(el, traces, layout, PLOT_CONFIG);
  el.dataset.traces = String(traces.length);
  return el;
}

export function purge(el) {
  if (window.Plotly && el) window.Plotly.purge(el);
}
