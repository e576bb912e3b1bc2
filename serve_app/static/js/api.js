// HTTP client for the sentiment-serve API: token handling and readable error messages.
// The page lives at <prefix>/ui/, the API at <prefix>/, so every URL is resolved from there.
export const API_ROOT = new URL("../", window.location.href);
const TOKEN_KEY = "sentiment-serve.token";

/** An API failure carrying a message fit to show to a person. */
export class ApiError extends Error {
  constructor(status, message, { retryAfter = null, authFailed = false, detail = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail; // the server's own words, for callers that describe it in context
    this.retryAfter = retryAfter;
    this.authFailed = authFailed;
  }
}

// The token lives in sessionStorage: it survives a reload of this tab, dies with the tab,
// and is never sent automatically the way a cookie would be.
export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
  /** Seconds until the JWT's `exp` claim, or null when the token carries none. */
  secondsLeft() {
    const token = this.token;
    if (!token) return 0;
    try {
      const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
      return typeof payload.exp === "number" ? payload.exp - Date.now() / 1000 : null;
    } catch {
      return null; // not a JWT we can read; the server remains the judge
    }
  },
};

let onAuthLost = () => {};
/** Register what happens when the server rejects the session (expired or invalid token). */
export function whenAuthLost(handler) {
  onAuthLost = handler;
}

function retryAfterSeconds(response) {
  const value = response.headers.get("Retry-After");
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

// "texts.2" is the third line of a batch (lineOf maps it to the line it came from); other
// fields are named in words.
function describeLocation(loc, lineOf) {
  if (loc.length === 0) return "";
  if (loc[0] === "texts" && typeof loc[1] === "number") return `Line ${lineOf(loc[1])}: `;
  const name = String(loc[0]).replace(/_/g, " ");
  return `${name.charAt(0).toUpperCase()}${name.slice(1)}${loc.length > 1 ? ` (${loc.slice(1).join(", ")})` : ""}: `;
}

// FastAPI validation errors arrive as a list of {loc, msg}; turn them into one sentence each.
function describeDetail(detail, lineOf = (i) => i + 1) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((item) => {
        if (typeof item === "string") return item;
        const where = describeLocation((item.loc || []).filter((p) => p !== "body" && p !== "query"), lineOf);
        return `${where}${String(item.msg || "invalid value").replace(/^Value error, /, "")}`;
      })
      .join(" ");
  }
  if (detail && typeof detail === "object" && typeof detail.message === "string") return detail.message;
  return "";
}

function waitHint(seconds) {
  if (seconds == null) return "Please try again in a moment.";
  return seconds <= 1 ? "Please try again in a second." : `Please try again in ${seconds} seconds.`;
}

/**
 * The message a person sees for a failed response. `context` tailors 401 and 409; `lineOf(i)`
 * names the line the i-th text of a batch came from.
 */
export function describeFailure(status, detail, { retryAfter = null, context = "", lineOf } = {}) {
  const serverSays = describeDetail(detail, lineOf);
  switch (status) {
    case 400:
      return serverSays || "The request was not understood.";
    case 401:
      return context === "signin"
        ? "Wrong username or password."
        : "Your session has expired or is no longer valid. Please sign in again.";
    case 403:
      return "You are not allowed to do that.";
    case 404:
      return "That was not found.";
    case 409:
      return context === "signup" ? "That username is already taken. Choose another one." : serverSays || "That conflicts with existing data.";
    case 413:
      return `That is too much to send at once${serverSays ? ` (${serverSays.replace(/\.$/, "")})` : ""}. Send fewer or shorter texts.`;
    case 422:
      return serverSays ? `Please check your input: ${serverSays}` : "Please check your input.";
    case 429:
      return `Too many requests. ${waitHint(retryAfter)}`;
    case 503:
      return `The service is busy or temporarily unavailable. ${waitHint(retryAfter)}`;
    default:
      if (status >= 500) return `The server ran into a problem (HTTP ${status}). Please try again.`;
      return serverSays || `The request failed (HTTP ${status}).`;
  }
}

/**
 * Call the API. `json` sends a JSON body, `form` a urlencoded one; `auth` adds the bearer token;
 * `signal` aborts the call; `as: "blob"` resolves to the raw body instead of parsed JSON.
 * Resolves to the parsed body; rejects with ApiError whose message is ready to display.
 */
export async function request(
  path, { method = "GET", json, form, multipart, auth = true, context = "", params, signal, as = "json" } = {},
) {
  const url = new URL(path.replace(/^\//, ""), API_ROOT);
  for (const [key, value] of Object.entries(params || {})) {
    if (value != null && value !== "") url.searchParams.set(key, String(value));
  }
  const headers = { Accept: as === "blob" ? "text/csv, application/json" : "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = new URLSearchParams(form);
  } else if (multipart !== undefined) {
    body = multipart; // FormData: the browser sets the multipart boundary itself
  }
  if (auth) {
    const token = session.token;
    if (!token) {
      onAuthLost("Please sign in.");
      throw new ApiError(401, "Please sign in.", { authFailed: true });
    }
    headers.Authorization = `Bearer ${token}`;
  }

  let response;
  try {
    response = await fetch(url, { method, headers, body, signal, credentials: "omit", cache: "no-store" });
  } catch (err) {
    if (signal && signal.aborted) throw err; // stopped on purpose: not a failure to report
    throw new ApiError(0, "Cannot reach the service. Check your connection and try again.");
  }
  if (as === "blob" && response.ok) return response.blob();

  let payload = null;
  const text = await response.text();
  if (text) {
    try {
      payload = JSON.parse(text);
    } catch {
      payload = null; // a proxy's HTML error page, say: never show it raw
    }
  }
  if (response.ok) return payload;

  const retryAfter = retryAfterSeconds(response);
  const message = describeFailure(response.status, payload && payload.detail, { retryAfter, context });
  const authFailed = response.status === 401 && auth;
  if (authFailed) onAuthLost(message);
  throw new ApiError(response.status, message, { retryAfter, authFailed, detail: payload && payload.detail });
}

export const api = {
  signUp: (username, password) =>
    request("/auth/", { method: "POST", json: { username, password }, auth: false, context: "signup" }),
  signIn: (username, password) =>
    request("/auth/token", { method: "POST", form: { username, password }, auth: false, context: "signin" }),
  me: () => request("/"),
  predict: (text) => request("/predict", { method: "POST", json: { text } }),
  predictBatch: (texts, { signal } = {}) =>
    request("/predict/batch", { method: "POST", json: { texts }, signal }),
  /** filters: { label, q, before_id, offset }; empty values are left out of the query. */
  history: (limit, filters = {}) => request("/data", { params: { limit, ...filters } }),
  summary: (bucket, since, until) => request("/data/summary", { params: { bucket, since, until } }),
  /** The CSV of every row matching the filters, as a Blob (the bearer token rules out a plain link). */
  exportCsv: (filters = {}) => request("/data/export", { params: filters, as: "blob" }),
  info: () => request("/info", { auth: false }),
  createKey: (name) => request("/auth/keys", { method: "POST", json: { name } }),
  listKeys: () => request("/auth/keys"),
  revokeKey: (id) => request(`/auth/keys/${encodeURIComponent(id)}`, { method: "DELETE" }),
  /** A file scored as a job: FormData with `file`, `column`, `keep`, `format`. */
  submitJob: (formData) => request("/jobs", { method: "POST", multipart: formData }),
  listJobs: () => request("/jobs"),
  /** Cancels a running job, deletes a finished one. */
  deleteJob: (id) => request(`/jobs/${encodeURIComponent(id)}`, { method: "DELETE" }),
  jobResult: (id) => request(`/jobs/${encodeURIComponent(id)}/result`, { as: "blob" }),
};
