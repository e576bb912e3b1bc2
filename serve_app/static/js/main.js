// Entry point: switches between the signed-out and signed-in views and wires every panel.
import { api, session, whenAuthLost } from "./api.js";
import { setupAuth } from "./auth.js";
import { setupBatch } from "./batch.js";
import { setupClassify } from "./classify.js";
import { $ } from "./dom.js";
import { startHealthPolling } from "./health.js";
import { setupHistory } from "./history.js";
import { setupKeys } from "./keys.js";
import { setupTabs } from "./tabs.js";

const notice = $("#notice");
let expiryTimer = null;

function notify(message, tone = "info") {
  notice.textContent = message || "";
  notice.dataset.tone = tone;
  notice.hidden = !message;
}

const classify = setupClassify();
const batch = setupBatch();
const history = setupHistory();
const keys = setupKeys();
const selectTool = setupTabs($(".tabs"), (tabId) => {
  if (tabId === "tab-history") history.show();
  if (tabId === "tab-keys") keys.show();
});
const auth = setupAuth({ onSignedIn: enterWorkspace, notify });

function showSignedOut(message, tone = "info") {
  clearTimeout(expiryTimer);
  session.clear();
  classify.reset();
  batch.reset();
  history.reset();
  keys.reset();
  $("#app-view").hidden = true;
  $("#user-menu").hidden = true;
  $("#auth-view").hidden = false;
  document.body.dataset.view = "signed-out";
  notify(message, tone);
  auth.focus();
}

// Sign out when the token's own expiry passes, rather than waiting for the next 401.
function scheduleExpiry() {
  clearTimeout(expiryTimer);
  const seconds = session.secondsLeft();
  if (seconds == null) return;
  const expire = () => showSignedOut("Your session has expired. Please sign in again.", "warning");
  if (seconds <= 0) return expire();
  expiryTimer = setTimeout(expire, Math.min(seconds * 1000, 2 ** 31 - 1));
}

async function enterWorkspace(welcome = "") {
  let me;
  try {
    me = await api.me();
  } catch (err) {
    if (!err.authFailed) notify(err.message, "error");
    return;
  }
  $("#user-name").textContent = me.username;
  $("#auth-view").hidden = true;
  $("#user-menu").hidden = false;
  $("#app-view").hidden = false;
  document.body.dataset.view = "signed-in";
  notify(welcome, "success");
  scheduleExpiry();
  selectTool("tab-classify");
  batch.showJobs(); // jobs live on the server: the list comes back after a reload
  $("#classify-text").focus();
}

// Any 401 on an authenticated call means the token is expired or invalid: back to sign in.
whenAuthLost((message) => showSignedOut(message, "warning"));

$("#sign-out").addEventListener("click", () => showSignedOut("You have signed out.", "info"));

startHealthPolling($("#health"));

// Show the service's limits beside the inputs; without them the counters just count.
api
  .info()
  .then((info) => {
    classify.setLimits(info.limits);
    batch.setLimits(info.limits);
    history.setLabels(info.labels);
  })
  .catch(() => {});

if (session.token) {
  enterWorkspace();
} else {
  showSignedOut("");
}
