/**
 * MLflow's search syntax for runs and experiments, as pure functions: a filter string becomes a
 * list of clauses joined by AND (`metrics.acc > 0.9 and params.alpha = '0.5' and
 * tags.team = 'x' and attributes.status = 'FINISHED'`), an `order_by` list a comparator
 * (`["metrics.acc DESC", "start_time"]`). Matching and ordering run over records in memory.
 *
 * Worked example: `metrics.rmse < 1 and params.model LIKE 'lin%'` keeps a run whose latest rmse
 * is 0.8 and whose param `model` is "linear", and drops one with rmse 1.0 or without the param.
 */
import { FerryError } from '../errors.js';
import { splitAnd } from '../registry/index.js';

/** Where a clause's value comes from. */
export type Entity = 'metric' | 'param' | 'tag' | 'attribute' | 'dataset';

export type Op = '=' | '!=' | '>' | '>=' | '<' | '<=' | 'LIKE' | 'ILIKE' | 'IN' | 'NOT IN';

export interface Clause {
  entity: Entity;
  key: string;
  op: Op;
  /** A number for metrics and numeric attributes, a string, or a list for IN / NOT IN. */
  value: number | string | string[];
}

export interface OrderKey {
  entity: Entity;
  key: string;
  descending: boolean;
}

/** What a record offers to a search: a value per entity and key, undefined when absent. */
export type Lookup = (entity: Entity, key: string) => number | string | undefined;

const ENTITY_NAMES: Readonly<Record<string, Entity>> = {
  metric: 'metric', metrics: 'metric',
  param: 'param', params: 'param', parameter: 'param', parameters: 'param',
  tag: 'tag', tags: 'tag',
  attribute: 'attribute', attributes: 'attribute', attr: 'attribute', run: 'attribute',
  dataset: 'dataset', datasets: 'dataset',
};

/** A key: plain, or quoted with backticks or double quotes when it has spaces or other characters. */
const KEY = String.raw`(?:\`[^\`]+\`|"[^"]+"|[A-Za-z0-9_.\-/]+)`;
const FIELD = new RegExp(String.raw`^\s*(?:([A-Za-z]+)\.)?(${KEY})\s*`);
const OP = /^(!=|>=|<=|=|>|<|NOT\s+IN\b|IN\b|ILIKE\b|LIKE\b)\s*/i;
const NUMBER = /^[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?$/i;

/**
 * Parses a filter. `attributes` lists the attribute names this search knows (e.g. run_name,
 * status, start_time) and `numeric` those compared as numbers; a bare name is an attribute.
 */
export function parseSearchFilter(filter: string | undefined, attributes: readonly string[], numeric: readonly string[], field = 'filter'): Clause[] {
  if (filter === undefined || filter.trim() === '') return [];
  return splitAnd(filter).map((text) => {
    const bad = (why: string): FerryError => new FerryError('INVALID_PARAMETER_VALUE',
      `Invalid clause ${JSON.stringify(text.trim())} in '${field}' ${JSON.stringify(filter)}: ${why}. Use <metrics|params|tags|attributes>.<key> <op> <value>, joined by AND (ops: = != > >= < <= LIKE ILIKE IN NOT IN).`);
    const f = FIELD.exec(text);
    if (!f) throw bad('no field');
    const entity = f[1] === undefined ? 'attribute' : ENTITY_NAMES[f[1].toLowerCase()];
    if (entity === undefined) throw bad(`unknown entity '${f[1] ?? ''}'`);
    const key = unquote(f[2] as string);
    if (entity === 'attribute' && !attributes.includes(key)) throw bad(`unknown attribute '${key}' (known: ${attributes.join(', ')})`);
    const rest = text.slice(f[0].length);
    const o = OP.exec(rest);
    if (!o) throw bad('no comparison operator');
    const op = (o[1] as string).toUpperCase().replace(/\s+/g, ' ') as Op;
    const raw = rest.slice(o[0].length).trim();
    const isNumeric = entity === 'metric' || (entity === 'attribute' && numeric.includes(key));
    if (op === 'IN' || op === 'NOT IN') {
      const list = /^\((.*)\)$/s.exec(raw);
      if (!list || isNumeric) throw bad(`${op} takes a parenthesised list of strings, on a string field`);
      return { entity, key, op, value: (list[1] as string).split(',').map((v) => stringValue(v.trim(), bad)) };
    }
    if (isNumeric) {
      if (!NUMBER.test(raw)) throw bad(`'${key}' compares with a number`);
      if (op === 'LIKE' || op === 'ILIKE') throw bad(`${op} compares strings`);
      return { entity, key, op, value: Number(raw) };
    }
    if (!['=', '!=', 'LIKE', 'ILIKE'].includes(op)) throw bad(`${op} compares numbers; '${key}' is a string`);
    return { entity, key, op, value: stringValue(raw, bad) };
  });
}

/** Whether a record (seen through `lookup`) satisfies every clause. A missing value never matches. */
export function matches(clauses: readonly Clause[], lookup: Lookup): boolean {
  return clauses.every((c) => {
    const v = lookup(c.entity, c.key);
    if (v === undefined) return false;
    if (Array.isArray(c.value)) return c.value.includes(String(v)) === (c.op === 'IN');
    switch (c.op) {
      case '=': return v === c.value;
      case '!=': return v !== c.value;
      case '>': return v > c.value;
      case '>=': return v >= c.value;
      case '<': return v < c.value;
      case '<=': return v <= c.value;
      case 'LIKE': return likeRegex(String(c.value), '').test(String(v));
      default: return likeRegex(String(c.value), 'i').test(String(v));
    }
  });
}

/** Parses `order_by` entries (`metrics.acc DESC`, `start_time`, `name ASC`). */
export function parseOrderBy(orderBy: readonly string[], attributes: readonly string[], field = 'order_by'): OrderKey[] {
  return orderBy.map((text, i) => {
    const m = new RegExp(String.raw`^\s*(?:([A-Za-z]+)\.)?(${KEY}?)\s*?(?:\s(ASC|DESC))?\s*$`, 'i').exec(text);
    const entity = m?.[1] === undefined ? 'attribute' : ENTITY_NAMES[m[1].toLowerCase()];
    const key = m?.[2] === undefined ? '' : unquote(m[2]);
    if (!m || entity === undefined || entity === 'dataset' || key === '' || (entity === 'attribute' && !attributes.includes(key))) {
      throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${JSON.stringify(text)} for '${field}[${i}]': expected <metrics|params|tags|attributes>.<key> [ASC|DESC], attributes being ${attributes.join(', ')}.`);
    }
    return { entity, key, descending: (m[3] ?? '').toUpperCase() === 'DESC' };
  });
}

/**
 * A comparator over records for `keys`, then `tieBreak`. Records without a key's value sort after
 * those with one, whichever the direction (as MLflow does).
 */
export function comparator<T>(keys: readonly OrderKey[], lookup: (t: T) => Lookup, tieBreak: (a: T, b: T) => number): (a: T, b: T) => number {
  return (a, b) => {
    for (const k of keys) {
      const va = lookup(a)(k.entity, k.key);
      const vb = lookup(b)(k.entity, k.key);
      if (va === vb) continue;
      if (va === undefined) return 1;
      if (vb === undefined) return -1;
      const c = va < vb ? -1 : 1;
      return k.descending ? -c : c;
    }
    return tieBreak(a, b);
  };
}

function unquote(key: string): string {
  return /^[`"].*[`"]$/.test(key) ? key.slice(1, -1) : key.trim();
}

function stringValue(raw: string, bad: (why: string) => FerryError): string {
  const m = /^'((?:[^']|'')*)'$|^"((?:[^"]|"")*)"$/.exec(raw);
  if (!m) throw bad(`${JSON.stringify(raw)} is not a quoted string`);
  return m[1] !== undefined ? m[1].replace(/''/g, "'") : (m[2] ?? '').replace(/""/g, '"');
}

/** SQL LIKE as a regex: % any run, _ one character, the rest literal. */
function likeRegex(pattern: string, flags: string): RegExp {
  const body = pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/%/g, '.*').replace(/_/g, '.');
  return new RegExp(`^${body}$`, `s${flags}`);
}
