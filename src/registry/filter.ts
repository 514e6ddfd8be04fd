/**
 * MLflow search filter strings → a structured `ModelFilter`. Supported, joined by AND:
 * `name = 'x'`, `name != 'x'`, `name LIKE 'pre%'`, `name ILIKE '%x%'`, `run_id = 'x'`,
 * `tags.key = 'v'` (or tags.`key with spaces`). Anything else is a 400 that lists these forms.
 */
import { FerryError } from '../errors.js';
import type { ModelFilter } from '../store/index.js';

const CLAUSE = /^\s*(name|run_id|tags\.(?:`[^`]+`|[A-Za-z0-9_.-]+))\s*(=|!=|LIKE|ILIKE)\s*(?:'((?:[^']|'')*)'|"((?:[^"]|"")*)")\s*$/i;

export function parseFilter(filter: string | undefined): ModelFilter {
  const out: ModelFilter = {};
  if (filter === undefined || filter.trim() === '') return out;
  for (const clause of splitAnd(filter)) {
    const m = CLAUSE.exec(clause);
    if (!m) throw badFilter(filter, clause);
    const key = m[1] as string;
    const op = (m[2] as string).toUpperCase() as '=' | '!=' | 'LIKE' | 'ILIKE';
    const value = m[3] !== undefined ? m[3].replace(/''/g, "'") : (m[4] ?? '').replace(/""/g, '"');
    if (key.toLowerCase() === 'name') out.name = { op, value };
    else if (op !== '=') throw badFilter(filter, clause);
    else if (key.toLowerCase() === 'run_id') out.runId = value;
    else (out.tags ??= []).push({ key: key.slice(5).replace(/^`|`$/g, ''), value });
  }
  return out;
}

/** Splits an MLflow filter on AND outside quotes (also used by the tracking searches). */
export function splitAnd(filter: string): string[] {
  const parts: string[] = [];
  let quote = '';
  let start = 0;
  for (let i = 0; i < filter.length; i++) {
    const c = filter[i] as string;
    if (quote) {
      if (c === quote) quote = '';
    } else if (c === "'" || c === '"' || c === '`') {
      quote = c;
    } else if (/\s/.test(c) && /^\s+and\s/i.test(filter.slice(i, i + 6))) {
      parts.push(filter.slice(start, i));
      i += filter.slice(i).match(/^\s+and\s+/i)?.[0].length ?? 0;
      start = i;
      i--;
    }
  }
  parts.push(filter.slice(start));
  return parts;
}

function badFilter(filter: string, clause: string): FerryError {
  return new FerryError('INVALID_PARAMETER_VALUE',
    `Unsupported filter clause ${JSON.stringify(clause.trim())} in ${JSON.stringify(filter)}: use name = 'x', name LIKE 'x%', name ILIKE '%x%', run_id = 'x' or tags.key = 'v', joined by AND.`);
}
