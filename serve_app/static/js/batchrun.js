// Many texts through POST /predict/batch: chunks within the service's limits, a few in flight,
// overload (429, 503) waited out as the service asks, stoppable at any moment.

const IN_FLIGHT = 2; // one chunk on the wire while the service works on the other
const MAX_RETRIES = 20; // per chunk; a service refusing this long is down, not busy
const RETRYABLE = new Set([429, 503]);
const TOO_LARGE = 413;
const encoder = new TextEncoder();

/**
 * [start, end) index ranges of `texts`, each at most `maxTexts` long and, as a JSON body, under
 * `maxBytes` (the service refuses larger bodies with 413 before reading them).
 */
export function planChunks(texts, { maxTexts, maxBytes = Infinity }) {
  const budget = maxBytes * 0.95 - 32; // `{"texts":[...]}` and a margin
  const chunks = [];
  let start = 0;
  let bytes = 0;
  texts.forEach((text, i) => {
    const size = encoder.encode(JSON.stringify(text)).length + 1;
    if (i > start && (i - start >= maxTexts || bytes + size > budget)) {
      chunks.push([start, i]);
      start = i;
      bytes = 0;
    }
    bytes += size;
  });
  if (texts.length > start) chunks.push([start, texts.length]);
  return chunks;
}

function pause(seconds, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, seconds * 1000);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/**
 * Send every chunk with `send(texts, signal)` (resolving to `{results}`), keeping IN_FLIGHT on
 * the way. `onProgress({done, total, perSecond, secondsLeft})` after each chunk; `onWait(seconds,
 * status)` before waiting out an overload answer. A chunk refused as too large (413) is halved. Resolves, also when stopped through `signal`,
 * to `{results, done, failure}`: `results[i]` answers `texts[i]` (holes where none came back),
 * `failure` is `{error, start, end}` for a chunk refused for good.
 */
export async function runChunks(texts, chunks, { send, signal, onProgress = () => {}, onWait = () => {} }) {
  const results = new Array(texts.length);
  const started = performance.now();
  const queue = [...chunks];
  let done = 0;
  let failure = null;

  const report = () => {
    const seconds = Math.max((performance.now() - started) / 1000, 1e-3);
    const perSecond = done / seconds;
    const secondsLeft = perSecond > 0 ? (texts.length - done) / perSecond : null;
    onProgress({ done, total: texts.length, perSecond, secondsLeft });
  };

  async function sendChunk([start, end]) {
    for (let attempt = 0; ; attempt++) {
      try {
        const body = await send(texts.slice(start, end), signal);
        body.results.forEach((result, i) => (results[start + i] = result));
        done += end - start;
        report();
        return;
      } catch (error) {
        if (signal.aborted) return;
        if (error.status === TOO_LARGE && end - start > 1) { // a proxy's smaller limit: halve
          const middle = Math.floor((start + end) / 2);
          queue.unshift([start, middle], [middle, end]);
          return;
        }
        if (!RETRYABLE.has(error.status) || attempt >= MAX_RETRIES) {
          failure = failure || { error, start, end };
          return;
        }
        // Retry-After is the service's estimate of its backlog; without one, back off.
        const seconds = error.retryAfter != null ? Math.max(error.retryAfter, 0.25) : Math.min(2 ** attempt, 30);
        onWait(seconds, error.status);
        await pause(seconds, signal);
        if (signal.aborted) return;
      }
    }
  }

  async function worker() {
    while (!signal.aborted && !failure && queue.length) await sendChunk(queue.shift());
  }

  report();
  await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, chunks.length) }, worker));
  return { results, done, failure };
}
