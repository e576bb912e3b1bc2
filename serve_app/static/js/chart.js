// The label mix over time as an inline SVG stacked bar chart, drawn from GET /data/summary.
import { el } from "./dom.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const SIZE = { hour: 3600_000, day: 86_400_000 };
const WIDTH = 720;
const HEIGHT = 220;
const PAD = { right: 8, top: 16, bottom: 32 };
const MAX_TICK_LABELS = 8;
// Axis labels are drawn at up to 20 units (app.css, narrow screens: the SVG shrinks, the text
// must not). A generous width per character keeps every label inside the SVG, which clips.
const AXIS_FONT_MAX = 20;
const textWidth = (text) => text.length * 0.62 * AXIS_FONT_MAX;
// The probability bars' colours for the known labels (app.css); any other label gets one of these.
const LABEL_COLOURS = { positive: "#17b26a", negative: "#f04438", neutral: "#7d89a1" };
const PALETTE = ["#6172f3", "#ee46bc", "#f79009", "#15b79e", "#875bf7", "#0ba5ec"];

const hourFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const hourTitleFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
// A day bucket is a UTC day: named in UTC, so it never shows as the day before.
const dayFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: "UTC" });
const dayTitleFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeZone: "UTC" });

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  for (const child of children) node.append(child);
  return node;
}

/** Milliseconds since the epoch of an ISO 8601 time from the API; no zone means UTC. */
export function parseUtc(iso) {
  const text = String(iso).replace(" ", "T");
  const zoned = /^\d{4}-\d\d-\d\d$/.test(text) || /[zZ]|[+-]\d\d:?\d\d$/.test(text);
  return Date.parse(zoned ? text : `${text}Z`);
}

/** The buckets of the last `count` hours or days up to `now`: since, until and each start. */
export function bucketWindow(bucket, count, now = Date.now()) {
  const size = SIZE[bucket];
  const current = Math.floor(now / size) * size;
  const starts = Array.from({ length: count }, (_, i) => current - (count - 1 - i) * size);
  return { since: new Date(starts[0]), until: new Date(current + size), starts };
}

/** Every bucket of the window, empty ones included, with the summary's counts filled in. */
export function fillBuckets(starts, series) {
  const byStart = new Map(starts.map((start) => [start, {}]));
  for (const entry of series) {
    const start = parseUtc(entry.start);
    if (Number.isNaN(start)) continue;
    byStart.set(start, { ...(byStart.get(start) || {}), ...entry.counts });
  }
  return [...byStart.entries()].sort((a, b) => a[0] - b[0]).map(([start, counts]) => ({ start, counts }));
}

function niceCeiling(value) {
  if (value <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((m) => m >= value);
}

function bucketName(bucket, start, { long = false } = {}) {
  const date = new Date(start);
  if (bucket === "hour") return (long ? hourTitleFormat : hourFormat).format(date);
  return (long ? dayTitleFormat : dayFormat).format(date);
}

function describeCounts(labels, counts) {
  return labels.map((label) => `${(counts[label] || 0).toLocaleString()} ${label}`).join(", ");
}

/** Stacked bars per bucket (one segment per label), an axis of counts and a legend. */
export function labelMixChart({ buckets, labels, bucket, caption }) {
  const totals = Object.fromEntries(labels.map((label) => [label, 0]));
  for (const { counts } of buckets) for (const label of labels) totals[label] += counts[label] || 0;
  const grandTotal = Object.values(totals).reduce((a, b) => a + b, 0);
  const top = niceCeiling(Math.max(0, ...buckets.map(({ counts }) => labels.reduce((s, l) => s + (counts[l] || 0), 0))));
  // Counts are whole: a middle line only where it falls on a whole number.
  const ticks = Number.isInteger(top / 2) ? [0, top / 2, top] : [0, top];
  const tickNames = ticks.map((tick) => tick.toLocaleString());
  const left = Math.ceil(Math.max(...tickNames.map(textWidth))) + 10;
  const plotWidth = WIDTH - left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const slot = plotWidth / Math.max(1, buckets.length);
  const barWidth = Math.max(1, slot * 0.72);
  const y = (value) => PAD.top + plotHeight - (value / top) * plotHeight;
  const colour = (label) => LABEL_COLOURS[label] || PALETTE[labels.indexOf(label) % PALETTE.length];

  const axis = ticks.map((tick, i) =>
    svg("g", { class: "mix__tick" },
      svg("line", { x1: left, x2: WIDTH - PAD.right, y1: y(tick), y2: y(tick) }),
      svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, tickNames[i])));
  // A bucket's name is centred under its bar, moved inwards where it would cross an edge.
  const nameX = (centre, name) => {
    const half = textWidth(name) / 2;
    return Math.min(Math.max(centre, half), WIDTH - half);
  };
  // Every n-th bucket is named: at most MAX_TICK_LABELS names, and never two that touch.
  const widest = Math.max(0, ...buckets.map(({ start }) => textWidth(bucketName(bucket, start))));
  const every = Math.max(Math.ceil(buckets.length / MAX_TICK_LABELS), Math.ceil((widest + 8) / slot));
  const bars = buckets.map(({ start, counts }, i) => {
    const x = left + i * slot + (slot - barWidth) / 2;
    let base = 0;
    const segments = labels.map((label) => {
      const count = counts[label] || 0;
      const segment = svg("rect", { class: "mix__seg", "data-label": label, "data-count": count, fill: colour(label),
        x: x.toFixed(2), width: barWidth.toFixed(2), y: y(base + count).toFixed(2),
        height: (y(base) - y(base + count)).toFixed(2) });
      base += count;
      return segment;
    });
    const title = svg("title", {}, `${bucketName(bucket, start, { long: true })}: ${describeCounts(labels, counts)}`);
    const name = bucketName(bucket, start);
    const tickLabel = i % every === 0
      ? svg("text", { class: "mix__x", x: nameX(x + barWidth / 2, name).toFixed(2), y: HEIGHT - 8,
        "text-anchor": "middle" }, name)
      : null;
    return svg("g", { class: "mix__bar", "data-start": new Date(start).toISOString(), "data-total": base },
      title, ...segments, ...(tickLabel ? [tickLabel] : []));
  });

  const sentence = grandTotal
    ? `${caption}: ${grandTotal.toLocaleString()} predictions, ${describeCounts(labels, totals)}.`
    : `${caption}: no predictions.`;
  const chart = svg("svg", { class: "mix__svg", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img",
    "aria-label": sentence }, ...axis, ...bars);
  const legend = el("ul", { className: "mix__legend" }, labels.map((label) =>
    el("li", { className: "mix__key", dataset: { label } },
      el("span", { className: "mix__swatch", "aria-hidden": "true", style: { background: colour(label) } }),
      `${label} ${totals[label].toLocaleString()}`,
      grandTotal ? el("span", { className: "muted" }, ` (${Math.round((100 * totals[label]) / grandTotal)}%)`) : null)));
  return el("figure", { className: "mix__figure", dataset: { total: grandTotal } },
    chart, el("figcaption", { className: "mix__caption" }, legend,
      grandTotal ? null : el("p", { className: "empty" }, "No predictions in this period.")));
}
