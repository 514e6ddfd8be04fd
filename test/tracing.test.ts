/**
 * Request ids, W3C trace context, structured logs and OTLP span export, end to end: a server in
 * this process (its log captured) with real replicas, a tiny OTLP/HTTP collector in the test, and
 * the replica's own log read back through the logs API. Unit checks of the pieces first.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { compileServerConfig } from '../src/config/index.js';
import { gatewayRequests, type GatewayRequestEvent } from '../src/gateway/index.js';
import { atLevel, type LogLevel } from '../src/logs/index.js';
import { startServer, type FerryServer } from '../src/server/index.js';
import {
  encodeSpans, formatTraceparent, OtlpExporter, parseTraceparent, requestIdFrom, tracestateFrom, type Span,
} from '../src/tracing/index.js';
import { ADMIN_TOKEN, registerVersion, request, tempDir, waitFor, waitSettled, writeEvenRowsModel, type HttpResult, TEST_GATEWAY_WORKERS } from './support/index.js';

const T = { timeout: 120_000 };
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_ID = '00f067aa0ba902b7';
const GENERATED_ID = /^[0-9a-f]{12}-[0-9a-z]+$/;
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** A span as the collector receives it (OTLP JSON), with its resource's service name. */
interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: Array<{ key: string; value: Record<string, unknown> }>;
  status?: { code: number };
}

const attr = (s: ReceivedSpan, key: string): unknown => {
  const v = s.attributes.find((a) => a.key === key)?.value;
  return v === undefined ? undefined : Object.values(v)[0];
};

/**
 * An OTLP/HTTP collector on a free port. `hang`: it reads each POST and never answers, until
 * `close()` cuts the connections (a slow, then dead, collector).
 */
async function startCollector(opts: { hang?: boolean } = {}): Promise<{ url: string; spans: ReceivedSpan[]; posts: number; close(): Promise<void> }> {
  const state = { spans: [] as ReceivedSpan[], posts: 0 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      assert.equal(req.url, '/v1/traces');
      assert.equal(req.headers['content-type'], 'application/json');
      state.posts++;
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { resourceSpans: Array<{ resource: { attributes: Array<{ key: string; value: { stringValue: string } }> }; scopeSpans: Array<{ spans: ReceivedSpan[] }> }> };
      for (const rs of body.resourceSpans) {
        const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '';
        for (const ss of rs.scopeSpans) for (const s of ss.spans) state.spans.push({ ...s, service });
      }
      if (!opts.hang) res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get spans() { return state.spans; },
    get posts() { return state.posts; },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

describe('pieces', () => {
  test('traceparent: version 00 exactly, lowercase hex, non-zero ids; later versions may add fields', () => {
    assert.deepEqual(parseTraceparent(`00-${TRACE_ID}-${PARENT_ID}-01`), { traceId: TRACE_ID, parentId: PARENT_ID, flags: 1 });
    assert.deepEqual(parseTraceparent(`cc-${TRACE_ID}-${PARENT_ID}-00-what-comes-next`), { traceId: TRACE_ID, parentId: PARENT_ID, flags: 0 });
    for (const bad of [
      `00-${TRACE_ID}-${PARENT_ID}-01-extra`, `ff-${TRACE_ID}-${PARENT_ID}-01`, `00-${TRACE_ID.toUpperCase()}-${PARENT_ID}-01`,
      `00-${'0'.repeat(32)}-${PARENT_ID}-01`, `00-${TRACE_ID}-${'0'.repeat(16)}-01`, `00-${TRACE_ID}-${PARENT_ID}-1`, `00-${TRACE_ID}-${PARENT_ID}`,
      `cc-${TRACE_ID}-${PARENT_ID}-01x`, '', `00-${TRACE_ID}-${PARENT_ID}-01, 00-${TRACE_ID}-${PARENT_ID}-01`,
    ]) assert.equal(parseTraceparent(bad), undefined, bad);
    assert.equal(parseTraceparent(undefined), undefined);
    assert.equal(formatTraceparent(TRACE_ID, PARENT_ID, 1), `00-${TRACE_ID}-${PARENT_ID}-01`);
    assert.equal(formatTraceparent(TRACE_ID, PARENT_ID, 0xab), `00-${TRACE_ID}-${PARENT_ID}-ab`);
  });

  test('request ids: sane client ids are kept, anything else is replaced by a new unique one', () => {
    for (const ok of ['a', 'req-1.2_3:4', 'x'.repeat(128), '3b0d6c7e-1f2a-4c5b-9d8e-7f6a5b4c3d2e']) assert.equal(requestIdFrom(ok), ok);
    const replaced = ['', 'x'.repeat(129), 'has space', 'semi;colon', 'ünï', 'a/b', 'a, b'].map((bad) => requestIdFrom(bad));
    replaced.push(requestIdFrom(undefined), requestIdFrom(['a', 'b']));
    for (const id of replaced) assert.match(id, GENERATED_ID);
    assert.equal(new Set(replaced).size, replaced.length, 'every generated id differs');
    assert.equal(tracestateFrom('congo=t61rcWkgMzE'), 'congo=t61rcWkgMzE');
    assert.equal(tracestateFrom('a=b\nc'), undefined);
    assert.equal(tracestateFrom('k=' + 'v'.repeat(511)), undefined);
  });

  test('otlpEndpoint: an http(s) URL without query; anything else is refused naming the key', () => {
    assert.equal(compileServerConfig({ otlpEndpoint: 'http://127.0.0.1:4318' }).otlpEndpoint, 'http://127.0.0.1:4318');
    assert.equal(compileServerConfig({}).otlpEndpoint, undefined);
    for (const bad of ['127.0.0.1:4318', 'ftp://collector', 'http://c:4318/?x=1', 'not a url']) {
      assert.throws(() => compileServerConfig({ otlpEndpoint: bad }), (err: Error) => err.message.startsWith(`Invalid value ${JSON.stringify(bad)} for 'otlpEndpoint'`), bad);
    }
  });

  test('log levels: a line passes when at or above the configured level', () => {
    const seen: LogLevel[] = [];
    const info = atLevel('info', (level) => seen.push(level));
    for (const l of ['debug', 'info', 'warn', 'error'] as const) info(l, 'x');
    assert.deepEqual(seen, ['info', 'warn', 'error']);
  });

  const span = (i: number, over: Partial<Span> = {}): Span => ({
    service: 'ferry', traceId: TRACE_ID, spanId: `${i}`.padStart(16, '0'), parentSpanId: undefined, name: `s${i}`, kind: 'server',
    startUnixUs: 1_732_600_000_000_000 + i, endUnixUs: 1_732_600_000_001_000 + i, attributes: { 'ferry.endpoint': 'e', n: i, ok: true, ratio: 0.5 }, error: false, ...over,
  });

  test('OTLP JSON: one resource per service, hex ids, nanosecond strings, typed attributes, ERROR status', () => {
    const body = encodeSpans([span(1), span(2, { service: 'ferry-replica', parentSpanId: PARENT_ID, kind: 'internal', error: true })]) as any;
    assert.equal(body.resourceSpans.length, 2);
    assert.deepEqual(body.resourceSpans[0].resource.attributes, [{ key: 'service.name', value: { stringValue: 'ferry' } }]);
    const [root] = body.resourceSpans[0].scopeSpans[0].spans;
    assert.deepEqual(root, {
      traceId: TRACE_ID, spanId: '0000000000000001', name: 's1', kind: 2, startTimeUnixNano: '1732600000000001000', endTimeUnixNano: '1732600000001001000',
      attributes: [
        { key: 'ferry.endpoint', value: { stringValue: 'e' } }, { key: 'n', value: { intValue: '1' } }, { key: 'ok', value: { boolValue: true } },
        { key: 'ratio', value: { doubleValue: 0.5 } },
      ],
    });
    const [child] = body.resourceSpans[1].scopeSpans[0].spans;
    assert.equal(child.parentSpanId, PARENT_ID);
    assert.equal(child.kind, 1);
    assert.deepEqual(child.status, { code: 2 });
  });

  test('OTLP exporter: a slow collector never blocks add(); a full queue and failed POSTs are counted as dropped', T, async () => {
    const collector = await startCollector({ hang: true });
    const log: unknown[] = [];
    const exporter = new OtlpExporter({
      endpoint: collector.url, maxQueuedSpans: 4, maxBatchSpans: 2, flushIntervalMs: 60_000, exportTimeoutMs: 300, log: (...line) => log.push(line),
    });
    try {
      exporter.add(span(1));
      exporter.add(span(2)); // a full batch: its POST starts, and hangs
      await waitFor('the first POST', () => (collector.posts === 1 ? true : undefined));
      for (let i = 3; i <= 8; i++) exporter.add(span(i)); // 4 fit in the queue, 2 do not
      assert.deepEqual(exporter.stats, { exported: 0, dropped: 2 });
      await exporter.close(); // the hung POSTs time out: their spans are lost too
      assert.deepEqual(exporter.stats, { exported: 0, dropped: 8 });
      assert.ok(log.some((l) => JSON.stringify(l).includes('OTLP spans dropped')), JSON.stringify(log));
    } finally {
      await collector.close();
    }
    const live = await startCollector();
    const ok = new OtlpExporter({ endpoint: `${live.url}/`, flushIntervalMs: 60_000 });
    try {
      for (let i = 1; i <= 3; i++) ok.add(span(i));
      await ok.close(); // close exports what is queued
      assert.deepEqual(ok.stats, { exported: 3, dropped: 0 });
      assert.deepEqual(live.spans.map((s) => s.name), ['s1', 's2', 's3']);
    } finally {
      await live.close();
    }
  });
});

/** A server in this process at `logLevel`, its log lines captured, with one endpoint 'even' on the even-rows model. */
async function startTracedServer(dir: string, logLevel: LogLevel, otlpEndpoint: string): Promise<{ server: FerryServer; lines: Array<Record<string, unknown>> }> {
  const lines: Array<Record<string, unknown>> = [];
  const server = await startServer(compileServerConfig({ port: 0, dataDir: path.join(dir, 'data'), logLevel, otlpEndpoint, warmPoolSize: 0 , gatewayWorkers: TEST_GATEWAY_WORKERS }), {
    adminToken: ADMIN_TOKEN, log: (level, msg, fields) => lines.push({ level, msg, ...fields }),
  });
  const model = path.join(dir, 'even');
  await writeEvenRowsModel(model);
  // Two rows: the example the server validates the entity with must succeed; one row fails at run time.
  await fsp.writeFile(path.join(model, 'input_example.json'), JSON.stringify({ inputs: { x: [[1, 2, 3, 4], [5, 6, 7, 8]] } }));
  await registerVersion(server.url, 'even', model);
  const created = await request({
    url: server.url, method: 'POST', path: '/api/2.0/serving-endpoints',
    json: { name: 'even', config: { served_entities: [{ entity_name: 'even', entity_version: '1', batching: { enabled: false } }] } },
  });
  assert.equal(created.status, 200, created.text);
  assert.equal((await waitSettled(server.url, 'even')).state.ready, 'READY');
  return { server, lines };
}

const TWO_ROWS = { inputs: [[1, 2, 3, 4], [5, 6, 7, 8]] };
const ONE_ROW = { inputs: [[1, 2, 3, 4]] };

/** The replica's log lines (JSON) for entity even-1. */
async function replicaLog(url: string): Promise<Array<Record<string, unknown>>> {
  const r = await request({ url, path: '/api/2.0/serving-endpoints/even/served-models/even-1/logs' });
  assert.equal(r.status, 200, r.text);
  return (r.json.logs as string).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('a server at debug level exporting to a live collector', () => {
  let dir: string;
  let server: FerryServer;
  let lines: Array<Record<string, unknown>>;
  let collector: Awaited<ReturnType<typeof startCollector>>;
  const invoke = (json: unknown, headers: Record<string, string> = {}, token?: string | null): Promise<HttpResult> =>
    request({ url: server.url, method: 'POST', path: '/serving-endpoints/even/invocations', json, headers, ...(token === undefined ? {} : { token }) });

  before(async () => {
    dir = await tempDir();
    collector = await startCollector();
    ({ server, lines } = await startTracedServer(dir, 'debug', collector.url));
  });
  after(async () => {
    await server?.close();
    await collector?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test('x-request-id: echoed when sane, replaced when not, on successes and 4xx/5xx; error bodies keep their shape', T, async () => {
    const events: GatewayRequestEvent[] = [];
    const onEvent = (e: unknown): void => void events.push(e as GatewayRequestEvent);
    gatewayRequests.subscribe(onEvent);
    const ok = await invoke(TWO_ROWS, { 'x-request-id': 'client-id.1:2_3' }).finally(() => gatewayRequests.unsubscribe(onEvent));
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.headers['x-request-id'], 'client-id.1:2_3');
    assert.deepEqual(events.map((e) => e.requestId), ['client-id.1:2_3'], 'the ferry:gateway:request event carries it');
    for (const bad of ['x'.repeat(129), 'bad id', 'a/b;c']) {
      const r = await invoke(TWO_ROWS, { 'x-request-id': bad });
      assert.equal(r.status, 200);
      assert.match(String(r.headers['x-request-id']), GENERATED_ID, bad);
    }
    const generated = await invoke(TWO_ROWS);
    assert.match(String(generated.headers['x-request-id']), GENERATED_ID);

    const notFound = await request({ url: server.url, method: 'POST', path: '/serving-endpoints/nope/invocations', json: TWO_ROWS, headers: { 'x-request-id': 'nf-1' } });
    const unauthenticated = await invoke(TWO_ROWS, { 'x-request-id': 'unauth-1' }, null);
    const badInput = await invoke({ inputs: [[1, 2]] }, { 'x-request-id': 'bad-input-1' });
    const modelError = await invoke(ONE_ROW, { 'x-request-id': 'model-error-1' });
    for (const [r, status, id] of [[notFound, 404, 'nf-1'], [unauthenticated, 401, 'unauth-1'], [badInput, 400, 'bad-input-1'], [modelError, 500, 'model-error-1']] as const) {
      assert.equal(r.status, status, r.text);
      assert.equal(r.headers['x-request-id'], id);
      assert.match(String(r.headers.traceparent), TRACEPARENT);
      assert.deepEqual(Object.keys(r.json as object).sort(), ['error_code', 'message'], r.text);
    }
    assert.equal(modelError.json.error_code, 'MODEL_ERROR');

    // The replica logged the model error with the same request id and the trace of the answer.
    const traceId = TRACEPARENT.exec(String(modelError.headers.traceparent))?.[1];
    const replicaLine = await waitFor('the replica error line', async () => (await replicaLog(server.url)).find((l) => l.level === 'error' && l.request_id === 'model-error-1'));
    assert.equal(replicaLine.msg, 'request failed');
    assert.equal(replicaLine.trace_id, traceId);
    assert.equal(replicaLine.error_code, 'MODEL_ERROR');
    assert.equal(typeof replicaLine.ts, 'string');
    // The gateway logged it at error level too, with the ids; no line holds a body or a token.
    const gatewayLine = lines.find((l) => l.level === 'error' && l.request_id === 'model-error-1');
    assert.deepEqual([gatewayLine?.msg, gatewayLine?.trace_id, gatewayLine?.status], ['model answered with an error', traceId, 500]);
    const all = JSON.stringify(lines) + JSON.stringify(await replicaLog(server.url));
    assert.ok(!all.includes(ADMIN_TOKEN), 'no token in any log');
    assert.ok(!all.includes('[[1,2,3,4]'), 'no request body in any log');
  });

  test('traceparent: invalid ones start a new trace; a valid one keeps its trace id under a new gateway span, seen by the replica', T, async () => {
    for (const bad of [`00-${'0'.repeat(32)}-${PARENT_ID}-01`, `00-${TRACE_ID.toUpperCase()}-${PARENT_ID}-01`, 'garbage']) {
      const r = await invoke(TWO_ROWS, { traceparent: bad });
      const [, traceId, spanId, flags] = TRACEPARENT.exec(String(r.headers.traceparent)) ?? [];
      assert.ok(traceId !== undefined && traceId !== TRACE_ID && spanId !== undefined, String(r.headers.traceparent));
      assert.equal(flags, '01', 'a trace Ferry starts is sampled');
    }
    const r = await invoke(TWO_ROWS, { traceparent: `00-${TRACE_ID}-${PARENT_ID}-01`, tracestate: 'vendor=abc', 'x-request-id': 'traced-1' });
    assert.equal(r.status, 200, r.text);
    const [, traceId, gatewaySpan, flags] = TRACEPARENT.exec(String(r.headers.traceparent)) ?? [];
    assert.equal(traceId, TRACE_ID);
    assert.notEqual(gatewaySpan, PARENT_ID, 'the gateway answers with its own span as the parent');
    assert.equal(flags, '01');

    // The replica's debug line: same trace, the gateway span as its parent, its own span.
    const line = await waitFor('the replica debug line', async () => (await replicaLog(server.url)).find((l) => l.level === 'debug' && l.request_id === 'traced-1'));
    assert.deepEqual({ msg: line.msg, trace_id: line.trace_id, parent_span_id: line.parent_span_id, status: line.status, path: line.path }, {
      msg: 'request', trace_id: TRACE_ID, parent_span_id: gatewaySpan, status: 200, path: '/invocations',
    });
    assert.match(String(line.span_id), /^[0-9a-f]{16}$/);
    // The gateway's debug line for the same request.
    const gw = lines.find((l) => l.level === 'debug' && l.request_id === 'traced-1');
    assert.deepEqual({ msg: gw?.msg, trace_id: gw?.trace_id, span_id: gw?.span_id, endpoint: gw?.endpoint, served_entity: gw?.served_entity, status: gw?.status }, {
      msg: 'gateway request', trace_id: TRACE_ID, span_id: gatewaySpan, endpoint: 'even', served_entity: 'even-1', status: 200,
    });
    assert.equal(typeof gw?.duration_ms, 'number');
  });

  test('OTLP: the gateway span and the replica span arrive with the trace ids and attributes; unsampled traces are not exported', T, async () => {
    const unsampled = '11111111111111111111111111111111';
    assert.equal((await invoke(TWO_ROWS, { traceparent: `00-${unsampled}-${PARENT_ID}-00` })).status, 200);
    const traceId = 'abcdef0123456789abcdef0123456789';
    const ok = await invoke(TWO_ROWS, { traceparent: `00-${traceId}-${PARENT_ID}-01`, 'x-request-id': 'otlp-1' });
    const failed = await invoke(ONE_ROW, { traceparent: `00-${traceId}-${PARENT_ID}-01`, 'x-request-id': 'otlp-2' });
    const spanOf = (r: HttpResult): string => TRACEPARENT.exec(String(r.headers.traceparent))?.[2] ?? '';
    const spans = await waitFor('4 spans of the trace', () => {
      const s = collector.spans.filter((x) => x.traceId === traceId);
      return s.length >= 4 ? s : undefined;
    });
    assert.equal(spans.length, 4);
    for (const [r, status, requestId] of [[ok, 200, 'otlp-1'], [failed, 500, 'otlp-2']] as const) {
      const gateway = spans.find((s) => s.spanId === spanOf(r));
      assert.ok(gateway, `gateway span ${spanOf(r)}`);
      assert.deepEqual({ service: gateway.service, name: gateway.name, kind: gateway.kind, parent: gateway.parentSpanId, status: gateway.status?.code }, {
        service: 'ferry', name: 'POST /serving-endpoints/:name/invocations', kind: 2, parent: PARENT_ID, status: status >= 500 ? 2 : undefined,
      });
      assert.deepEqual(['ferry.endpoint', 'ferry.served_entity', 'http.response.status_code', 'ferry.request_id'].map((k) => attr(gateway, k)), ['even', 'even-1', String(status), requestId]);
      const replica = spans.find((s) => s.parentSpanId === gateway.spanId);
      assert.ok(replica, 'the replica span is a child of the gateway span');
      assert.deepEqual({ service: replica.service, name: replica.name, status: attr(replica, 'http.response.status_code'), model: attr(replica, 'ferry.model.name') }, {
        service: 'ferry-replica', name: 'model call', status: String(status), model: 'even',
      });
      // Times in the same unit (ns) on the same clock: the model call starts within a second of
      // the gateway span (two processes' clocks, so no tighter bound) and takes some time.
      const skewNs = BigInt(replica.startTimeUnixNano) - BigInt(gateway.startTimeUnixNano);
      assert.ok(skewNs > -1_000_000_000n && skewNs < 1_000_000_000n, `replica span starts ${skewNs} ns after the gateway span`);
      assert.ok(BigInt(replica.endTimeUnixNano) > BigInt(replica.startTimeUnixNano));
    }
    assert.equal(collector.spans.filter((s) => s.traceId === unsampled).length, 0, 'the caller did not sample it');
    // The export counts are in the server's metrics (admins' process section).
    const metrics = await request({ url: server.url, path: '/metrics' });
    const exported = Number(/^ferry_otlp_spans_exported_total (\d+)$/m.exec(metrics.text)?.[1]);
    assert.ok(exported >= 4, metrics.text.slice(0, 200));
    assert.match(metrics.text, /^ferry_otlp_spans_dropped_total 0$/m);
  });
});

describe('a server at info level whose collector hangs, then dies', () => {
  test('requests succeed while the export hangs; lost spans are counted and logged; no debug lines anywhere', T, async () => {
    const dir = await tempDir();
    const collector = await startCollector({ hang: true });
    let server: FerryServer | undefined;
    try {
      const started = await startTracedServer(dir, 'info', collector.url);
      server = started.server;
      const invoke = (): Promise<HttpResult> => request({ url: started.server.url, method: 'POST', path: '/serving-endpoints/even/invocations', json: TWO_ROWS });
      assert.equal((await invoke()).status, 200);
      await waitFor('an export POST to hang', () => (collector.posts > 0 ? true : undefined));
      // The collector holds that POST unanswered: requests are answered all the same.
      const during = await Promise.all(Array.from({ length: 5 }, invoke));
      assert.deepEqual(during.map((r) => r.status), [200, 200, 200, 200, 200]);
      await collector.close(); // the hung POST fails, later ones are refused
      const warn = await waitFor('the dropped-spans warning', () => started.lines.find((l) => l.level === 'warn' && l.msg === 'OTLP spans dropped'));
      assert.ok(Number(warn.spans_dropped_total) >= 1, JSON.stringify(warn));
      assert.equal(warn.endpoint, collector.url);

      assert.deepEqual(started.lines.filter((l) => l.level === 'debug'), [], 'no debug line from the server');
      const replicaLines = await replicaLog(started.server.url);
      assert.ok(replicaLines.some((l) => l.msg === 'replica ready' && l.logLevel === 'info'), 'the replica got the level');
      assert.deepEqual(replicaLines.filter((l) => l.level === 'debug'), [], 'no debug line from the replica');
    } finally {
      await server?.close();
      await collector.close().catch(() => undefined);
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
