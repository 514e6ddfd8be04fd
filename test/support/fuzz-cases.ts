/**
 * What the route fuzzer sends: fast-check arbitraries that turn one route of the server's route
 * table (`{method, pattern}`) into concrete HTTP requests (path parameters, query strings, methods,
 * headers, framing and bodies, valid shapes mutated and plain garbage), the guard that keeps the
 * fuzzer from destroying its own fixture, and the judge of one answer. The harness that sends
 * them is ./fuzz.ts.
 */
import fc from 'fast-check';
import { ERROR_TABLE } from '../../src/errors.js';

/** One route of the server's route table; only these two fields are relied on. */
export interface RouteInfo {
  method: string;
  pattern: string;
}

/** Names and shapes of the live fixture, so that generated requests reach real objects. */
export interface FuzzTarget {
  /** The registered model (READY version `version`) the endpoint serves; protected. */
  model: string;
  version: string;
  /** The serving endpoint; protected. */
  endpoint: string;
  /** Its served entity's name (`<model>-<version>`). */
  servedEntity: string;
  /** A registered model whose only version failed registration: endpoint configs reach the READY check. */
  decoyModel: string;
  /** The model's only input and its columns (dataframe formats). */
  inputName: string;
  columns: readonly string[];
  /** The version's input example: a valid MLflow scoring body. */
  inputExample: unknown;
  adminToken: string;
}

/**
 * How the body is framed on the wire. `length` and `chunked` are valid; the others are malformed
 * on purpose and need a raw socket: Content-Length shorter / longer than the body, both framings,
 * an invalid or a duplicated Content-Length, chunked with a garbage chunk size.
 */
export const FRAMINGS = ['length', 'chunked', 'length-short', 'length-long', 'length-and-chunked', 'length-invalid', 'length-duplicate', 'chunked-invalid'] as const;
export type Framing = (typeof FRAMINGS)[number];

/** One generated request, exactly as it goes on the wire (plus the route it was derived from). */
export interface FuzzCase {
  /** "METHOD /pattern" of the route it was derived from, or "(no route)". */
  route: string;
  method: string;
  /** The request-target as sent (path and query, possibly malformed). */
  target: string;
  /** In order; may hold duplicates. Content-Length and Transfer-Encoding come from `framing`. */
  headers: Array<[string, string]>;
  framing: Framing;
  body: Uint8Array;
}

const utf8 = (s: string): Uint8Array => Buffer.from(s, 'utf8');

/** Percent-encodes every byte of the UTF-8 encoding except the unreserved characters (lone surrogates become U+FFFD). */
export function percentEncode(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    out += (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e
      ? String.fromCharCode(b)
      : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Corpus
// ---------------------------------------------------------------------------------------------

/** Path segments inserted as they are: traversal, encoded traversal, NUL, bad percent-encoding, overlong UTF-8, long. */
const HOSTILE_SEGMENTS = [
  '..', '.', '%2e%2e', '%2e%2e%2f', '..%2f..%2f..%2fetc%2fpasswd', '%2F', '%00', 'a%00b', '%', '%zz', '%E0%A4%A', '%C0%AE%C0%AE',
  '%FF%FE', '%20', '+', ';x=1', '~', '*', '%5c..%5c', '%25', '%252e%252e', 'a'.repeat(300), 'a'.repeat(20_000),
];
/** Characters no valid request line holds (they go over a raw socket): unicode, space, NUL, CR LF (request splitting), quotes. */
const RAW_SEGMENTS = ['😀', 'Ω', 'a b', '\u0000', '"x"', '<x>', '\\', 'a\r\nx-injected: 1', '\t', '\u00ff'];
const QUERY_KEYS = ['name', 'version', 'alias', 'key', 'value', 'filter', 'max_results', 'page_token', 'order_by', 'path', 'description', 'source', 'run_id'];
const FILTERS = [
  "name LIKE 'fuzz%'", "name = 'x' OR 1=1 --", "name = '", "name ILIKE '%'", "tags.`k` = 'v'", "run_id = ''", "name = 'a' AND name != 'b' AND",
  "name = 'x'; DROP TABLE registered_models; --", "name LIKE '%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%'",
];
/**
 * `source` values the fuzzer may register from: none of them names an existing file, so no fuzzed
 * registration can copy files of this machine into the data directory nor make a READY version
 * (see {@link exclusionReason}). Malformed URIs included on purpose.
 */
export const SAFE_SOURCES = [
  '', ' ', '/nonexistent-ferry-fuzz/model.onnx', 'file:///nonexistent-ferry-fuzz/model.onnx', 'file://', 'file://%zz', 'file:///%E0%A4%A',
  'file://host/nonexistent-ferry-fuzz', 'mlflow-artifacts:/fuzz/model.onnx', 'mlflow-artifacts:/../etc/passwd', 'mlflow-artifacts://h/fuzz',
  'mlflow-artifacts:', 's3://bucket/model', 'http://127.0.0.1:1/model', 'runs:/abc/model', 'models:/x/1', 'C:\\nonexistent', '\u0000',
];
/** Numeric edge cases as JSON text (some are not valid JSON numbers on purpose). */
const NUMBER_TOKENS = [
  '1e400', '-1e400', '123456789012345678901234567890', '"NaN"', '"Infinity"', '"-Infinity"', '-0', '0.1e-400', '"1"', 'true', 'null',
  '1E2', '-1.7976931348623157e308', '9007199254740993', '3.4028236e38', '[]', '{}', '"' + '9'.repeat(400) + '"', 'NaN', '01', '.5', '+1',
];
const CONTENT_TYPES = [
  'application/json', 'application/json; charset=utf-8', 'application/json; charset=utf-16', 'text/plain', 'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x', 'application/octet-stream', 'application/json;;;', '*/*', '', 'application/json, text/html',
];
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];
/** Valid tokens no route uses, and methods Node's parser does not know. */
const OTHER_METHODS = ['TRACE', 'PROPFIND', 'PURGE', 'M-SEARCH', 'CONNECT', 'FOO', 'GETT', 'SEARCH', 'QUERY'];

function realNames(t: FuzzTarget): string[] {
  return [t.model, t.endpoint, t.servedEntity, t.decoyModel, t.version, '2', '0', '-1', '1.5', '1e3', '99999999999999999999', 'latest', 'champion', 'fuzz-missing'];
}

// ---------------------------------------------------------------------------------------------
// Valid request shapes, by route
// ---------------------------------------------------------------------------------------------

/**
 * Valid bodies (or query parameters, for GET and DELETE routes) for a route, from its pattern;
 * [] for a route this table does not know (it still gets the generic bodies). Endpoint configs
 * name the decoy model, never the served one: see {@link exclusionReason}.
 */
export function shapesFor(route: RouteInfo, t: FuzzTarget): Array<Record<string, unknown>> {
  const p = route.pattern;
  const row = [5.1, 3.5, 1.4, 0.2];
  const named = { name: t.model };
  const version = { name: t.model, version: t.version };
  const served = { entity_name: t.decoyModel, entity_version: '1' };
  const config = { served_entities: [served], traffic_config: { routes: [{ served_model_name: `${t.decoyModel}-1`, traffic_percentage: 100 }] } };
  const table: Array<[string, () => Array<Record<string, unknown>>]> = [
    ['/invocations', () => [
      ...(typeof t.inputExample === 'object' && t.inputExample !== null ? [t.inputExample as Record<string, unknown>] : []),
      { dataframe_split: { columns: [...t.columns], data: [row, row] } },
      { dataframe_split: { index: [0], data: [row] } },
      { dataframe_records: [Object.fromEntries(t.columns.map((c, i) => [c, row[i]]))] },
      { instances: [row] },
      { instances: [{ [t.inputName]: row }] },
      { inputs: [row, row] },
      { inputs: { [t.inputName]: [row] }, params: { top_k: 1 } },
    ]],
    ['/infer', () => [
      { inputs: [{ name: t.inputName, shape: [1, 4], datatype: 'FP32', data: row }] },
      { id: 'r1', inputs: [{ name: t.inputName, shape: [2, 4], datatype: 'FP32', data: [row, row] }], outputs: [{ name: 'label' }], parameters: {} },
      { inputs: [{ name: t.inputName, shape: [1, 4], datatype: 'FP64', data: row, parameters: { binary_data_size: 16 } }] },
    ]],
    ['/config/cancel', () => [{}]],
    ['/config', () => [config, { ...config, rollout: { canary_steps: [{ traffic_percentage: 10, duration_ms: 1000 }] }, request_timeout_ms: 1000 }]],
    ['/ai-gateway', () => [{ fallback_config: { enabled: true } }]],
    ['/serving-endpoints', () => [{ name: 'fuzz-new', config, tags: [{ key: 'k', value: 'v' }], description: 'd' }]],
    ['/registered-models/create', () => [{ name: 'fuzz-new', description: 'd', tags: [{ key: 'k', value: 'v' }] }]],
    ['/registered-models/update', () => [{ ...named, description: 'd' }]],
    ['/registered-models/search', () => [{ filter: FILTERS[0], max_results: 10, order_by: ['name ASC'] }, { page_token: 'abc', max_results: '1000' }]],
    ['/model-versions/search', () => [{ filter: `name = '${t.model}'`, max_results: 10 }]],
    ['/registered-models/set-tag', () => [{ ...named, key: 'k', value: 'v' }]],
    ['/registered-models/delete-tag', () => [{ ...named, key: 'k' }]],
    ['/registered-models/alias', () => [{ ...named, alias: 'champion', version: t.version }]],
    ['/registered-models/', () => [named]],
    ['/model-versions/create', () => SAFE_SOURCES.slice(0, 4).map((source) => ({ ...named, source, description: 'd', tags: [] }))],
    ['/model-versions/update', () => [{ ...version, description: 'd' }]],
    ['/model-versions/set-tag', () => [{ ...version, key: 'k', value: 'v' }]],
    ['/model-versions/delete-tag', () => [{ ...version, key: 'k' }]],
    ['/model-versions/', () => [version]],
    ['/mlflow-artifacts/artifacts', () => [{ path: 'fuzz' }]],
  ];
  for (const [suffix, shapes] of table) if (p.endsWith(suffix) || (suffix.endsWith('/') && p.includes(suffix))) return shapes();
  return [];
}

// ---------------------------------------------------------------------------------------------
// JSON mutation
// ---------------------------------------------------------------------------------------------

const MUTATION_OPS = ['replace', 'delete', 'insert', 'wrap', 'stringify', 'duplicate'] as const;
interface Mutation {
  op: (typeof MUTATION_OPS)[number];
  /** Which node (index into a pre-order walk, modulo the node count). */
  at: number;
  value: unknown;
  key: string;
}

const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  {
    weight: 2,
    arbitrary: fc.constantFrom<unknown>(null, '', 'NaN', 'Infinity', 1e308, -1, 0, -0, 2 ** 53 + 1, 1.5, [], {}, [[]], [[[]]], true, 'x'.repeat(2000),
      '\u0000', '\ud800', 'FP32', 'BYTES', 'INT64', [-1, 4], [0], [1, 1e9], JSON.parse('{"__proto__":{"polluted":1}}')),
  },
);

const mutation: fc.Arbitrary<Mutation> = fc.record({
  op: fc.constantFrom(...MUTATION_OPS),
  at: fc.nat(),
  value: hostileValue,
  key: fc.oneof(fc.constantFrom('name', 'data', 'shape', 'datatype', 'columns', 'inputs', '__proto__', 'constructor', ''), fc.string({ maxLength: 8 })),
});

/** Applies `m` to a copy of `root`. Nodes are numbered in pre-order; one past the last is the root itself. */
export function mutate(root: unknown, m: Mutation): unknown {
  const copy = structuredClone(root);
  const slots: Array<[Record<string, unknown> | unknown[], string | number]> = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach((x, i) => { slots.push([v, i]); walk(x); });
    else if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) { slots.push([v as Record<string, unknown>, k]); walk(x); }
  };
  walk(copy);
  const i = m.at % (slots.length + 1);
  const slot = slots[i];
  if (slot === undefined) return m.op === 'wrap' ? [copy] : m.op === 'stringify' ? JSON.stringify(copy) : m.op === 'replace' ? m.value : copy;
  const [parent, key] = slot;
  const get = (): unknown => (parent as Record<string | number, unknown>)[key];
  // defineProperty, not assignment: a key "__proto__" stays an own key (sent as JSON), not the prototype.
  const define = (target: object, k: string | number, v: unknown): void => { Object.defineProperty(target, k, { value: v, enumerable: true, writable: true, configurable: true }); };
  const set = (v: unknown): void => define(parent, key, v);
  switch (m.op) {
    case 'replace': set(m.value); break;
    case 'delete': if (Array.isArray(parent)) parent.splice(key as number, 1); else delete parent[key as string]; break;
    case 'insert': if (Array.isArray(parent)) parent.splice(key as number, 0, m.value); else define(parent, m.key, m.value); break;
    case 'wrap': set([get()]); break;
    case 'stringify': set(JSON.stringify(get())); break;
    case 'duplicate': if (Array.isArray(parent)) parent.push(...Array.from({ length: 3 }, () => structuredClone(get()))); else set([get(), get()]); break;
  }
  return copy;
}

// ---------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------

function paramArb(t: FuzzTarget): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...realNames(t)) },
    { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }).map(percentEncode) },
    { weight: 3, arbitrary: fc.constantFrom(...HOSTILE_SEGMENTS) },
    { weight: 1, arbitrary: fc.constantFrom(...RAW_SEGMENTS) },
    { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 12 }) },
  );
}

const DECORATIONS = ['trailing-slash', 'double-slash', 'dot-segment', 'upper-case', 'extra-segment', 'drop-segment', 'fragment', 'absolute-form', 'no-leading-slash', 'asterisk'] as const;

function decorate(path: string, how: (typeof DECORATIONS)[number] | 'none'): string {
  switch (how) {
    case 'none': return path;
    case 'trailing-slash': return path + '/';
    case 'double-slash': return path.replace(/\/(?=[^/]*$)/, '//');
    case 'dot-segment': return path.replace(/^\/([^/]*)/, '/$1/./..');
    case 'upper-case': return path.toUpperCase();
    case 'extra-segment': return path + '/extra';
    case 'drop-segment': return path.replace(/\/[^/]*$/, '') || '/';
    case 'fragment': return path + '#frag';
    case 'absolute-form': return 'http://127.0.0.1' + path;
    case 'no-leading-slash': return path.slice(1);
    case 'asterisk': return '*';
  }
}

/** A concrete path for `pattern`: each `:param` and the `*rest` filled, sometimes decorated. */
function pathArb(pattern: string, t: FuzzTarget): fc.Arbitrary<string> {
  const segments = pattern.split('/').filter((s) => s !== '');
  const params = segments.filter((s) => s.startsWith(':') || s.startsWith('*')).length;
  return fc.tuple(
    fc.array(paramArb(t), { minLength: params, maxLength: params }),
    fc.array(paramArb(t), { minLength: 1, maxLength: 3 }),
    fc.oneof({ weight: 12, arbitrary: fc.constant('none' as const) }, { weight: 1, arbitrary: fc.constantFrom(...DECORATIONS) }),
  ).map(([values, rest, how]) => {
    let i = 0;
    const filled = segments.map((s) => (s.startsWith('*') ? [values[i++], ...rest.slice(1)].join('/') : s.startsWith(':') ? values[i++] : s));
    return decorate('/' + filled.join('/'), how);
  });
}

function queryValueArb(t: FuzzTarget): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...realNames(t)).map(percentEncode) },
    { weight: 2, arbitrary: fc.constantFrom(...FILTERS, ...SAFE_SOURCES).map(percentEncode) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }).map(percentEncode) },
    { weight: 1, arbitrary: fc.constantFrom(...HOSTILE_SEGMENTS, '', '=', '&', '%26', '+%2B') },
  );
}

/** A query string: none, random keys and values, a route's shape as parameters (mutated), or raw garbage. */
function queryArb(shapes: Array<Record<string, unknown>>, t: FuzzTarget): fc.Arbitrary<string> {
  const key = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...QUERY_KEYS) }, { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 8 }).map(percentEncode) });
  const pairs = fc.array(fc.tuple(key, queryValueArb(t)), { maxLength: 4 });
  const join = (ps: Array<[string, string]>): string => (ps.length === 0 ? '' : '?' + ps.map(([k, v]) => `${k}=${v}`).join('&'));
  const options: Array<fc.WeightedArbitrary<string>> = [
    { weight: 4, arbitrary: fc.constant('') },
    { weight: 3, arbitrary: pairs.map(join) },
    { weight: 1, arbitrary: fc.constantFrom('?', '?&&', '?=', '?a', '?%', '?name=%zz', '?name=%E0%A4%A', '?' + 'a=b&'.repeat(3000), '?name=' + 'x'.repeat(9000), '??', '?#') },
  ];
  if (shapes.length > 0) {
    const fromShape = fc.tuple(fc.constantFrom(...shapes), fc.array(mutation, { maxLength: 2 }), pairs).map(([shape, ms, extra]) => {
      const v = ms.reduce<unknown>((acc, m) => mutate(acc, m), shape);
      const own: Array<[string, string]> = typeof v === 'object' && v !== null && !Array.isArray(v)
        ? Object.entries(v).flatMap(([k, x]) => (Array.isArray(x) ? x : [x]).map((y): [string, string] => [percentEncode(k), percentEncode(typeof y === 'string' ? y : JSON.stringify(y) ?? '')]))
        : [];
      return join([...own, ...extra.slice(0, 1)]);
    });
    options.push({ weight: 4, arbitrary: fromShape });
  }
  return fc.oneof(...options);
}

function methodArb(route: RouteInfo): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 14, arbitrary: fc.constant(route.method) },
    { weight: 3, arbitrary: fc.constantFrom(...METHODS) },
    { weight: 1, arbitrary: fc.constantFrom(...OTHER_METHODS) },
    { weight: 1, arbitrary: fc.constant(route.method.toLowerCase()) },
  );
}

function headersArb(t: FuzzTarget): fc.Arbitrary<Array<[string, string]>> {
  const admin = `Bearer ${t.adminToken}`;
  const authorization = fc.oneof(
    { weight: 24, arbitrary: fc.constant<string | undefined>(admin) },
    { weight: 1, arbitrary: fc.constant<string | undefined>(undefined) },
    {
      weight: 2,
      arbitrary: fc.constantFrom<string | undefined>('Bearer', 'Bearer ', 'Basic YWRtaW46YWRtaW4=', `bearer ${t.adminToken}`, `Bearer ${t.adminToken} extra`,
        `Bearer  ${t.adminToken}`, `Bearer ${t.adminToken}x`, `Bearer ${t.adminToken.slice(0, -1)}`, 'Bearer ferry_' + 'A'.repeat(43),
        'Bearer ferry_expired_0000000000000000000000000000000000', 'Bearer ' + 'x'.repeat(9000), `Bearer ${t.adminToken}\u00e9`, 'Token abc', ''),
    },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }).map((s) => `Bearer ${s}`) },
  );
  const contentType = fc.oneof(
    { weight: 3, arbitrary: fc.constant<string | undefined>('application/json') },
    { weight: 1, arbitrary: fc.constant<string | undefined>(undefined) },
    { weight: 1, arbitrary: fc.constantFrom<string | undefined>(...CONTENT_TYPES) },
  );
  const extra = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.constantFrom<[string, string]>(['accept', '*/*'], ['accept', 'text/html;q=0.1, \u00ff'], ['content-encoding', 'gzip'], ['expect', '100-continue'],
        ['connection', 'close'], ['connection', 'upgrade'], ['upgrade', 'websocket'], ['x-forwarded-for', '127.0.0.1, ::1, garbage'],
        ['x-request-id', 'r'.repeat(500)], ['host', 'evil.example:99999'], ['authorization', 'Bearer garbage'], ['content-type', 'text/plain'],
        ['served-model-name', 'x'], ['x-http-method-override', 'DELETE'], ['cookie', 'a=b; ' + 'c=d; '.repeat(100)], ['accept-encoding', 'gzip, br']),
    },
    { weight: 2, arbitrary: fc.tuple(fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/), fc.string({ maxLength: 40 })) },
    { weight: 1, arbitrary: fc.tuple(fc.string({ minLength: 1, maxLength: 10 }), fc.string({ unit: 'binary', maxLength: 20 })) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 40_000 }).map((n): [string, string] => ['x-big', 'a'.repeat(n)]) },
  );
  return fc.tuple(authorization, contentType, fc.array(extra, { maxLength: 3 })).map(([a, ct, more]) => [
    ...(a === undefined ? [] : [['authorization', a] as [string, string]]),
    ...(ct === undefined ? [] : [['content-type', ct] as [string, string]]),
    ...more,
  ]);
}

/** Bodies: valid shapes of the route mutated, then garbage of every kind. */
function bodyArb(shapes: Array<Record<string, unknown>>): fc.Arbitrary<Uint8Array> {
  const options: Array<fc.WeightedArbitrary<Uint8Array>> = [
    { weight: 2, arbitrary: fc.constant(new Uint8Array(0)) },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => utf8(JSON.stringify(v))) },
    { weight: 1, arbitrary: fc.json({ maxDepth: 3 }).map(utf8) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2048 }) },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 8 }), fc.constantFrom([0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]))
        .map(([junk, bad]) => Buffer.concat([utf8('{"name":"'), Buffer.from(bad), Buffer.from(junk), utf8('"}')])),
    },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.constantFrom(50, 1000, 20_000), fc.constantFrom('[', '{"a":', '{"inputs":[')).map(([n, open]) => {
        const close = open === '[' ? ']' : open === '{"a":' ? '}' : ']}';
        return utf8(open.repeat(n) + '1' + close.repeat(n));
      }),
    },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.array(fc.constantFrom(...NUMBER_TOKENS), { minLength: 1, maxLength: 6 }), fc.constantFrom('instances', 'inputs', 'v2'))
        .map(([tokens, key]) => utf8(key === 'v2'
          ? `{"inputs":[{"name":"x","shape":[1,${tokens.length}],"datatype":"FP32","data":[${tokens.join(',')}]}]}`
          : `{"${key}":[[${tokens.join(',')}]]}`)),
    },
    { weight: 1, arbitrary: fc.constantFrom(utf8('{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}}}'), utf8('null'), utf8('"str"'), utf8('[]'), utf8('{'), utf8('\ufeff{}')) },
  ];
  if (shapes.length > 0) {
    options.push({
      weight: 8,
      arbitrary: fc.tuple(fc.constantFrom(...shapes), fc.array(mutation, { maxLength: 3 })).map(([shape, ms]) => utf8(JSON.stringify(ms.reduce<unknown>((acc, m) => mutate(acc, m), shape)) ?? '')),
    });
  }
  return fc.oneof(...options);
}

function framingArb(): fc.Arbitrary<Framing> {
  return fc.oneof(
    { weight: 16, arbitrary: fc.constant<Framing>('length') },
    { weight: 2, arbitrary: fc.constant<Framing>('chunked') },
    { weight: 1, arbitrary: fc.constantFrom<Framing>(...FRAMINGS.slice(2)) },
  );
}

/** Requests derived from `route`. */
export function caseArb(route: RouteInfo, t: FuzzTarget): fc.Arbitrary<FuzzCase> {
  const shapes = shapesFor(route, t);
  return fc.record({
    method: methodArb(route),
    path: pathArb(route.pattern, t),
    query: queryArb(shapes, t),
    headers: headersArb(t),
    framing: framingArb(),
    body: bodyArb(shapes),
  }).map(({ method, path, query, headers, framing, body }) => ({ route: `${route.method} ${route.pattern}`, method, target: path + query, headers, framing, body }));
}

/**
 * Every request the fuzzer sends: one route of `routes` drawn uniformly (so a route added later is
 * fuzzed as often as the others), or, one time in 20, a path that matches no route.
 */
export function requestArb(routes: readonly RouteInfo[], t: FuzzTarget): fc.Arbitrary<FuzzCase> {
  const unrouted: RouteInfo = { method: 'GET', pattern: '/:a/:b' };
  // oneof over arbitraries built once: `chain` would rebuild a route's arbitraries for every case.
  return fc.oneof(
    { weight: 19, arbitrary: fc.oneof(...routes.map((r) => caseArb(r, t))) },
    { weight: 1, arbitrary: caseArb(unrouted, t).map((c) => ({ ...c, route: '(no route)' })) },
  ).filter((c) => exclusionReason(c, t) === undefined);
}

// ---------------------------------------------------------------------------------------------
// The guard
// ---------------------------------------------------------------------------------------------

/** The request-target as the server could read it, lower-cased: percent-decoded once, "+" as space. */
function readableTarget(c: FuzzCase): string {
  return c.target.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))).replace(/\+/g, ' ').toLowerCase();
}

/** The body as the server could read it, lower-cased: JSON escapes undone. */
function readableBody(c: FuzzCase): string {
  const text = Buffer.from(c.body).toString('utf8');
  try {
    return JSON.stringify(JSON.parse(text)).toLowerCase();
  } catch {
    return text.toLowerCase(); // not JSON: the server reads no names out of it
  }
}

/**
 * Why a generated request is not sent, or undefined when it is. Excluded, because they would change
 * the world the later requests run in (they are covered by the endpoint and registry tests):
 * - a DELETE that names the fixture model, its decoy or the fixture endpoint anywhere (path, query,
 *   body): it would delete the objects the data-plane cases need;
 * - a write under /api/2.0/serving-endpoints that names the served model: the only READY version is
 *   the fixture's, so only such a body can be a valid config, which would start real replicas
 *   (an update would also replace the fixture's replica, whose pid the run checks);
 * - a model-version registration whose `source` (query or body) is not one of {@link SAFE_SOURCES}:
 *   a path on this machine would be copied into the data directory (`/`, `..`, the repository).
 * Names are matched case-insensitively after decoding, so an encoded or re-cased name is excluded too.
 */
export function exclusionReason(c: FuzzCase, t: FuzzTarget): string | undefined {
  const target = readableTarget(c);
  const method = c.method.toUpperCase();
  const names = (list: string[]): boolean => {
    const text = target + '\n' + readableBody(c);
    return list.some((n) => text.includes(n.toLowerCase()));
  };
  if (method === 'DELETE' && names([t.model, t.decoyModel, t.endpoint])) return 'deletes a fixture object';
  if (target.includes('/api/2.0/serving-endpoints') && method !== 'GET' && method !== 'HEAD' && names([t.model])) {
    return 'could be a valid endpoint config (starts replicas)';
  }
  if (target.includes('model-versions/create')) {
    const q = c.target.indexOf('?');
    const sources: unknown[] = q === -1 ? [] : new URLSearchParams(c.target.slice(q + 1).split('#')[0]).getAll('source');
    try {
      const parsed = JSON.parse(Buffer.from(c.body).toString('utf8')) as unknown;
      if (typeof parsed === 'object' && parsed !== null && 'source' in parsed) sources.push(parsed.source);
    } catch {
      // not JSON: no source in the body
    }
    if (sources.some((s) => typeof s === 'string' && !SAFE_SOURCES.includes(s))) return 'registers from a path of this machine';
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The judge
// ---------------------------------------------------------------------------------------------

/** What came back for one request. */
export type Outcome =
  | { kind: 'answer'; status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }
  | { kind: 'closed'; error: string }
  /** `stage`: how far the exchange got (connecting, sending, waiting for the answer, reading its body). */
  | { kind: 'timeout'; stage: string };

/**
 * The problem with one answer, or undefined when it is acceptable: no 5xx, every error body in the
 * shared `{"error_code","message"}` shape with the status the error table gives its code, JSON
 * bodies that parse. A connection closed without an answer is acceptable only where `mayClose`:
 * requests malformed on purpose (sent over a raw socket), and requests whose head is over the
 * server's header limit (it answers 431 and closes while the client may still be writing, so the
 * client can see a reset instead of the answer).
 *
 * Node's parser answers some malformed requests itself: no body, `Connection: close`. Those are
 * accepted as 4xx; a 501/505 from it (unknown method, HTTP version) would still count as a 5xx.
 */
export function judge(c: FuzzCase, o: Outcome, mayClose: boolean): string | undefined {
  if (o.kind === 'timeout') return `no answer before the timeout (${o.stage})`;
  if (o.kind === 'closed') return mayClose ? undefined : `connection closed without an answer (${o.error})`;
  if (o.status >= 500) return `status ${o.status}: ${o.body.toString('utf8').slice(0, 300)}`;
  const head = c.method.toUpperCase() === 'HEAD';
  const isJson = /^application\/json/.test(String(o.headers['content-type'] ?? ''));
  if (o.status >= 400) {
    // Errors from Node's parser (400, 408, 431) carry the shared body too (src/server/listen.ts).
    if (o.body.length === 0) return head ? undefined : `status ${o.status} without an error body`;
    let parsed: unknown;
    try {
      parsed = JSON.parse(o.body.toString('utf8'));
    } catch {
      return `status ${o.status} with a body that is not JSON: ${o.body.toString('utf8').slice(0, 200)}`;
    }
    // The Open Inference Protocol's paths (/v2, /v2/...) answer {"error": "<message>"} and nothing
    // else; only the HTTP parser's refusals, which come before any route (no x-request-id), keep
    // the shared shape there.
    const path = c.target.split('?')[0] ?? '';
    if (path === '/v2' || path.startsWith('/v2/')) {
      const v2 = parsed as { error?: unknown };
      if (typeof v2 === 'object' && v2 !== null && typeof v2.error === 'string' && Object.keys(v2).length === 1) {
        return isJson ? undefined : `error body with content-type ${String(o.headers['content-type'])}`;
      }
      if (o.headers['x-request-id'] !== undefined) return `status ${o.status} with a body not in the OIP v2 error shape: ${o.body.toString('utf8').slice(0, 200)}`;
    }
    // The OpenAI-compatible routes (/v1/...) answer errors in OpenAI's shape, with Ferry's code
    // as `error.code`; everything else in Ferry's shape.
    const openAi = c.target.startsWith('/v1/') ? (parsed as { error?: { message?: unknown; type?: unknown; code?: unknown } }).error : undefined;
    const e = openAi !== undefined && typeof openAi === 'object' && openAi !== null && typeof openAi.type === 'string'
      ? { error_code: openAi.code, message: openAi.message }
      : parsed as { error_code?: unknown; message?: unknown };
    if (typeof e !== 'object' || e === null || typeof e.error_code !== 'string' || typeof e.message !== 'string') {
      return `status ${o.status} with a body not in the shared error shape: ${o.body.toString('utf8').slice(0, 200)}`;
    }
    const entry = (ERROR_TABLE as Record<string, { status: number } | undefined>)[e.error_code];
    if (entry === undefined) return `unknown error_code ${e.error_code}`;
    if (entry.status !== o.status) return `error_code ${e.error_code} (status ${entry.status} in the error table) answered with status ${o.status}`;
    if (!isJson) return `error body with content-type ${String(o.headers['content-type'])}`;
    return undefined;
  }
  if (isJson && !head) {
    try {
      JSON.parse(o.body.toString('utf8'));
    } catch {
      return `status ${o.status}: a JSON content-type with a body that is not JSON`;
    }
  }
  return undefined;
}
