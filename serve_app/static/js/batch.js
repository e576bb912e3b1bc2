// Batch mode: one text per line -> POST /predict/batch -> table, downloadable as CSV.
import { api } from "./api.js";
import { resultsToCsv, download } from "./csv.js";
import { $, announce, dataTable, el, labelBadge, percent, showAlert, whileBusy } from "./dom.js";

/** Non-blank lines, in order; each is one text. */
export function splitLines(value) {
  return value.split(/\r?\n/).filter((line) => line.trim() !== "");
}

function resultsTable(results) {
  const labels = [...new Set(results.flatMap((r) => Object.keys(r.scores || {})))];
  return dataTable({
    id: "batch-table",
    caption: "Batch results",
    head: [
      { label: "#", className: "num" },
      "Text",
      "Label",
      { label: "Confidence", className: "num" },
      labels.map((label) => ({ label, className: "num" })),
    ],
    rows: results.map((r, i) =>
      el(
        "tr",
        {},
        el("td", { className: "num muted" }, i + 1),
        el("td", { className: "cell-text" }, r.text),
        el("td", {}, labelBadge(r.label)),
        el("td", { className: "num" }, percent(r.score)),
        labels.map((label) => el("td", { className: "num muted" }, percent(r.scores[label] ?? 0))),
      ),
    ),
  });
}

function labelCounts(results) {
  const counts = {};
  for (const r of results) counts[r.label] = (counts[r.label] || 0) + 1;
  return Object.entries(counts);
}

function summary(results) {
  return el(
    "div",
    { className: "summary" },
    el("h2", { className: "card__title" }, `${results.length} result${results.length === 1 ? "" : "s"}`),
    el(
      "p",
      { className: "summary__counts" },
      labelCounts(results).map(([label, n]) => el("span", { className: "summary__item" }, labelBadge(label), ` ${n}`)),
    ),
  );
}

export function setupBatch() {
  const form = $("#batch-form");
  const textarea = $("#batch-text");
  const count = $("#batch-count");
  const error = $("#batch-error");
  const output = $("#batch-result");
  const downloadButton = $("#batch-download");
  let lastResults = [];

  let maxLines = null; // from GET /info; the server enforces it either way

  const updateCount = () => {
    const n = splitLines(textarea.value).length;
    const over = maxLines != null && n > maxLines;
    const of = maxLines != null ? ` of ${maxLines}` : "";
    count.textContent = `${n}${of} line${n === 1 && !of ? "" : "s"} · ${
      over ? "too many for one batch" : "blank lines are skipped"}`;
    count.dataset.over = String(over);
  };
  textarea.addEventListener("input", updateCount);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showAlert(error, "");
    const texts = splitLines(textarea.value);
    if (texts.length === 0) {
      showAlert(error, "Enter at least one line of text.");
      textarea.focus();
      return;
    }
    try {
      const body = await whileBusy(form, () => api.predictBatch(texts));
      lastResults = body.results;
      output.replaceChildren(summary(lastResults), resultsTable(lastResults));
      output.hidden = false;
      downloadButton.disabled = false;
      announce(`${lastResults.length} results. ${labelCounts(lastResults)
        .map(([label, n]) => `${n} ${label}`).join(", ")}.`);
    } catch (err) {
      if (!err.authFailed) showAlert(error, err.message);
    }
  });

  downloadButton.addEventListener("click", () => {
    if (!lastResults.length) return;
    const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
    download(`sentiment-batch-${stamp}.csv`, resultsToCsv(lastResults));
  });

  return {
    setLimits(limits) {
      maxLines = limits.max_batch_texts;
      updateCount();
    },
    reset() {
      form.reset();
      updateCount();
      lastResults = [];
      downloadButton.disabled = true;
      showAlert(error, "");
      output.hidden = true;
      output.replaceChildren();
    },
  };
}
