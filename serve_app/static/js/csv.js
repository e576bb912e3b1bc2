// CSV both ways (RFC 4180): reading a file's rows, writing results safe to open in a spreadsheet.

// A cell starting with one of these is run as a formula by spreadsheet programs.
const FORMULA_START = /^[=+\-@\t\r]/;

function cell(value) {
  let text = value == null ? "" : String(value);
  if (FORMULA_START.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/**
 * Build the CSV text: one row per result, one probability column per label. A result may carry
 * `line`, where its text came from in the input.
 */
export function resultsToCsv(results) {
  const labels = [...new Set(results.flatMap((r) => Object.keys(r.scores || {})))];
  const header = ["line", "text", "label", "score", ...labels.map((l) => `p_${l}`), "windows",
    "model_version", "created_at"];
  const rows = results.map((r) => [
    r.line,
    r.text,
    r.label,
    r.score,
    ...labels.map((l) => (r.scores && l in r.scores ? r.scores[l] : "")),
    r.windows,
    r.model_version,
    r.created_at,
  ]);
  return [header, ...rows].map((row) => row.map(cell).join(",")).join("\r\n") + "\r\n";
}

/** The delimiter of the first record: whichever of , ; tab occurs most outside quotes. */
export function sniffDelimiter(text) {
  const counts = { ",": 0, ";": 0, "\t": 0 };
  let quoted = false;
  for (let i = 0; i < text.length && i < 65_536; i++) {
    const c = text[i];
    if (c === '"') quoted = !quoted;
    else if (!quoted && (c === "\n" || c === "\r")) break;
    else if (!quoted && c in counts) counts[c] += 1;
  }
  return Object.entries(counts).reduce((best, entry) => (entry[1] > best[1] ? entry : best), [",", 0])[0];
}

/**
 * Rows of cells. Quoted fields may hold delimiters, doubled quotes and line breaks; records end
 * at LF, CRLF or CR. Each row records `line`, the file line its record starts on.
 */
export function parseCsv(text, delimiter = sniffDelimiter(text)) {
  const rows = [];
  let row = [];
  let line = 1;
  let rowLine = 1;
  let i = 0;
  const n = text.length;
  const endRow = () => {
    row.line = rowLine;
    rows.push(row);
    row = [];
  };
  while (i <= n) {
    if (text[i] === '"') {
      // Quoted field: runs to the next quote that is not doubled.
      let value = "";
      let from = i + 1;
      for (;;) {
        const close = text.indexOf('"', from);
        if (close < 0) { // unterminated: the rest of the file is this field
          value += text.slice(from);
          i = n;
          break;
        }
        value += text.slice(from, close);
        if (text[close + 1] === '"') {
          value += '"';
          from = close + 2;
        } else {
          i = close + 1;
          break;
        }
      }
      line += (value.match(/\r\n|\r|\n/g) || []).length;
      // Anything between the closing quote and the delimiter is kept, as spreadsheets do.
      let end = i;
      while (end < n && text[end] !== delimiter && text[end] !== "\n" && text[end] !== "\r") end++;
      row.push(value + text.slice(i, end));
      i = end;
    } else {
      let end = i;
      while (end < n && text[end] !== delimiter && text[end] !== "\n" && text[end] !== "\r") end++;
      row.push(text.slice(i, end));
      i = end;
    }
    if (i >= n) {
      endRow();
      break;
    }
    if (text[i] === delimiter) {
      i += 1;
      continue;
    }
    i += text[i] === "\r" && text[i + 1] === "\n" ? 2 : 1; // end of record
    line += 1;
    endRow();
    rowLine = line;
    if (i === n) break; // a final line break ends the last record; no empty record after it
  }
  return rows.filter((r) => !(r.length === 1 && r[0] === "")); // blank lines
}

/** Offer text or a Blob as a file download. */
export function download(filename, data, type = "text/csv;charset=utf-8") {
  const blob = data instanceof Blob ? data : new Blob([data], { type });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 0);
}
