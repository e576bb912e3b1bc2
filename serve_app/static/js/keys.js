// API keys: create one (shown once, with a copy button), list them, revoke one.
import { api } from "./api.js";
import { $, announce, dataTable, el, formatDate, showAlert, whileBusy } from "./dom.js";

function keysTable(keys, onRevoke) {
  if (keys.length === 0) {
    return el("p", { className: "empty" }, "No API keys yet. Create one above for a script or a service.");
  }
  return dataTable({
    id: "keys-rows",
    caption: "Your API keys, oldest first",
    head: ["Name", "Key starts with", "Created", "Last used", el("span", { className: "visually-hidden" }, "Actions")],
    rows: keys.map((key) =>
      el(
        "tr",
        { dataset: { keyId: String(key.id) } },
        el("td", { className: "cell-text key-name" }, key.name),
        el("td", { className: "mono" }, `${key.prefix}_…`),
        el("td", { className: "nowrap muted" }, formatDate(key.created_at)),
        el("td", { className: "nowrap muted key-last-used" }, key.last_used_at ? formatDate(key.last_used_at) : "Never"),
        el("td", { className: "num" }, revokeControl(key, onRevoke)),
      ),
    ),
  });
}

// Revoking cannot be undone, so it takes a second click on the same row.
function revokeControl(key, onRevoke) {
  const wrap = el("span", { className: "key-actions" });
  const revoke = el("button", { type: "button", className: "btn btn--secondary", "aria-label": `Revoke key “${key.name}”` }, "Revoke");
  const confirm = el("button", { type: "button", className: "btn btn--danger", hidden: true }, "Confirm revoke");
  const cancel = el("button", { type: "button", className: "btn btn--ghost", hidden: true }, "Cancel");
  const asking = (yes) => {
    revoke.hidden = yes;
    confirm.hidden = cancel.hidden = !yes;
    (yes ? confirm : revoke).focus();
  };
  revoke.addEventListener("click", () => asking(true));
  cancel.addEventListener("click", () => asking(false));
  confirm.addEventListener("click", () => onRevoke(key, confirm));
  wrap.append(revoke, confirm, cancel);
  return wrap;
}

export function setupKeys() {
  const form = $("#key-form");
  const nameInput = $("#key-name");
  const formError = $("#key-error");
  const created = $("#key-created");
  const value = $("#key-value");
  const copyStatus = $("#key-copy-status");
  const container = $("#keys-table");
  const listError = $("#keys-list-error");
  let latest = 0;

  async function load() {
    const ticket = ++latest;
    container.setAttribute("aria-busy", "true");
    showAlert(listError, "");
    try {
      const keys = await api.listKeys();
      if (ticket !== latest) return;
      container.replaceChildren(keysTable(keys, revoke));
    } catch (err) {
      if (ticket === latest && !err.authFailed) showAlert(listError, err.message);
    } finally {
      if (ticket === latest) container.removeAttribute("aria-busy");
    }
  }

  async function revoke(key, button) {
    button.disabled = true;
    try {
      await api.revokeKey(key.id);
      announce(`Key “${key.name}” revoked.`);
    } catch (err) {
      if (!err.authFailed) showAlert(listError, err.message);
    }
    await load();
  }

  function hideCreated() {
    value.textContent = "";
    copyStatus.textContent = "";
    created.hidden = true;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showAlert(formError, "");
    const name = nameInput.value.trim();
    if (!name) {
      showAlert(formError, "Give the key a name.");
      nameInput.focus();
      return;
    }
    try {
      const key = await whileBusy(form, () => api.createKey(name));
      form.reset();
      value.textContent = key.key;
      copyStatus.textContent = "";
      created.hidden = false;
      $("#key-copy").focus();
      announce(`Key “${key.name}” created. Copy it now: it is shown only once.`);
      await load();
    } catch (err) {
      if (!err.authFailed) showAlert(formError, err.message);
    }
  });

  $("#key-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(value.textContent);
      copyStatus.textContent = "Copied to the clipboard.";
    } catch {
      // No clipboard access (an insecure origin, a denied permission): select it instead.
      window.getSelection().selectAllChildren(value);
      copyStatus.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
    }
  });
  $("#key-done").addEventListener("click", () => {
    hideCreated();
    nameInput.focus();
  });

  return {
    show: load,
    reset() {
      latest++;
      hideCreated();
      form.reset();
      showAlert(formError, "");
      showAlert(listError, "");
      container.replaceChildren();
    },
  };
}
