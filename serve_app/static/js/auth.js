// Sign up and sign in forms. Creating an account signs in with the same credentials.
import { api, session } from "./api.js";
import { $, showAlert, whileBusy } from "./dom.js";
import { setupTabs } from "./tabs.js";

const USERNAME = /^[A-Za-z0-9_.-]{3,64}$/;

function credentials(form) {
  const data = new FormData(form);
  return [String(data.get("username") || "").trim(), String(data.get("password") || "")];
}

// Checks the browser can make before a round trip; the server still has the final word.
function checkSignUp(username, password) {
  if (!USERNAME.test(username)) return "Username must be 3–64 characters: letters, digits, _ . or -.";
  if (password.length < 8) return "Password must be at least 8 characters.";
  if (password.length > 128) return "Password must be at most 128 characters.";
  return "";
}

/**
 * onSignedIn(welcome) runs after a successful sign-in (welcome: a notice to show, or "");
 * notify(message, tone) shows a notice.
 */
export function setupAuth({ onSignedIn, notify }) {
  const signinForm = $("#signin-form");
  const signupForm = $("#signup-form");
  const signinError = $("#signin-error");
  const signupError = $("#signup-error");
  const selectTab = setupTabs($(".segmented"), () => {
    showAlert(signinError, "");
    showAlert(signupError, "");
  });

  signupForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    showAlert(signupError, "");
    notify(""); // an earlier notice (signed out, expired) no longer applies
    const [username, password] = credentials(signupForm);
    const problem = checkSignUp(username, password);
    if (problem) {
      showAlert(signupError, problem);
      return;
    }
    try {
      await whileBusy(signupForm, () => api.signUp(username, password));
    } catch (err) {
      showAlert(signupError, err.message);
      return;
    }
    signupForm.reset();
    let token;
    try {
      token = await whileBusy(signupForm, () => api.signIn(username, password));
    } catch (err) {
      // The account exists; only the sign-in failed (e.g. rate limited): let the person retry it.
      selectTab("tab-signin");
      $("#signin-username").value = username;
      $("#signin-password").focus();
      notify(`Account “${username}” created, but signing in failed: ${err.message}`, "warning");
      return;
    }
    session.set(token.access_token);
    await onSignedIn(`Account “${username}” created. You are signed in.`);
  });

  signinForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    showAlert(signinError, "");
    notify("");
    const [username, password] = credentials(signinForm);
    if (!username || !password) {
      showAlert(signinError, "Enter your username and password.");
      return;
    }
    let token;
    try {
      token = await whileBusy(signinForm, () => api.signIn(username, password));
    } catch (err) {
      showAlert(signinError, err.message);
      return;
    }
    session.set(token.access_token);
    signinForm.reset();
    await onSignedIn("");
  });

  return {
    focus() {
      selectTab("tab-signin");
      $("#signin-username").focus();
    },
  };
}
