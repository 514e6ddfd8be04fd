/**
 * Telemetry: the Prometheus text writer (checked by a strict parser of the 0.0.4 text format), the
 * series ring buffers under a virtual clock, and, on a real server with real replicas, exact
 * metric values after a scripted sequence of requests, a replica crash, access filtering and the
 * series API.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateToken, hashToken } from '../src/auth/index.js';
import { FerryApiError, FerryClient } from '../src/client/index.js';
import { writeFixtures, writeMlp } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import diagnosticsChannel from 'node:diagnostics_channel';
import { INFERENCE_TABLE_DROP_CHANNEL, type InferenceTableDropEvent } from '../src/inference-tables/index.js';
import {
  Histogram, latencyBucket, rejectReason, SeriesRing, Telemetry, writeExposition, type MetricFamily,
} from '../src/telemetry/index.js';
import {
  ADMIN_TOKEN, registerVersion, replicaPids, request, startTestServer, tempDir, waitFor, waitSettled, writeEvenRowsModel, type HttpResult,
} from './support/index.js';

// ---- a strict parser of the text exposition format 0.0.4 -----------------------------------------

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

interface Parsed {
  /** Sample value by series key: name plus sorted labels, e.g. `x{a="1",b="2"}`. */
  values: Map<string, number>;
  types: Map<string, string>;
  help: Map<string, string>;
}

function seriesKey(name: string, labels: Record<string, string>): string {
  const entries = Object.entries(labels).sort(([a], [b]) => a.localeCompare(b));
  return entries.length === 0 ? name : `${name}{${entries.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(',')}}`;
}

/** Reads `{a="x",b="y"}` from `s` at `i` (just after the `{`); returns the labels and the index after `}`. */
function parseLabels(s: string, i: number, line: string): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  for (;;) {
    if (s[i] === '}') return [labels, i + 1];
    const eq = s.indexOf('=', i);
    if (eq < 0) throw new Error(`no '=' in labels: ${line}`);
    const name = s.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`bad label name ${JSON.stringify(name)}: ${line}`);
    if (name in labels) throw new Error(`label ${name} twice: ${line}`);
    if (s[eq + 1] !== '"') throw new Error(`label value not quoted: ${line}`);
    let value = '';
    let j = eq + 2;
    for (; j < s.length && s[j] !== '"'; j++) {
      if (s[j] === '\n') throw new Error(`raw line feed in a label value: ${line}`);
      if (s[j] !== '\\') {
        value += s[j];
        continue;
      }
      const esc = s[++j];
      if (esc === '\\') value += '\\';
      else if (esc === '"') value += '"';
      else if (esc === 'n') value += '\n';
      else throw new Error(`bad escape \\${String(esc)} in a label value: ${line}`);
    }
    if (s[j] !== '"') throw new Error(`unterminated label value: ${line}`);
    labels[name] = value;
    i = j + 1;
    if (s[i] === ',') i++;
    else if (s[i] !== '}') throw new Error(`expected ',' or '}' after a label: ${line}`);
  }
}

function parseValue(v: string, line: string): number {
  if (v === '+Inf') return Infinity;
  if (v === '-Inf') return -Infinity;
  if (v === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v)) throw new Error(`bad value ${JSON.stringify(v)}: ${line}`);
  return Number(v);
}

/**
 * Parses the whole text, failing on anything outside the format: each family's HELP and TYPE at
 * most once and before its samples, samples of a family together, no series twice, histogram
 * buckets cumulative and ending at +Inf equal to `_count`, with `_sum`.
 */
function parseExposition(text: string): Parsed {
  assert.ok(text === '' || text.endsWith('\n'), 'the text ends with a line feed');
  const out: Parsed = { values: new Map(), types: new Map(), help: new Map() };
  const seenFamilies = new Set<string>();
  let current: string | undefined;
  const familyOf = (name: string): string => {
    for (const suffix of ['_bucket', '_sum', '_count']) {
      const base = name.slice(0, -suffix.length);
      if (name.endsWith(suffix) && out.types.get(base) === 'histogram') return base;
    }
    return name;
  };
  const enter = (family: string, line: string): void => {
    if (current === family) return;
    if (seenFamilies.has(family)) throw new Error(`family ${family} is not contiguous: ${line}`);
    seenFamilies.add(family);
    current = family;
  };
  const buckets = new Map<string, Array<[number, number]>>();
  for (const line of text.split('\n').slice(0, -1)) {
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
      if (!m) {
        if (/^# (HELP|TYPE)/.test(line)) throw new Error(`bad ${line}`);
        continue; // a comment
      }
      const [, kind, name = '', rest = ''] = m;
      if (!METRIC_NAME.test(name)) throw new Error(`bad metric name: ${line}`);
      enter(name, line);
      if (kind === 'HELP') {
        if (out.help.has(name)) throw new Error(`HELP twice: ${line}`);
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ''))) throw new Error(`bad escape in HELP: ${line}`);
        out.help.set(name, rest);
      } else {
        if (out.types.has(name)) throw new Error(`TYPE twice: ${line}`);
        if (!TYPES.has(rest)) throw new Error(`unknown type: ${line}`);
        if ([...out.values.keys()].some((k) => familyOf(k.split('{')[0] ?? '') === name)) throw new Error(`TYPE after samples: ${line}`);
        out.types.set(name, rest);
      }
      continue;
    }
    const nameEnd = line.search(/[{ ]/);
    if (nameEnd <= 0) throw new Error(`bad sample line: ${line}`);
    const name = line.slice(0, nameEnd);
    if (!METRIC_NAME.test(name)) throw new Error(`bad metric name: ${line}`);
    let labels: Record<string, string> = {};
    let i = nameEnd;
    if (line[i] === '{') [labels, i] = parseLabels(line, i + 1, line);
    if (line[i] !== ' ') throw new Error(`no space before the value: ${line}`);
    const parts = line.slice(i + 1).split(' ');
    if (parts.length > 2 || (parts.length === 2 && !/^-?\d+$/.test(parts[1] ?? ''))) throw new Error(`bad value or timestamp: ${line}`);
    const value = parseValue(parts[0] ?? '', line);
    const family = familyOf(name);
    enter(family, line);
    const key = seriesKey(name, labels);
    if (out.values.has(key)) throw new Error(`duplicate series ${key}`);
    out.values.set(key, value);
    if (name.endsWith('_bucket') && family !== name) {
      const { le, ...rest } = labels;
      if (le === undefined) throw new Error(`bucket without le: ${line}`);
      const k = seriesKey(family, rest);
      buckets.set(k, [...(buckets.get(k) ?? []), [parseValue(le, line), value]]);
    }
  }
  for (const [k, list] of buckets) {
    for (let j = 1; j < list.length; j++) {
      const [prevLe = 0, prevCount = 0] = list[j - 1] ?? [];
      const [le = 0, count = 0] = list[j] ?? [];
      if (!(le > prevLe) || count < prevCount) throw new Error(`buckets of ${k} not increasing and cumulative`);
    }
    const [lastLe, lastCount] = list[list.length - 1] ?? [];
    if (lastLe !== Infinity) throw new Error(`buckets of ${k} do not end at +Inf`);
    const name = k.split('{')[0] ?? '';
    const labels = k.slice(name.length);
    if (out.values.get(`${name}_count${labels}`) !== lastCount) throw new Error(`+Inf bucket of ${k} is not its _count`);
    if (!out.values.has(`${name}_sum${labels}`)) throw new Error(`${k} has no _sum`);
  }
  return out;
}

/** A sample's value, or undefined when absent. */
const sample = (p: Parsed, name: string, labels: Record<string, string> = {}): number | undefined => p.values.get(seriesKey(name, labels));

// ---- unit tests ------------------------------------------------------------------------------------

describe('exposition writer', () => {
  test('escapes help and label values; histograms print cumulative buckets, _sum and _count', () => {
    const h = new Histogram([0.1, 1]);
    for (const v of [0.05, 0.5, 0.5, 5]) h.observe(v);
    const nasty = 'a"b\\c\nd';
    const families: MetricFamily[] = [
      { name: 'x_total', type: 'counter', help: 'Help with \\ and\nnewline.', samples: [{ labels: { endpoint: nasty, code: '200' }, value: 3 }, { labels: { endpoint: 'plain', code: '200' }, value: 1 }] },
      { name: 'g', type: 'gauge', help: 'A gauge.', samples: [{ labels: {}, value: 1e-7 }] },
      { name: 'empty', type: 'gauge', help: 'No samples yet.', samples: [] },
      { name: 'h_seconds', type: 'histogram', help: 'A histogram.', bounds: [0.1, 1], samples: [{ labels: { endpoint: nasty }, histogram: h.snapshot() }] },
    ];
    const text = writeExposition(families);
    assert.match(text, /^# HELP x_total Help with \\\\ and\\nnewline\.\n# TYPE x_total counter\n/);
    assert.ok(text.includes('x_total{endpoint="a\\"b\\\\c\\nd",code="200"} 3\n'), text);
    const p = parseExposition(text);
    assert.equal(sample(p, 'x_total', { endpoint: nasty, code: '200' }), 3, 'the label value reads back as written');
    assert.equal(sample(p, 'g'), 1e-7);
    assert.equal(p.types.get('empty'), 'gauge');
    assert.deepEqual(
      ['0.1', '1', '+Inf'].map((le) => sample(p, 'h_seconds_bucket', { endpoint: nasty, le })),
      [1, 3, 4],
      'buckets are cumulative: 0.05 ≤ 0.1; 0.5, 0.5 ≤ 1; 5 only in +Inf',
    );
    assert.equal(sample(p, 'h_seconds_sum', { endpoint: nasty }), 6.05);
    assert.equal(sample(p, 'h_seconds_count', { endpoint: nasty }), 4);
  });

  test('the parser refuses what the format does not allow (so the checks above can fail)', () => {
    const bad = [
      '# TYPE a counter\na 1\na 2\n', // duplicate series
      '# TYPE a counter\na{x="1} 1\n', // unterminated label value
      '# TYPE a counter\na{x="\\t"} 1\n', // bad escape
      '# TYPE a counter\na one\n', // bad value
      '# TYPE a counter\n# TYPE a gauge\n', // TYPE twice
      '# TYPE a counter\na 1\n# TYPE b gauge\nb 1\na{x="2"} 1\n', // family not contiguous
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', // not cumulative
      '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n', // +Inf ≠ _count
      'a 1', // no final line feed
    ];
    for (const text of bad) assert.throws(() => parseExposition(text), Error, JSON.stringify(text));
  });
});

describe('series ring (virtual clock)', () => {
  const T0 = 1_700_000_000_000; // a multiple of 5000: a slot starts here

  test('a slot counts requests, 5xx share, latency percentiles (within 9%) and averaged gauges', () => {
    const ring = new SeriesRing(5000, 720);
    for (let i = 0; i < 10; i++) ring.recordRequest(T0 + 100, 200, 10);
    ring.recordRequest(T0 + 200, 503, 1);
    ring.recordRequest(T0 + 300, 400, 1);
    ring.recordGauges(T0 + 1000, { ready: 1, desired: 2, inFlight: 3, queued: 0 });
    ring.recordGauges(T0 + 2000, { ready: 2, desired: 2, inFlight: 5, queued: 2 });
    const points = ring.points(T0 + 3 * 5000 + 2500, 20_000);
    assert.deepEqual(points.map((p) => p.timestamp_ms), [T0, T0 + 5000, T0 + 10_000, T0 + 15_000]);
    // 10 ms falls in bucket 30 = [9.05, 10.76) ms, reported as its geometric middle 9.87 ms.
    assert.equal(latencyBucket(10), 30);
    assert.deepEqual(points[0], {
      timestamp_ms: T0, qps: 2.4, p50_ms: 9.87, p99_ms: 9.87, error_rate: 1 / 12,
      replicas_ready: 2, replicas_desired: 2, in_flight: 4, queued: 1,
    });
    assert.deepEqual(points[1], {
      timestamp_ms: T0 + 5000, qps: 0, p50_ms: null, p99_ms: null, error_rate: null,
      replicas_ready: null, replicas_desired: null, in_flight: null, queued: null,
    });
  });

  test('percentiles of a mixed slot; the slot in progress counts qps over its elapsed part', () => {
    const ring = new SeriesRing(5000, 720);
    for (let i = 0; i < 98; i++) ring.recordRequest(T0 + 10, 200, 1);
    for (let i = 0; i < 2; i++) ring.recordRequest(T0 + 10, 200, 1000);
    const [p] = ring.points(T0 + 2000, 5000);
    assert.ok(p !== undefined);
    assert.equal(p.qps, 50, '100 requests in the first 2 s of the slot');
    const near = (got: number | null, want: number): void => assert.ok(got !== null && Math.abs(got - want) / want <= 0.091, `${got} vs ${want}`);
    near(p.p50_ms, 1);
    near(p.p99_ms, 1000); // rank 99 of 100 is one of the two slow requests
  });

  test('slots are reused after the ring wraps: an hour later the old data is gone, memory stays bounded', () => {
    const ring = new SeriesRing(5000, 720);
    ring.recordRequest(T0, 200, 5);
    assert.equal(ring.points(T0 + 1000, 5000)[0]?.qps, 1);
    const hourLater = T0 + 720 * 5000;
    ring.recordRequest(hourLater, 500, 5);
    const all = ring.points(hourLater, 3_600_000);
    assert.equal(all.length, 720);
    assert.equal(all[0]?.timestamp_ms, T0 + 5000, 'the window starts after the overwritten slot');
    assert.equal(all.filter((p) => p.qps > 0).length, 1);
    assert.equal(all[719]?.error_rate, 1);
    assert.equal(ring.points(T0 + 1000, 5000)[0]?.qps, 0, 'reading the old time finds the slot holds a newer one');
  });
});

test('inference table drops published by the writer are counted per endpoint and reason', async () => {
  const telemetry = new Telemetry({ now: () => 0, entities: () => [], replicas: () => [], routed: () => true });
  try {
    const publish = (e: InferenceTableDropEvent): void => diagnosticsChannel.channel(INFERENCE_TABLE_DROP_CHANNEL).publish(e);
    publish({ endpoint: 'ep', reason: 'queue_full', rows: 3 });
    publish({ endpoint: 'ep', reason: 'queue_full', rows: 2 });
    publish({ endpoint: 'ep', reason: 'write_failed', rows: 7 });
    const text = await telemetry.exposition(() => true, false);
    assert.match(text, /^ferry_inference_table_dropped_total\{endpoint="ep",reason="queue_full"\} 5$/m);
    assert.match(text, /^ferry_inference_table_dropped_total\{endpoint="ep",reason="write_failed"\} 7$/m);
    parseExposition(text);
  } finally {
    telemetry.close();
  }
});

test('rejection reasons from error codes', () => {
  assert.equal(rejectReason('REQUEST_LIMIT_EXCEEDED', ''), 'rate_limited');
  assert.equal(rejectReason('REQUEST_LIMIT_EXCEEDED', 'linear-1'), 'queue_full');
  assert.equal(rejectReason('TEMPORARILY_UNAVAILABLE', ''), 'no_replica');
  assert.equal(rejectReason('TEMPORARILY_UNAVAILABLE', 'linear-1'), 'queue_timeout');
  assert.equal(rejectReason('DEADLINE_EXCEEDED', 'linear-1'), 'timeout');
  assert.equal(rejectReason('PAYLOAD_TOO_LARGE', ''), 'too_large');
  assert.equal(rejectReason('INVALID_PARAMETER_VALUE', ''), undefined);
  assert.equal(rejectReason(undefined, 'linear-1'), undefined);
});

// ---- a real server -----------------------------------------------------------------------------

describe('metrics of a real server', () => {
  let dir: string;
  let dataDir: string;
  let server: FerryServer;
  const tokens: Record<'nobody' | 'viewer', string> = { nobody: '', viewer: '' };

  const call = (method: string, p: string, json?: unknown, token?: string): Promise<HttpResult> =>
    request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }), ...(token === undefined ? {} : { token }) });
  const metrics = async (token?: string, p = '/metrics'): Promise<Parsed> => {
    const r = await call('GET', p, undefined, token);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    return parseExposition(r.text);
  };
  const create = async (name: string, model: string, extra: Record<string, unknown> = {}): Promise<void> => {
    const r = await call('POST', '/api/2.0/serving-endpoints', { name, config: { served_entities: [{ entity_name: model, entity_version: '1' }], ...extra } });
    assert.equal(r.status, 200, r.text);
    await waitSettled(server.url, name);
    await waitFor(`${name} ready`, async () => ((await call('GET', `/api/2.0/serving-endpoints/${name}`)).json.state.ready === 'READY' ? true : undefined));
  };

  before(async () => {
    dir = await tempDir();
    dataDir = path.join(dir, 'data');
    const fx = await writeFixtures(path.join(dir, 'fixtures'));
    server = await startTestServer(dataDir);
    await registerVersion(server.url, 'linear', fx.linear);
    await writeEvenRowsModel(path.join(dir, 'even'));
    // The bare file, without the directory's input example (which the model refuses).
    await registerVersion(server.url, 'even', path.join(dir, 'even', 'model.onnx'));
    await writeMlp(path.join(dir, 'heavy.onnx'), [256, 2048, 2048, 256]);
    await registerVersion(server.url, 'heavy', path.join(dir, 'heavy.onnx'));
    for (const name of ['nobody', 'viewer'] as const) {
      await server.store.createPrincipal({ name, kind: 'user', admin: false, createdMs: 0, createdBy: 'test' });
      const token = generateToken();
      await server.store.putToken({ id: name, principal: name, hash: hashToken(token), createdMs: 0, expiresMs: undefined, description: '' });
      tokens[name] = token;
    }
    await Promise.all([create('m', 'linear'), create('odd', 'even'), create('slow', 'heavy', { request_timeout_ms: 1 })]);
    // After the create, which gives its creator CAN_MANAGE.
    const grant = await call('PATCH', '/api/2.0/permissions/serving-endpoints/m', { access_control_list: [{ user_name: 'viewer', permission_level: 'CAN_VIEW' }] });
    assert.equal(grant.status, 200, grant.text);
  });

  after(async () => {
    await server.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test('exact values after a scripted sequence: codes, histograms, rejections, replica-side batch sizes and model time, gauges', async () => {
    const ok = (rows: number): Promise<HttpResult> => call('POST', '/serving-endpoints/m/invocations', { inputs: Array.from({ length: rows }, () => [1, 2, 3, 4]) });
    // One at a time, so that each is its own model call.
    for (let i = 0; i < 5; i++) assert.equal((await ok(1)).status, 200);
    assert.equal((await ok(3)).status, 200);
    for (let i = 0; i < 2; i++) assert.equal((await call('POST', '/serving-endpoints/m/invocations', { inputs: [[1, 2, 3]] })).status, 400);
    assert.equal((await call('POST', '/v2/models/m/versions/7/infer', { inputs: [] })).status, 404);
    assert.equal((await call('GET', '/v2/models/m')).status, 200, 'metadata calls are not counted');
    // A model error (odd rows) is a 500 from the replica; 2 rows run fine.
    assert.equal((await call('POST', '/serving-endpoints/odd/invocations', { inputs: [[1, 2, 3, 4]] })).status, 500);
    assert.equal((await call('POST', '/serving-endpoints/odd/invocations', { inputs: [[1, 2, 3, 4], [1, 2, 3, 4]] })).status, 200);
    // 32 rows through 256→2048→2048→256 take several ms: past the 1 ms timeout.
    const rows = Array.from({ length: 32 }, (_, i) => Array.from({ length: 256 }, (_, j) => (i + j) % 7));
    assert.equal((await call('POST', '/serving-endpoints/slow/invocations', { inputs: rows })).status, 504);
    // Rate limit: 2 calls per minute for the endpoint (one more every 30 s); 5 calls in a row get
    // 2 answers and 3 refusals. In a row, not at once: concurrent calls could share a model call.
    assert.equal((await call('PUT', '/api/2.0/serving-endpoints/m/ai-gateway', { rate_limits: [{ calls: 2, renewal_period: 'minute', key: 'endpoint' }] })).status, 200);
    const limited: number[] = [];
    for (let i = 0; i < 5; i++) limited.push((await ok(1)).status);
    assert.deepEqual(limited, [200, 200, 429, 429, 429]);

    // The heavy call finishes in its replica after the gateway gave up; wait for it to be counted.
    const p = await waitFor('the slow model call to finish', async () => {
      const m = await metrics();
      return sample(m, 'ferry_model_duration_seconds_count', { endpoint: 'slow', served_entity: 'heavy-1' }) === 1 ? m : undefined;
    });
    const lin = { endpoint: 'm', served_entity: 'linear-1' };
    const none = { endpoint: 'm', served_entity: '' };
    assert.equal(sample(p, 'ferry_requests_total', { ...lin, code: '200' }), 8);
    assert.equal(sample(p, 'ferry_requests_total', { ...lin, code: '400' }), 2);
    assert.equal(sample(p, 'ferry_requests_total', { ...none, code: '404' }), 1);
    assert.equal(sample(p, 'ferry_requests_total', { ...none, code: '429' }), 3);
    assert.equal(sample(p, 'ferry_requests_total', { endpoint: 'odd', served_entity: 'even-1', code: '500' }), 1);
    assert.equal(sample(p, 'ferry_requests_total', { endpoint: 'slow', served_entity: 'heavy-1', code: '504' }), 1);
    assert.equal(sample(p, 'ferry_request_duration_seconds_count', lin), 10);
    assert.equal(sample(p, 'ferry_request_duration_seconds_count', none), 4);
    assert.equal(sample(p, 'ferry_request_queue_seconds_count', lin), 10);
    assert.equal(sample(p, 'ferry_request_queue_seconds_count', none), undefined, 'refused before an entity: never queued');
    assert.equal(sample(p, 'ferry_requests_rejected_total', { endpoint: 'm', reason: 'rate_limited' }), 3);
    assert.equal(sample(p, 'ferry_requests_rejected_total', { endpoint: 'slow', reason: 'timeout' }), 1);
    assert.equal(sample(p, 'ferry_requests_rejected_total', { endpoint: 'odd', reason: 'timeout' }), undefined);
    // Replica side: 8 successful model calls (7 of 1 row, 1 of 3); the 400s never reached the model.
    assert.equal(sample(p, 'ferry_batch_size_count', lin), 8);
    assert.equal(sample(p, 'ferry_batch_size_sum', lin), 10);
    assert.deepEqual(['1', '2', '4', '+Inf'].map((le) => sample(p, 'ferry_batch_size_bucket', { ...lin, le })), [7, 7, 8, 8]);
    assert.equal(sample(p, 'ferry_model_duration_seconds_count', lin), 8);
    assert.equal(sample(p, 'ferry_model_duration_seconds_count', { endpoint: 'odd', served_entity: 'even-1' }), 2, 'failed model calls count too');
    assert.ok((sample(p, 'ferry_model_duration_seconds_sum', lin) ?? 0) > 0);
    assert.equal(sample(p, 'ferry_replicas', { ...lin, state: 'ready' }), 1);
    assert.equal(sample(p, 'ferry_replicas', { ...lin, state: 'starting' }), 0);
    assert.equal(sample(p, 'ferry_replicas_desired', lin), 1);
    assert.equal(sample(p, 'ferry_requests_in_flight', lin), 0);
    assert.equal(sample(p, 'ferry_requests_queued', lin), 0);
    assert.equal(sample(p, 'ferry_cold_starts_total', lin), 1);
    assert.equal(sample(p, 'ferry_cold_start_duration_seconds_count', lin), 1);
    assert.equal(sample(p, 'ferry_replica_scrape_errors_total', { endpoint: 'm' }), undefined);
    for (const name of ['process_resident_memory_bytes', 'process_cpu_seconds_total', 'process_start_time_seconds', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_used_bytes']) {
      assert.ok(sample(p, name) !== undefined, `admin sees ${name}`);
    }
    for (const [name, type] of p.types) {
      if (type === 'counter') assert.match(name, /_total$/, `counter ${name} ends in _total`);
      assert.ok(p.help.has(name), `${name} has HELP`);
    }
  });

  test('a killed replica is counted as a crash restart; its model-side totals are kept', { timeout: 60_000 }, async () => {
    const odd = { endpoint: 'odd', served_entity: 'even-1' };
    const before = await metrics();
    const calls = sample(before, 'ferry_model_duration_seconds_count', odd) ?? 0;
    assert.ok(calls >= 2, `odd has ${calls} model calls`);
    assert.equal(sample(before, 'ferry_replica_restarts_total', { ...odd, reason: 'crashed' }), undefined);
    const [pid] = await replicaPids(dataDir, 'odd');
    assert.ok(pid !== undefined);
    process.kill(pid, 'SIGKILL');
    const p = await waitFor('the replacement replica', async () => {
      const m = await metrics();
      return sample(m, 'ferry_cold_starts_total', odd) === 2 && sample(m, 'ferry_replicas', { ...odd, state: 'ready' }) === 1 ? m : undefined;
    }, 30_000);
    assert.equal(sample(p, 'ferry_replica_restarts_total', { ...odd, reason: 'crashed' }), 1);
    assert.equal(sample(p, 'ferry_replica_restarts_total', { ...odd, reason: 'oom' }), 0);
    assert.equal(sample(p, 'ferry_model_duration_seconds_count', odd), calls, 'the dead replica\'s last numbers are carried');
  });

  test('access: /metrics shows only viewable endpoints; per-endpoint routes need CAN_VIEW', async () => {
    const nobody = await metrics(tokens.nobody);
    assert.deepEqual([...nobody.values.keys()], [], 'no grants: metric names only, no samples');
    assert.ok(nobody.types.has('ferry_requests_total'));
    const viewer = await metrics(tokens.viewer);
    const endpoints = new Set([...viewer.values.keys()].map((k) => /endpoint="([^"]*)"/.exec(k)?.[1]));
    assert.deepEqual([...endpoints], ['m'], 'CAN_VIEW on m: only m, and no process metrics');
    assert.equal(sample(viewer, 'ferry_requests_total', { endpoint: 'm', served_entity: 'linear-1', code: '200' }), 8);
    const one = await metrics(tokens.viewer, '/api/2.0/serving-endpoints/m/metrics');
    assert.deepEqual(new Set([...one.values.keys()].map((k) => /endpoint="([^"]*)"/.exec(k)?.[1])), new Set(['m']));
    for (const p of ['/api/2.0/serving-endpoints/m/metrics', '/api/2.0/serving-endpoints/m/metrics/series', '/api/2.0/serving-endpoints/odd/metrics']) {
      const r = await call('GET', p, undefined, tokens.nobody);
      assert.equal(r.status, 403, `${p}: ${r.text}`);
      assert.equal(r.json.error_code, 'PERMISSION_DENIED');
    }
    assert.equal((await call('GET', '/api/2.0/serving-endpoints/odd/metrics/series', undefined, tokens.viewer)).status, 403);
    assert.equal((await request({ url: server.url, path: '/metrics', token: null })).status, 401);
    assert.equal((await call('GET', '/api/2.0/serving-endpoints/nope/metrics')).status, 404);
  });

  test('series API: shape, window checks', async () => {
    const r = await call('GET', '/api/2.0/serving-endpoints/odd/metrics/series?window=1m', undefined, undefined);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.endpoint, 'odd');
    assert.equal(r.json.interval_s, 5);
    assert.equal(r.json.points.length, 12);
    const keys = ['timestamp_ms', 'qps', 'p50_ms', 'p99_ms', 'error_rate', 'replicas_ready', 'replicas_desired', 'in_flight', 'queued'];
    for (const point of r.json.points) assert.deepEqual(Object.keys(point), keys);
    assert.deepEqual(Object.keys(r.json.served_entities), ['even-1']);
    assert.equal(r.json.served_entities['even-1'].length, 12);
    const busy = r.json.points.filter((p: { qps: number }) => p.qps > 0);
    assert.ok(busy.length >= 1, JSON.stringify(r.json.points));
    assert.ok(busy.some((p: { error_rate: number }) => p.error_rate > 0), 'the 500 shows as an error');
    assert.equal(r.json.points[11].replicas_ready, 1);
    assert.equal(r.json.points[11].replicas_desired, 1);
    const steps = r.json.points.map((p: { timestamp_ms: number }) => p.timestamp_ms);
    assert.ok(steps.every((t: number, i: number) => i === 0 || t - steps[i - 1] === 5000));

    assert.equal((await call('GET', '/api/2.0/serving-endpoints/odd/metrics/series')).json.points.length, 180, 'default window 15 min');
    for (const w of ['2h', 'abc', '1s']) {
      const bad = await call('GET', `/api/2.0/serving-endpoints/odd/metrics/series?window=${w}`);
      assert.equal(bad.status, 400, bad.text);
      assert.equal(bad.json.error_code, 'INVALID_PARAMETER_VALUE');
      assert.match(bad.json.message, new RegExp(`'window'.*"${w}"|"${w}".*'window'`));
    }
    assert.equal((await call('GET', '/api/2.0/serving-endpoints/nope/metrics/series')).status, 404);

    // The typed client reads the same answer (src/api's MetricsSeries) and passes the window on.
    const client = new FerryClient({ url: server.url, token: ADMIN_TOKEN });
    const typed = await client.metricsSeries('odd', { window: '1m' });
    assert.equal(typed.interval_s, 5);
    assert.equal(typed.points.length, 12);
    assert.deepEqual(Object.keys(typed.served_entities), ['even-1']);
    assert.equal((await client.metricsSeries('odd')).points.length, 180);
    await assert.rejects(client.metricsSeries('odd', { window: '2h' }), (e: unknown) => e instanceof FerryApiError && e.status === 400 && /'window'/.test(e.message));
  });
});
