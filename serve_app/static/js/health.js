// The status strip: model version and whether the service answers, polled from GET /health.
import { API_ROOT } from "./api.js";

const POLL_MS = 30_000;

function render(node, state, text) {
  node.dataset.state = state;
  node.querySelector(".health__text").textContent = text;
}

export async function checkHealth(node) {
  try {
    const response = await fetch(new URL("health", API_ROOT), { cache: "no-store", credentials: "omit" });
    const body = await response.json().catch(() => ({}));
    const version = body.model_version ? ` · model ${body.model_version}` : "";
    if (response.ok && body.status === "healthy") {
      render(node, "healthy", `Service healthy${version}`);
    } else if (response.status === 429) {
      render(node, "degraded", "Service busy (rate limited)");
    } else {
      const why = typeof body.detail === "string" ? `: ${body.detail}` : "";
      render(node, "unhealthy", `Service unavailable${why}${version}`);
    }
  } catch {
    render(node, "unhealthy", "Service unreachable");
  }
}

export function startHealthPolling(node) {
  checkHealth(node);
  const timer = setInterval(() => {
    if (!document.hidden) checkHealth(node);
  }, POLL_MS);
  return () => clearInterval(timer);
}
