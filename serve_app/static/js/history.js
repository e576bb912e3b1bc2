// History: the label mix over time (GET /data/summary) and the signed-in user's predictions
// (GET /data), filtered by label and text, newest first, paged by id; exportable as CSV.
import { api } from "./api.js";
import { bucketWindow, fillBuckets, labelMixChart } from "./chart.js";
import { download } from "./csv.js";
import {
  $, announce, cardTable, el, formatDate, labelBadge, percent, showAlert, textCell, windowsTag,
} from "./dom.js";

const PERIODS = {
  "24h": { bucket: "hour", count: 24, caption: "Label mix, last 24 hours by hour" },
  "7d": { bucket: "day", count: 7, caption: "Label mix, last 7 days by day" },
  "30d": { bucket: "day", count: 30, caption: "Label mix, last 30 days by day" },
  "90d": { bucket: "day", count: 90, caption: "Label mix, last 90 days by day" },
};
const SEARCH_DELAY_MS = 300;

function historyTable(rows, filtered) {
  if (rows.length === 0) {
    return el("p", { className: "empty" }, filtered
      ? "No predictions match these filters."
      : "No predictions yet. Classify some text and it will appear here.");
  }
  return cardTable({
    id: "history-rows",
    caption: "Your predictions, newest first",
    columns: [["When"], ["Text"], ["Label"], ["Confidence", true], ["Model"]],
    rows: rows.map((row) =>
      el(
        "tr",
        { dataset: { id: row.id } },
        el("td", { className: "nowrap muted cell-when" }, formatDate(row.created_at)),
        textCell(row.text),
        el("td", { className: "cell-label" }, labelBadge(row.label), windowsTag(row.windows)),
        el("td", { className: "num cell-score" }, percent(row.score)),
        el("td", { className: "muted mono cell-model" }, row.model_version),
      )),
  });
}

export function setupHistory() {
  const container = $("#history-table");
  const error = $("#history-error");
  const filtersForm = $("#history-filters");
  const labelSelect = $("#history-label");
  const search = $("#history-q");
  const sizeSelect = $("#history-size");
  const prev = $("#history-prev");
  const next = $("#history-next");
  const range = $("#history-range");
  const exportButton = $("#history-export");
  const chart = $("#mix-chart");
  const chartError = $("#mix-error");
  const period = $("#mix-period");
  let labels = [...labelSelect.options].map((o) => o.value).filter(Boolean);
  // Keyset paging: cursors[i] is the before_id of page i (null: the newest rows).
  let cursors = [null];
  let page = 0;
  let latest = 0; // only the newest request may paint: an older, slower answer is dropped
  let latestChart = 0;
  let searchTimer = null;

  const filters = () => ({ label: labelSelect.value, q: search.value.trim() });

  async function load() {
    const ticket = ++latest;
    const limit = Number(sizeSelect.value);
    const { label, q } = filters();
    container.setAttribute("aria-busy", "true");
    showAlert(error, "");
    try {
      // One row more than the page shows tells whether an older page exists.
      const rows = await api.history(limit + 1, { label, q, before_id: cursors[page] });
      if (ticket !== latest) return;
      const shown = rows.slice(0, limit);
      cursors = cursors.slice(0, page + 1);
      if (rows.length > limit) cursors.push(shown[shown.length - 1].id);
      container.replaceChildren(historyTable(shown, Boolean(label || q)));
      prev.disabled = page === 0;
      next.disabled = rows.length <= limit;
      const first = page * limit + 1;
      range.textContent = shown.length ? `Showing ${first}–${first + shown.length - 1}` : "";
      announce(shown.length ? `History: ${range.textContent}.` : "History: no predictions to show.");
    } catch (err) {
      if (ticket === latest && !err.authFailed) showAlert(error, err.message);
    } finally {
      if (ticket === latest) container.removeAttribute("aria-busy");
    }
  }

  async function loadChart() {
    const ticket = ++latestChart;
    const { bucket, count, caption } = PERIODS[period.value];
    const { since, until, starts } = bucketWindow(bucket, count);
    chart.setAttribute("aria-busy", "true");
    showAlert(chartError, "");
    try {
      const summary = await api.summary(bucket, since.toISOString(), until.toISOString());
      if (ticket !== latestChart) return;
      const buckets = fillBuckets(starts, summary.series || []);
      const seen = buckets.flatMap((b) => Object.keys(b.counts)).filter((l) => !labels.includes(l));
      chart.replaceChildren(labelMixChart({ buckets, labels: [...labels, ...new Set(seen)], bucket, caption }));
    } catch (err) {
      if (ticket === latestChart && !err.authFailed) showAlert(chartError, err.message);
    } finally {
      if (ticket === latestChart) chart.removeAttribute("aria-busy");
    }
  }

  function firstPage() {
    cursors = [null];
    page = 0;
    return load();
  }

  async function exportRows() {
    showAlert(error, "");
    exportButton.disabled = true;
    exportButton.setAttribute("aria-busy", "true");
    const text = exportButton.textContent;
    exportButton.textContent = "Exporting…";
    try {
      const blob = await api.exportCsv(filters());
      const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
      download(`sentiment-history-${stamp}.csv`, blob);
      announce("History exported as CSV.");
    } catch (err) {
      if (!err.authFailed) showAlert(error, err.message);
    } finally {
      exportButton.textContent = text;
      exportButton.disabled = false;
      exportButton.removeAttribute("aria-busy");
    }
  }

  prev.addEventListener("click", () => {
    page = Math.max(0, page - 1);
    load();
  });
  next.addEventListener("click", () => {
    if (cursors[page + 1] == null) return;
    page += 1;
    load();
  });
  sizeSelect.addEventListener("change", firstPage);
  labelSelect.addEventListener("change", firstPage);
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(firstPage, SEARCH_DELAY_MS);
  });
  filtersForm.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(searchTimer);
    firstPage();
  });
  period.addEventListener("change", loadChart);
  $("#history-refresh").addEventListener("click", () => Promise.all([firstPage(), loadChart()]));
  exportButton.addEventListener("click", exportRows);

  return {
    /** The model's labels, in its order: the label filter's choices and the chart's series. */
    setLabels(modelLabels) {
      if (!modelLabels || !modelLabels.length) return;
      labels = [...modelLabels];
      const chosen = labelSelect.value;
      labelSelect.replaceChildren(el("option", { value: "" }, "All labels"),
        ...labels.map((label) => el("option", { value: label }, label)));
      labelSelect.value = labels.includes(chosen) ? chosen : "";
    },
    show() {
      return Promise.all([firstPage(), loadChart()]);
    },
    reset() {
      clearTimeout(searchTimer);
      latest += 1;
      latestChart += 1;
      cursors = [null];
      page = 0;
      filtersForm.reset();
      container.replaceChildren();
      chart.replaceChildren();
      range.textContent = "";
      prev.disabled = next.disabled = true;
      showAlert(error, "");
      showAlert(chartError, "");
    },
  };
}
