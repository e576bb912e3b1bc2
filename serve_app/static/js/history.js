// History: the signed-in user's predictions from GET /data, newest first, page by page.
import { api } from "./api.js";
import { $, announce, dataTable, el, formatDate, labelBadge, percent, showAlert } from "./dom.js";

function historyTable(rows) {
  if (rows.length === 0) {
    return el("p", { className: "empty" }, "No predictions yet. Classify some text and it will appear here.");
  }
  return dataTable({
    id: "history-rows",
    caption: "Your predictions, newest first",
    head: ["When", "Text", "Label", { label: "Confidence", className: "num" }, "Model"],
    rows: rows.map((row) =>
      el(
        "tr",
        {},
        el("td", { className: "nowrap muted" }, formatDate(row.created_at)),
        el("td", { className: "cell-text" }, row.text),
        el("td", {}, labelBadge(row.label)),
        el("td", { className: "num" }, percent(row.score)),
        el("td", { className: "muted mono" }, row.model_version),
      ),
    ),
  });
}

export function setupHistory() {
  const container = $("#history-table");
  const error = $("#history-error");
  const sizeSelect = $("#history-size");
  const prev = $("#history-prev");
  const next = $("#history-next");
  const range = $("#history-range");
  let offset = 0;
  let latest = 0; // only the newest request may paint: an older, slower answer is dropped

  async function load() {
    const ticket = ++latest;
    const limit = Number(sizeSelect.value);
    container.setAttribute("aria-busy", "true");
    showAlert(error, "");
    try {
      // One row more than the page shows tells whether an older page exists.
      const rows = await api.history(limit + 1, offset);
      if (ticket !== latest) return;
      const page = rows.slice(0, limit);
      container.replaceChildren(historyTable(page));
      prev.disabled = offset === 0;
      next.disabled = rows.length <= limit;
      range.textContent = page.length ? `Showing ${offset + 1}–${offset + page.length}` : "";
      announce(page.length ? `History: ${range.textContent}.` : "History: no predictions yet.");
    } catch (err) {
      if (ticket === latest && !err.authFailed) showAlert(error, err.message);
    } finally {
      if (ticket === latest) container.removeAttribute("aria-busy");
    }
  }

  prev.addEventListener("click", () => {
    offset = Math.max(0, offset - Number(sizeSelect.value));
    load();
  });
  next.addEventListener("click", () => {
    offset += Number(sizeSelect.value);
    load();
  });
  sizeSelect.addEventListener("change", () => {
    offset = 0;
    load();
  });
  $("#history-refresh").addEventListener("click", () => load());

  return {
    show() {
      offset = 0;
      return load();
    },
    reset() {
      offset = 0;
      container.replaceChildren();
      range.textContent = "";
      prev.disabled = next.disabled = true;
      showAlert(error, "");
    },
  };
}
