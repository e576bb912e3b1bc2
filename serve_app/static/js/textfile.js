// Texts from what a person gives the Batch tab: pasted lines, a .txt file, or a column of a .csv.
import { parseCsv } from "./csv.js";

export const MAX_FILE_TEXTS = 10_000;

// Column names that usually hold the text to classify, most likely first.
const TEXT_COLUMNS = ["text", "review", "review_text", "reviewtext", "comment", "content", "body",
  "message", "sentence", "tweet", "feedback", "description", "title"];
const NUMBER = /^\s*[-+]?(\d+([.,]\d*)?|[.,]\d+)(e[-+]?\d+)?\s*$/i;

/** Non-blank lines, in order, with the line each came from (1-based). */
export function numberedLines(value) {
  const texts = [];
  const lines = [];
  value.split(/\r\n|\r|\n/).forEach((line, i) => {
    if (line.trim() === "") return;
    texts.push(line);
    lines.push(i + 1);
  });
  return { texts, lines };
}

function median(values) {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Whether the first row names the columns. It does when its cells are short, distinct,
 * non-numeric names (or empty: an unnamed column), and some named column either has a familiar
 * name, holds numbers below it, or holds values much longer than its name.
 */
export function looksLikeHeader(rows) {
  const [first, ...rest] = rows;
  if (!first) return false;
  const names = first.map((c) => c.trim().toLowerCase()).filter(Boolean);
  const nameLike = names.length > 0
    && names.every((c) => c.length <= 40 && !NUMBER.test(c) && !/[.!?]$/.test(c));
  if (!nameLike || new Set(names).size !== names.length) return false;
  if (names.some((c) => TEXT_COLUMNS.includes(c))) return true;
  const sample = rest.slice(0, 200);
  return first.some((name, col) => {
    const below = sample.map((row) => row[col] ?? "").filter((c) => c.trim() !== "");
    if (!name.trim() || below.length === 0) return false;
    if (below.every((c) => NUMBER.test(c))) return true;
    return median(below.map((c) => c.length)) >= 3 * name.length;
  });
}

/** The column most likely to hold the text: a familiar name, else the longest values. */
export function likelyTextColumn(rows, hasHeader) {
  const width = Math.max(0, ...rows.map((r) => r.length));
  if (hasHeader) {
    const names = rows[0].map((c) => c.trim().toLowerCase());
    for (const wanted of TEXT_COLUMNS) {
      const col = names.indexOf(wanted);
      if (col >= 0) return col;
    }
  }
  const sample = rows.slice(hasHeader ? 1 : 0, 201);
  let best = 0;
  let bestLength = -1;
  for (let col = 0; col < width; col++) {
    const length = median(sample.map((r) => (r[col] ?? "").length));
    if (length > bestLength) [best, bestLength] = [col, length];
  }
  return best;
}

/** A parsed CSV with the header and text column guessed; the page lets the person change both. */
export function readCsv(content) {
  const rows = parseCsv(content.replace(/^\uFEFF/, ""));
  const hasHeader = rows.length > 1 && looksLikeHeader(rows);
  return { rows, hasHeader, column: likelyTextColumn(rows, hasHeader) };
}

/** Display names of a CSV's columns: the header's names, or "Column 1", "Column 2", ... */
export function columnNames(rows, hasHeader) {
  const width = Math.max(0, ...rows.map((r) => r.length));
  return Array.from({ length: width }, (_, col) => {
    const name = hasHeader ? (rows[0][col] || "").trim() : "";
    return name ? `${name} (column ${col + 1})` : `Column ${col + 1}`;
  });
}

/** Non-blank cells of one column, with the file line each record starts on. */
export function csvTexts({ rows }, { hasHeader, column }) {
  const texts = [];
  const lines = [];
  let skipped = 0;
  for (const row of rows.slice(hasHeader ? 1 : 0)) {
    const value = row[column] ?? "";
    if (value.trim() === "") {
      skipped += 1;
      continue;
    }
    texts.push(value);
    lines.push(row.line);
  }
  return { texts, lines, skipped };
}

/** Read a chosen file: { kind: "csv", table } or { kind: "txt", texts, lines }. */
export async function readTextFile(file) {
  const content = (await file.text()).replace(/^\uFEFF/, "");
  const isCsv = /\.(csv|tsv)$/i.test(file.name) || /csv|tab-separated/.test(file.type);
  if (isCsv) return { kind: "csv", table: readCsv(content) };
  return { kind: "txt", ...numberedLines(content) };
}
