// What the Batch tab shows: the progress of a run and its results, a page at a time.
import { cardTable, el, labelBadge, percent, textCell, windowsTag } from "./dom.js";

export const PAGE_SIZE = 50;
const number = (n) => n.toLocaleString();

/** "42 s", "3 min 5 s", "1 h 2 min": how long is left, to a person. */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ""}`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

/** The progress bar and its figures: done / total, texts per second, time left. */
export function showProgress(parts, { done, total, perSecond, secondsLeft }) {
  const fraction = total ? done / total : 0;
  parts.bar.setAttribute("aria-valuemax", String(total));
  parts.bar.setAttribute("aria-valuenow", String(done));
  parts.bar.setAttribute("aria-valuetext", `${number(done)} of ${number(total)} texts`);
  parts.fill.style.width = `${(fraction * 100).toFixed(2)}%`;
  parts.count.textContent = `${number(done)} / ${number(total)} texts`;
  const rate = done > 0 ? `${perSecond >= 10 ? Math.round(perSecond) : perSecond.toFixed(1)} texts/s` : "starting…";
  const left = done > 0 && done < total && secondsLeft != null ? ` · about ${formatDuration(secondsLeft)} left` : "";
  parts.stats.textContent = `${rate}${left}`;
}

function resultRow(r, labels) {
  return el(
    "tr",
    {},
    el("td", { className: "num muted cell-line" }, r.line),
    textCell(r.text),
    el("td", { className: "cell-label" }, labelBadge(r.label), windowsTag(r.windows)),
    el("td", { className: "num cell-score" }, percent(r.score)),
    labels.map((label) => el("td", { className: "num muted cell-p", dataset: { col: label } },
      percent((r.scores || {})[label] ?? 0))),
  );
}

/** One page of results; rows are cards on narrow screens. */
export function resultsTable(rows, labels) {
  return cardTable({
    id: "batch-table",
    caption: "Batch results",
    columns: [["Line", true], ["Text"], ["Label"], ["Confidence", true], ...labels.map((label) => [label, true])],
    rows: rows.map((r) => resultRow(r, labels)),
  });
}

export function labelCounts(results) {
  const counts = {};
  for (const r of results) counts[r.label] = (counts[r.label] || 0) + 1;
  return Object.entries(counts);
}

/** Heading and per-label counts; says so when the run ended before every text was answered. */
export function summary(results, total) {
  const heading = results.length === total
    ? `${number(results.length)} result${results.length === 1 ? "" : "s"}`
    : `${number(results.length)} of ${number(total)} texts classified`;
  return el(
    "div",
    { className: "summary" },
    el("h2", { className: "card__title", id: "batch-summary", tabIndex: -1 }, heading),
    el(
      "p",
      { className: "summary__counts" },
      labelCounts(results).map(([label, n]) => el("span", { className: "summary__item" }, labelBadge(label), ` ${number(n)}`)),
    ),
  );
}

/** Results with paging controls; `page` is 0-based. Calls onPage(newPage) from the buttons. */
export function pagedResults(results, total, page, onPage) {
  const labels = [...new Set(results.flatMap((r) => Object.keys(r.scores || {})))];
  const pages = Math.max(1, Math.ceil(results.length / PAGE_SIZE));
  const from = page * PAGE_SIZE;
  const rows = results.slice(from, from + PAGE_SIZE);
  const prev = el("button", { type: "button", className: "btn btn--secondary", id: "batch-prev", disabled: page === 0 }, "← Previous");
  const next = el("button", { type: "button", className: "btn btn--secondary", id: "batch-next", disabled: page >= pages - 1 }, "Next →");
  prev.addEventListener("click", () => onPage(page - 1));
  next.addEventListener("click", () => onPage(page + 1));
  const range = rows.length ? `Rows ${number(from + 1)}–${number(from + rows.length)} of ${number(results.length)}` : "";
  return [
    summary(results, total),
    resultsTable(rows, labels),
    pages > 1
      ? el("nav", { className: "pager", "aria-label": "Batch result pages" }, prev,
        el("span", { className: "pager__range", id: "batch-range" }, range), next)
      : null,
  ];
}
