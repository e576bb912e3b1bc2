// CSV export of batch results (RFC 4180 quoting), safe to open in a spreadsheet.

// A cell starting with one of these is run as a formula by spreadsheet programs.
const FORMULA_START = /^[=+\-@\t\r]/;

function cell(value) {
  let text = value == null ? "" : String(value);
  if (FORMULA_START.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** Build the CSV text: one row per result, one probability column per label. */
export function resultsToCsv(results) {
  const labels = [...new Set(results.flatMap((r) => Object.keys(r.scores || {})))];
  const header = ["text", "label", "score", ...labels.map((l) => `p_${l}`), "model_version", "created_at"];
  const rows = results.map((r) => [
    r.text,
    r.label,
    r.score,
    ...labels.map((l) => (r.scores && l in r.scores ? r.scores[l] : "")),
    r.model_version,
    r.created_at,
  ]);
  return [header, ...rows].map((row) => row.map(cell).join(",")).join("\r\n") + "\r\n";
}

/** Offer text as a file download without any server round trip. */
export function download(filename, text, type = "text/csv;charset=utf-8") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 0);
}
