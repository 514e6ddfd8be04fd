/**
 * Shape limits for JSON bodies, checked on the raw bytes before `JSON.parse` builds anything.
 * A 16 MiB body may hold ~8 million one-digit numbers, or nesting so deep that every later
 * recursive walk overflows the stack; both are refused here with a 400 that names the limit.
 */
import { DEFAULT_MAX_JSON_DEPTH, DEFAULT_MAX_JSON_ELEMENTS } from '../config/defaults.js';
import { FerryError } from '../errors.js';

/** How deep and how large a JSON body may be. */
export interface JsonLimits {
  /** Deepest nesting of arrays and objects: `[[1]]` has depth 2, a scalar 0. */
  maxDepth: number;
  /**
   * Most values in the body, containers included, object keys not: `{"a": [1, 2]}` has 4
   * (the object, the array, 1 and 2).
   */
  maxElements: number;
}

/** The server's defaults (maxJsonDepth, maxJsonElements), for callers given no limits. */
export const DEFAULT_JSON_LIMITS: Readonly<JsonLimits> = Object.freeze({ maxDepth: DEFAULT_MAX_JSON_DEPTH, maxElements: DEFAULT_MAX_JSON_ELEMENTS });

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;

/**
 * Byte classes outside strings. Everything that is not structural (digits, letters of `true`,
 * whitespace, UTF-8 continuation bytes, which are all ≥ 0x80) is 0 and costs one table load.
 */
const OTHER = 0;
const STRING = 1;
const SEPARATOR = 2;
const OPEN = 3;
const CLOSE = 4;
const CLASS = new Uint8Array(256);
CLASS[QUOTE] = STRING;
CLASS[COMMA] = SEPARATOR;
CLASS[OPEN_ARRAY] = OPEN;
CLASS[OPEN_OBJECT] = OPEN;
CLASS[CLOSE_ARRAY] = CLOSE;
CLASS[CLOSE_OBJECT] = CLOSE;

function isWhitespace(c: number | undefined): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/**
 * Walks `body` once and throws a 400 BAD_REQUEST when its nesting is deeper than
 * `limits.maxDepth` or it holds more than `limits.maxElements` values. Only meaningful for valid
 * JSON: malformed input is left for `JSON.parse` to refuse (the scan never throws on it except
 * for a limit, and costs at most one pass).
 *
 * Values are counted without telling keys from values: every value but the root follows a `,`
 * or opens a non-empty container, so values = 1 + commas + non-empty containers (commas between
 * object members separate key-value pairs, one value each). Example: `{"a": [1, 2], "b": {}}` →
 * 1 + 2 commas + 2 non-empty containers = 5 (the object, the array, 1, 2, `{}`).
 */
export function checkJsonLimits(body: Buffer, limits: JsonLimits): void {
  // Most bodies are far below both limits, and proving that takes a few native searches, where
  // the pass below runs at ~0.6 ns/byte in JavaScript (about a quarter of what JSON.parse
  // takes on a 1 KiB body; see bench/json-limits.ts). A body of n bytes holds at most (n + 1) / 2
  // values (each value but the root owns its last byte and the `,` or opener before it), and
  // nests no deeper than its count of `[` and `{` bytes.
  if ((body.length + 1) / 2 <= limits.maxElements && !hasMoreOpeners(body, limits.maxDepth)) return;
  const n = body.length;
  let depth = 0;
  let deepest = 0;
  let count = 1;
  for (let i = 0; i < n; i++) {
    const cls = CLASS[body[i]!]!;
    if (cls === OTHER) continue;
    if (cls === SEPARATOR) {
      count++;
    } else if (cls === STRING) {
      // Skip to the closing quote: a quote preceded by an odd run of backslashes is escaped.
      for (i++; i < n; i++) {
        const c = body[i];
        if (c === QUOTE) break;
        if (c === BACKSLASH) i++;
      }
    } else if (cls === OPEN) {
      if (++depth > deepest) deepest = depth;
      let j = i + 1;
      while (isWhitespace(body[j])) j++;
      const next = body[j];
      if (next !== CLOSE_ARRAY && next !== CLOSE_OBJECT) count++;
    } else {
      depth--;
    }
  }
  if (deepest > limits.maxDepth) {
    throw new FerryError('BAD_REQUEST', `JSON nesting depth ${deepest} exceeds ${limits.maxDepth} (the server's maxJsonDepth).`);
  }
  if (count > limits.maxElements) {
    throw new FerryError('BAD_REQUEST', `JSON body has ${count} values, more than ${limits.maxElements} (the server's maxJsonElements); send smaller requests.`);
  }
}

/** True when `body` has more than `max` `[` and `{` bytes (inside strings too). */
function hasMoreOpeners(body: Buffer, max: number): boolean {
  let seen = 0;
  for (let i = body.indexOf(OPEN_ARRAY); i !== -1; i = body.indexOf(OPEN_ARRAY, i + 1)) if (++seen > max) return true;
  for (let i = body.indexOf(OPEN_OBJECT); i !== -1; i = body.indexOf(OPEN_OBJECT, i + 1)) if (++seen > max) return true;
  return false;
}
