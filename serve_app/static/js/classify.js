// Single-text classification: submit, then label, score and the per-label bar chart.
import { api } from "./api.js";
import {
  $, announce, el, formatDate, labelBadge, percent, probabilityChart, showAlert, whileBusy, windowsTag,
} from "./dom.js";

function renderResult(container, result) {
  container.replaceChildren(
    el(
      "div",
      { className: "result__head" },
      el("div", {}, el("p", { className: "result__kicker" }, "Sentiment"), labelBadge(result.label), " ",
        windowsTag(result.windows)),
      el(
        "div",
        { className: "result__score" },
        el("p", { className: "result__kicker" }, "Confidence"),
        el("p", { className: "result__number" }, percent(result.score)),
      ),
    ),
    probabilityChart(result.scores),
    el("blockquote", { className: "result__text" }, result.text),
    el(
      "p",
      { className: "result__meta" },
      `Model ${result.model_version}`,
      result.created_at ? ` · ${formatDate(result.created_at)}` : "",
    ),
  );
  container.dataset.label = result.label;
  container.hidden = false;
  const windows = result.windows > 1 ? `, read in ${result.windows} windows` : "";
  announce(`Result: ${result.label}, ${percent(result.score)} confidence${windows}.`);
}

export function setupClassify() {
  const form = $("#classify-form");
  const textarea = $("#classify-text");
  const count = $("#classify-count");
  const error = $("#classify-error");
  const result = $("#classify-result");

  let maxChars = null; // from GET /info; the server enforces it either way

  const updateCount = () => {
    const n = textarea.value.length;
    const over = maxChars != null && n > maxChars;
    const of = maxChars != null ? ` of ${maxChars.toLocaleString()}` : "";
    count.textContent = `${n.toLocaleString()}${of} character${n === 1 && !of ? "" : "s"}${
      over ? " · too long" : " · Ctrl+Enter to classify"}`;
    count.dataset.over = String(over);
  };
  textarea.addEventListener("input", updateCount);
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showAlert(error, "");
    if (!textarea.value.trim()) {
      showAlert(error, "Enter some text to classify.");
      textarea.focus();
      return;
    }
    try {
      const prediction = await whileBusy(form, () => api.predict(textarea.value));
      renderResult(result, prediction);
    } catch (err) {
      result.hidden = true; // an old result beside a new error would mislead
      if (!err.authFailed) showAlert(error, err.message);
    }
  });

  return {
    setLimits(limits) {
      maxChars = limits.max_text_chars;
      updateCount();
    },
    reset() {
      form.reset();
      updateCount();
      showAlert(error, "");
      result.hidden = true;
      result.replaceChildren();
    },
  };
}
