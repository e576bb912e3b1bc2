// The Batch tab: pasted lines or a .txt/.csv file -> /predict/batch in chunks, with progress,
// Stop, overload retries, paged results and a CSV download. A file over MAX_FILE_TEXTS texts
// (or any file, by choice) is uploaded as a job instead (jobs.js lists it).
import { api, describeFailure } from "./api.js";
import { planChunks, runChunks } from "./batchrun.js";
import { formatDuration, labelCounts, pagedResults, showProgress } from "./batchview.js";
import { download, resultsToCsv } from "./csv.js";
import { $, announce, el, showAlert } from "./dom.js";
import { setupJobs } from "./jobs.js";
import { MAX_FILE_TEXTS, columnNames, csvTexts, numberedLines, readTextFile } from "./textfile.js";

const number = (n) => n.toLocaleString();

function listLines(lines) {
  const shown = lines.slice(0, 3).map(number);
  const more = lines.length > 3 ? ` and ${number(lines.length - 3)} more` : "";
  return shown.length === 1 && !more ? `Line ${shown[0]} is` : `Lines ${shown.join(", ")}${more} are`;
}

export function setupBatch() {
  const form = $("#batch-form");
  const textarea = $("#batch-text");
  const count = $("#batch-count");
  const fileInput = $("#batch-file");
  const fileInfo = $("#batch-file-info");
  const fileClear = $("#batch-file-clear");
  const csvOptions = $("#batch-csv-options");
  const columnSelect = $("#batch-column");
  const headerBox = $("#batch-header");
  const submit = $("#batch-submit");
  const stop = $("#batch-stop");
  const downloadButton = $("#batch-download");
  const error = $("#batch-error");
  const output = $("#batch-result");
  const jobOptions = $("#batch-job-options");
  const asJob = $("#batch-as-job");
  const jobFormat = $("#batch-job-format");
  const jobs = setupJobs();
  const progress = {
    card: $("#batch-progress"),
    title: $("#batch-progress-title"),
    bar: $("#batch-progress-bar"),
    fill: $("#batch-progress-bar .progress__fill"),
    count: $("#batch-progress-count"),
    stats: $("#batch-progress-stats"),
  };

  // From GET /info; until it answers, chunks small enough for any sane configuration.
  const limits = { maxChars: null, maxTexts: 32, maxBytes: 1_048_576 };
  let file = null; // { name, kind: "txt" | "csv", texts, lines } or { name, kind, table }
  let running = null; // the AbortController of the run in progress
  let last = { results: [], total: 0, page: 0 };
  let generation = 0; // bumped by reset(): a run that outlives its session paints nothing

  /** The texts a run would send now, with the line each came from. */
  function currentTexts() {
    if (!file) return { ...numberedLines(textarea.value), skipped: 0 };
    if (file.kind === "txt") return { texts: file.texts, lines: file.lines, skipped: 0 };
    return csvTexts(file.table, { hasHeader: headerBox.checked, column: Number(columnSelect.value) });
  }

  function updateCount() {
    const n = numberedLines(textarea.value).texts.length;
    const over = n > MAX_FILE_TEXTS;
    count.textContent = `${number(n)} line${n === 1 ? "" : "s"} · ${
      over ? `too many: at most ${number(MAX_FILE_TEXTS)}` : "blank lines are skipped · Ctrl+Enter to classify"}`;
    count.dataset.over = String(over);
  }

  function updateFileInfo() {
    if (!file) {
      fileInfo.textContent = "";
      fileInfo.hidden = fileClear.hidden = csvOptions.hidden = jobOptions.hidden = true;
      asJob.checked = asJob.disabled = false;
      textarea.disabled = false;
      return;
    }
    const { texts, skipped } = currentTexts();
    const over = texts.length > MAX_FILE_TEXTS;
    if (over) asJob.checked = true; // too many texts to send in parts: only a job takes them
    asJob.disabled = over;
    fileInfo.textContent = `${file.name}: ${number(texts.length)} text${texts.length === 1 ? "" : "s"}${
      skipped ? ` (${number(skipped)} empty skipped)` : ""}${
      over ? ` · over ${number(MAX_FILE_TEXTS)}: it runs as a job` : " · the file is classified, not the box above"}`;
    fileInfo.dataset.over = "false";
    fileInfo.hidden = fileClear.hidden = jobOptions.hidden = false;
    textarea.disabled = true;
  }

  function fillColumns() {
    const names = columnNames(file.table.rows, headerBox.checked);
    const chosen = Math.min(Number(columnSelect.value) || 0, names.length - 1);
    columnSelect.replaceChildren(...names.map((name, col) => el("option", { value: String(col) }, name)));
    columnSelect.value = String(Math.max(0, chosen));
  }

  async function loadFile() {
    showAlert(error, "");
    const chosen = fileInput.files[0];
    file = null;
    if (chosen) {
      try {
        file = { name: chosen.name, blob: chosen, ...(await readTextFile(chosen)) };
      } catch {
        showAlert(error, `Could not read ${chosen.name}. Choose a text (.txt) or CSV (.csv) file.`);
        fileInput.value = "";
      }
    }
    csvOptions.hidden = !file || file.kind !== "csv";
    if (file && file.kind === "csv") {
      headerBox.checked = file.table.hasHeader;
      columnSelect.value = String(file.table.column);
      fillColumns();
      columnSelect.value = String(file.table.column);
    }
    updateFileInfo();
  }

  /** Why these texts cannot be sent, or "" when they can. */
  function problemWith({ texts, lines }) {
    if (texts.length === 0) return file ? `${file.name} holds no text to classify.` : "Enter at least one line of text.";
    if (texts.length > MAX_FILE_TEXTS) {
      return `That is ${number(texts.length)} texts; at most ${number(MAX_FILE_TEXTS)} can be sent at a time. Split it into parts.`;
    }
    if (limits.maxChars != null) {
      const tooLong = lines.filter((_, i) => texts[i].length > limits.maxChars);
      if (tooLong.length) {
        return `${listLines(tooLong)} longer than ${number(limits.maxChars)} characters, the most the service takes. Shorten or remove ${tooLong.length === 1 ? "it" : "them"}.`;
      }
    }
    return "";
  }

  function setRunning(controller) {
    running = controller;
    const on = Boolean(controller);
    form.setAttribute("aria-busy", String(on));
    for (const control of [submit, fileInput, columnSelect, headerBox, fileClear, jobFormat]) control.disabled = on;
    textarea.disabled = on || Boolean(file);
    stop.hidden = !on;
    stop.disabled = false;
    if (on) downloadButton.disabled = true;
  }

  function render() {
    output.replaceChildren(...pagedResults(last.results, last.total, last.page, (page) => {
      last.page = page;
      render();
      $("#batch-summary").focus();
    }).filter(Boolean));
    output.hidden = false;
  }

  /** The upload for a job: a CSV with a header goes as it is, anything else as a CSV of its texts. */
  function jobForm() {
    const data = new FormData();
    if (file.kind === "csv" && headerBox.checked && /\.csv$/i.test(file.name)) {
      data.append("file", file.blob, file.name);
      data.append("column", file.table.rows[0][Number(columnSelect.value)].trim());
    } else {
      const quoted = currentTexts().texts.map((t) => `"${t.replace(/"/g, '""')}"`);
      const name = `${file.name.replace(/\.[^.]*$/, "") || "texts"}.csv`;
      data.append("file", new Blob([`text\n${quoted.join("\n")}\n`], { type: "text/csv" }), name);
      data.append("column", "text");
    }
    data.append("format", jobFormat.value);
    return data;
  }

  async function startJob() {
    const { texts } = currentTexts();
    if (texts.length === 0) {
      showAlert(error, `${file.name} holds no text to classify.`);
      return;
    }
    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      await jobs.submit(jobForm());
      fileInput.value = "";
      await loadFile();
    } catch (err) {
      if (!err.authFailed) showAlert(error, err.message);
    } finally {
      submit.disabled = false;
      form.setAttribute("aria-busy", "false");
    }
  }

  async function start() {
    showAlert(error, "");
    if (file && asJob.checked) {
      await startJob();
      return;
    }
    const input = currentTexts();
    const problem = problemWith(input);
    if (problem) {
      showAlert(error, problem);
      return;
    }
    const { texts, lines } = input;
    const chunks = planChunks(texts, { maxTexts: limits.maxTexts, maxBytes: limits.maxBytes });
    const controller = new AbortController();
    const ours = ++generation;
    const hadFocus = form.contains(document.activeElement);
    setRunning(controller);
    if (hadFocus) stop.focus(); // the control that disabled itself was the one in use
    output.hidden = true;
    progress.card.hidden = false;
    progress.card.dataset.state = "running";
    progress.title.textContent = "Classifying…";

    const { results, done, failure } = await runChunks(texts, chunks, {
      send: (chunk, signal) => api.predictBatch(chunk, { signal }),
      signal: controller.signal,
      onProgress: (figures) => showProgress(progress, figures),
      onWait: (seconds, status) => {
        progress.stats.textContent = `The service is ${status === 429 ? "rate limiting" : "busy"}: retrying in ${
          formatDuration(seconds)}…`;
      },
    });
    if (ours !== generation) return; // signed out meanwhile: the page has moved on
    const stopped = controller.signal.aborted;
    const focusWasOnStop = document.activeElement === stop;
    setRunning(null);

    last = { results: results.flatMap((r, i) => (r ? [{ ...r, line: lines[i] }] : [])), total: texts.length, page: 0 };
    const state = failure ? "failed" : stopped ? "stopped" : "done";
    progress.card.dataset.state = state;
    progress.title.textContent = { done: "Done", stopped: "Stopped", failed: "Stopped by an error" }[state];
    if (failure) {
      const { error: err, start: first } = failure;
      const message = describeFailure(err.status, err.detail, { retryAfter: err.retryAfter, lineOf: (i) => lines[first + i] });
      showAlert(error, `The run stopped at line ${number(lines[first])}. ${message}`);
    }
    downloadButton.disabled = last.results.length === 0;
    if (last.results.length) render();
    if (focusWasOnStop || document.activeElement === document.body) ($("#batch-summary") || downloadButton).focus();
    const counts = labelCounts(last.results).map(([label, n]) => `${n} ${label}`).join(", ");
    announce(state === "done"
      ? `${last.results.length} results. ${counts}.`
      : `Stopped after ${done} of ${texts.length} texts.${counts ? ` ${counts}.` : ""}`);
  }

  textarea.addEventListener("input", updateCount);
  fileInput.addEventListener("change", loadFile);
  fileClear.addEventListener("click", () => {
    fileInput.value = "";
    loadFile();
    textarea.focus();
  });
  headerBox.addEventListener("change", () => {
    fillColumns();
    updateFileInfo();
  });
  columnSelect.addEventListener("change", updateFileInfo);
  // Ctrl+Enter anywhere in the form starts the run, as on the Classify tab.
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!running) start();
  });
  stop.addEventListener("click", () => {
    if (!running) return;
    stop.disabled = true;
    progress.title.textContent = "Stopping…";
    running.abort();
  });
  downloadButton.addEventListener("click", () => {
    if (!last.results.length) return;
    const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
    download(`sentiment-batch-${stamp}.csv`, resultsToCsv(last.results));
  });

  return {
    showJobs: () => jobs.show(),
    setLimits(serviceLimits) {
      limits.maxChars = serviceLimits.max_text_chars;
      limits.maxTexts = serviceLimits.max_batch_texts;
      limits.maxBytes = serviceLimits.max_body_bytes;
    },
    reset() {
      generation += 1;
      jobs.reset();
      if (running) running.abort();
      setRunning(null);
      form.reset();
      file = null;
      updateFileInfo();
      updateCount();
      last = { results: [], total: 0, page: 0 };
      downloadButton.disabled = true;
      showAlert(error, "");
      progress.card.hidden = true;
      output.hidden = true;
      output.replaceChildren();
    },
  };
}
