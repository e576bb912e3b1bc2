// The jobs list on the Batch tab: files scored as jobs on the cluster, with their progress,
// Cancel, Download and Delete. The jobs live on the server, so the list survives a reload.
import { api } from "./api.js";
import { download } from "./csv.js";
import { $, announce, el, formatDate, labelBadge, showAlert } from "./dom.js";

const POLL_MS = 1500;
const ACTIVE = new Set(["queued", "running"]);
const number = (n) => n.toLocaleString();
const STATUS_TEXT = {
  queued: "Queued", running: "Running", succeeded: "Done", failed: "Failed", cancelled: "Cancelled",
};

function progressCell(job) {
  const total = job.rows_total;
  const done = job.rows_done;
  const bar = el("div", {
    className: "progress__track", role: "progressbar", "aria-label": `Progress of ${job.filename}`,
    "aria-valuemin": "0", "aria-valuemax": String(total ?? 0), "aria-valuenow": String(done),
    "aria-valuetext": total != null ? `${number(done)} of ${number(total)} texts` : `${number(done)} texts`,
  }, el("span", { className: "progress__fill", style: { width: total ? `${(100 * done) / total}%` : "0%" } }));
  const figures = total != null ? `${number(done)} / ${number(total)} texts` : `${number(done)} texts`;
  const rate = job.texts_per_s ? ` · ${number(Math.round(job.texts_per_s))} texts/s` : "";
  return el("td", { className: "cell-progress" }, bar,
    el("span", { className: "hint job-figures" }, figures + rate));
}

function labelsCell(job) {
  const counts = Object.entries(job.label_counts || {}).filter(([, n]) => n > 0);
  const errors = job.errors ? el("span", { className: "hint" }, ` ${number(job.errors)} errors`) : null;
  return el("td", { className: "cell-labels" },
    counts.map(([label, n]) => el("span", { className: "job-count" }, labelBadge(label), ` ${number(n)} `)), errors);
}

export function setupJobs() {
  const card = $("#jobs-card");
  const list = $("#jobs-list");
  const error = $("#jobs-error");
  let jobs = [];
  let timer = null;
  let generation = 0; // bumped by reset(): answers for a signed-out session paint nothing

  function actions(job) {
    const buttons = [];
    if (job.status === "succeeded") {
      buttons.push(el("button", { type: "button", className: "btn btn--secondary", dataset: { action: "download", id: job.id },
        "aria-label": `Download the result of ${job.filename}` }, "Download"));
    }
    if (ACTIVE.has(job.status)) {
      buttons.push(el("button", { type: "button", className: "btn btn--danger", dataset: { action: "cancel", id: job.id },
        "aria-label": `Cancel the job for ${job.filename}` }, "Cancel"));
    } else {
      buttons.push(el("button", { type: "button", className: "btn btn--ghost", dataset: { action: "delete", id: job.id },
        "aria-label": `Delete the job for ${job.filename}` }, "Delete"));
    }
    return el("td", { className: "cell-actions" }, buttons);
  }

  function row(job) {
    const status = el("td", { className: "cell-status" }, el("strong", {}, STATUS_TEXT[job.status] || job.status),
      job.error ? el("span", { className: "hint job-error" }, ` ${job.error}`) : null);
    return el("tr", { dataset: { jobId: job.id, status: job.status } },
      el("td", {}, el("span", { className: "job-file" }, job.filename),
        el("span", { className: "hint" }, ` ${formatDate(job.created_at)} · ${job.format.toUpperCase()}`)),
      status, progressCell(job), labelsCell(job), actions(job));
  }

  function render() {
    card.hidden = jobs.length === 0;
    const rows = jobs.map(row);
    list.replaceChildren(el("div", { className: "table-wrap" }, el("table", { className: "table", id: "jobs-table" },
      el("caption", { className: "visually-hidden" }, "Your jobs"),
      el("thead", {}, el("tr", {}, ["File", "Status", "Progress", "Labels", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows))));
  }

  async function refresh() {
    clearTimeout(timer);
    const ours = generation;
    try {
      const fresh = await api.listJobs();
      if (ours !== generation) return;
      for (const job of fresh) {
        const before = jobs.find((j) => j.id === job.id);
        if (before && ACTIVE.has(before.status) && !ACTIVE.has(job.status)) {
          announce(`The job for ${job.filename} is ${STATUS_TEXT[job.status].toLowerCase()}.`);
        }
      }
      jobs = fresh;
      showAlert(error, "");
      render();
    } catch (err) {
      if (ours !== generation || err.authFailed) return;
      showAlert(error, err.message);
    }
    if (jobs.some((j) => ACTIVE.has(j.status))) timer = setTimeout(refresh, POLL_MS);
  }

  list.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const job = jobs.find((j) => j.id === button.dataset.id);
    if (!job) return;
    button.disabled = true;
    try {
      if (button.dataset.action === "download") {
        const blob = await api.jobResult(job.id);
        download(`${job.filename.replace(/\.[^.]*$/, "") || "result"}-scored.${job.format}`, blob);
      } else {
        await api.deleteJob(job.id);
      }
    } catch (err) {
      if (!err.authFailed) showAlert(error, err.message);
    } finally {
      button.disabled = false;
    }
    if (button.dataset.action !== "download") refresh();
  });

  return {
    /** Upload a file as a job: FormData with file, column, keep and format. */
    async submit(formData) {
      const job = await api.submitJob(formData);
      jobs = [job, ...jobs.filter((j) => j.id !== job.id)];
      render();
      announce(`The job for ${job.filename} is queued.`);
      refresh();
      return job;
    },
    show: refresh,
    reset() {
      generation += 1;
      clearTimeout(timer);
      jobs = [];
      list.replaceChildren();
      card.hidden = true;
      showAlert(error, "");
    },
  };
}
