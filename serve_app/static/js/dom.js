// Small DOM helpers. Text always goes in through textContent, never innerHTML,
// so user-supplied text cannot become markup.

/** Create an element: el("td", { className: "x", dataset: { label } }, child, "text"). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("aria-") || key === "role" || key === "scope" || key === "for") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** A scrollable data table: `head` names its columns (a label, or { label, className }),
 * `rows` are its <tr> elements. */
export function dataTable({ id, caption, head, rows, className = "table" }) {
  const headers = head.flat().map((column) => {
    const { label, className } = typeof column === "object" && !(column instanceof Node) ? column : { label: column };
    return el("th", { scope: "col", className }, label);
  });
  return el(
    "div",
    { className: "table-wrap" },
    el(
      "table",
      { className, id },
      el("caption", { className: "visually-hidden" }, caption),
      el("thead", {}, el("tr", {}, headers)),
      el("tbody", {}, rows),
    ),
  );
}

export function percent(value, digits = 1) {
  return `${(value * 100).toFixed(digits)}%`;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
export function formatDate(iso) {
  // The API sends UTC; a timestamp without a zone is UTC too.
  const date = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
  return Number.isNaN(date.getTime()) ? String(iso) : dateFormat.format(date);
}

/** A coloured label badge; unknown labels still render, in the neutral colour. */
export function labelBadge(label) {
  return el("span", { className: "pill", dataset: { label } }, label);
}

/** Tell screen-reader users what just happened, in one sentence (a polite live region). */
export function announce(message) {
  const region = document.getElementById("announce");
  region.textContent = "";
  // Emptied first, refilled after a tick: an identical sentence is announced again.
  setTimeout(() => (region.textContent = message), 50);
}

/** Show a message in an alert element, or hide it when message is empty. */
export function showAlert(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

/** Disable a form's controls while a request runs, and mark it busy for assistive tech. */
export async function whileBusy(form, work) {
  const controls = [...form.querySelectorAll("button, input, textarea, select")];
  const wasDisabled = controls.map((c) => c.disabled);
  form.setAttribute("aria-busy", "true");
  controls.forEach((c) => (c.disabled = true));
  try {
    return await work();
  } finally {
    controls.forEach((c, i) => (c.disabled = wasDisabled[i]));
    form.removeAttribute("aria-busy");
  }
}

/** Horizontal bar chart of per-label probabilities, highest first. */
export function probabilityChart(scores, { caption = "Probability per label" } = {}) {
  const entries = Object.entries(scores).sort((a, b) => b[1] - a[1]);
  return el(
    "figure",
    { className: "chart" },
    el("figcaption", { className: "chart__caption" }, caption),
    el(
      "ul",
      { className: "chart__bars" },
      entries.map(([label, value]) =>
        el(
          "li",
          { className: "chart__row", dataset: { label } },
          el("span", { className: "chart__label" }, label),
          el(
            "span",
            { className: "chart__track", "aria-hidden": "true" },
            el("span", { className: "chart__fill", style: { width: `${Math.max(0, Math.min(1, value)) * 100}%` } }),
          ),
          el("span", { className: "chart__value" }, percent(value)),
        ),
      ),
    ),
  );
}

/**
 * A results table that turns into cards on narrow screens. `columns`: [heading, numeric?];
 * `rows`: the <tr> elements.
 */
export function cardTable({ id, caption, columns, rows }) {
  const head = columns.map(([label, numeric]) => ({ label, className: numeric ? "num" : null }));
  return dataTable({ id, caption, head, rows, className: "table table--cards" });
}

/** "3 windows" beside a result whose text was longer than the model reads at once; else nothing. */
export function windowsTag(windows) {
  if (!(windows > 1)) return null;
  return el("span", { className: "tag", dataset: { windows },
    title: "Longer than the model reads at once: classified over overlapping windows, combined" },
  `${windows} windows`);
}

const CLAMP_CHARS = 400;
/** A table cell for a text: a long one shows its first lines and a button to show it whole. */
export function textCell(text) {
  if (text.length <= CLAMP_CHARS) return el("td", { className: "cell-text" }, text);
  const body = el("div", { className: "cell-text__body" }, text);
  const toggle = el("button", { type: "button", className: "link-button", "aria-expanded": "false" },
    `Show all ${text.length.toLocaleString()} characters`);
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    body.classList.toggle("cell-text__body--open", open);
    toggle.textContent = open ? "Show less" : `Show all ${text.length.toLocaleString()} characters`;
  });
  return el("td", { className: "cell-text cell-text--long" }, body, toggle);
}
