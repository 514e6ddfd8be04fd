/**
 * Inference tables: the store contract (SQLite), the writer on its own (bodies, client_request_id,
 * failures, retention on a fake clock), and a real server with real replicas: rows match a
 * scripted sequence of calls exactly, sampling, enabling on a live endpoint, a slow store that
 * must not slow responses, the API's filters, pages, exports and access, restarts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import diagnosticsChannel from 'node:diagnostics_channel';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { compileServerConfig } from '../src/config/index.js';
import { writeFixtures } from '../src/fixtures/index.js';
import type { GatewayRequestEvent } from '../src/gateway/index.js';
import {
  COLUMNS, INFERENCE_TABLE_DROP_CHANNEL, InferenceTableWriter, MAX_LOGGED_BODY_BYTES, omittedBody,
  type InferenceTableDropEvent, type InferenceTableSettings,
} from '../src/inference-tables/index.js';
import { startServer, type FerryServer } from '../src/server/index.js';
import { openInferenceTableStore, type InferenceRow, type InferenceTableStore } from '../src/store/index.js';
import { allPages, inferenceTableStoreContract, row } from './contract/inference-table-store.js';
import { ADMIN_TOKEN, FERRY_BIN, registerVersion, request, tempDir, waitFor, waitSettled, type HttpResult, TEST_GATEWAY_WORKERS } from './support/index.js';

inferenceTableStoreContract('sqlite', async () => {
  const dir = await tempDir();
  return {
    open: () => openInferenceTableStore({ kind: 'sqlite', path: path.join(dir, 'inference.db') }),
    cleanup: () => fsp.rm(dir, { recursive: true, force: true }),
  };
});

const ON: InferenceTableSettings = { endpointId: 'id-1', enabled: true, sampleFraction: 1 };

function event(patch: Partial<GatewayRequestEvent> = {}): GatewayRequestEvent {
  return {
    route: 'POST /serving-endpoints/:name/invocations', inference: true, endpoint: 'ep', servedEntity: 'm-1', modelName: 'm', modelVersion: '1',
    principal: 'alice', status: 200, errorCode: undefined, startMs: 1000, durationMs: 2.5, queueMs: 0, requestId: '',
    requestBody: Buffer.from('{"inputs": [[1, 2, 3, 4]]}'), responseBody: Buffer.from('{"predictions": [[5.625]]}'),
    requestHeaderBytes: undefined, responseHeaderBytes: undefined, ...patch,
  };
}

/** A store whose appends wait until the test releases them, recording what they got. */
class SlowStore implements InferenceTableStore {
  readonly appended: InferenceRow[] = [];
  appendCalls = 0;
  private waiting: Array<() => void> = [];
  private released = false;
  async append(rows: readonly InferenceRow[]): Promise<void> {
    this.appendCalls++;
    if (!this.released) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.appended.push(...rows);
  }
  get pending(): number {
    return this.waiting.length;
  }
  release(): void {
    this.released = true;
    for (const w of this.waiting.splice(0)) w();
  }
  async query(): Promise<never> {
    throw new Error('not used');
  }
  async deleteBefore(): Promise<number> {
    return 0;
  }
  async close(): Promise<void> {}
}

describe('writer', () => {
  let dir: string;
  let store: InferenceTableStore;
  before(async () => {
    dir = await tempDir();
    store = await openInferenceTableStore({ kind: 'sqlite', path: path.join(dir, 'inference.db') });
  });
  after(async () => {
    await store.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test('bodies up to 1 MiB are kept as text, larger ones become the marker; client_request_id only from small object bodies', async () => {
    const writer = new InferenceTableWriter({ store, settingsOf: (e) => (e === 'bodies' ? { ...ON, endpointId: 'b' } : undefined), bufferRows: 100, retentionMs: 86_400_000 });
    const shell = '{"client_request_id":"at-limit","x":""}';
    const exact = Buffer.from(`${shell.slice(0, -2)}${'a'.repeat(MAX_LOGGED_BODY_BYTES - shell.length)}"}`);
    assert.equal(exact.length, MAX_LOGGED_BODY_BYTES);
    const over = Buffer.concat([exact.subarray(0, exact.length - 1), Buffer.from(' }')]);
    const cases: Array<[Buffer | undefined, string | undefined, string | undefined]> = [
      [Buffer.from('{"client_request_id": "c-1", "inputs": [[1, 2, 3, 4]]}'), 'c-1', undefined],
      [Buffer.from('{"inputs": {"client_request_id": "nested"}}'), undefined, undefined],
      [Buffer.from('{"client_request_id": 7}'), undefined, undefined],
      [Buffer.from('[{"client_request_id": "array"}]'), undefined, undefined],
      [Buffer.from('{"client_request_id": "broken'), undefined, undefined],
      [exact, 'at-limit', undefined],
      [over, undefined, omittedBody(MAX_LOGGED_BODY_BYTES + 1)],
      [undefined, undefined, undefined],
    ];
    for (const [i, [body]] of cases.entries()) writer.onEvent(event({ endpoint: 'bodies', startMs: 1000 + i, requestBody: body }));
    writer.onEvent(event({ endpoint: 'elsewhere' }));
    writer.onEvent(event({ endpoint: 'bodies', inference: false, route: 'GET /v2/models/:name' }));
    await writer.flush();
    const rows = (await store.query({ endpoint: 'bodies', endpointId: 'b', maxResults: 100 })).items.reverse();
    assert.equal(rows.length, cases.length);
    for (const [i, [body, clientRequestId, marker]] of cases.entries()) {
      const r = rows[i]!;
      assert.equal(r.clientRequestId, clientRequestId, `case ${i}`);
      assert.equal(r.request, marker ?? body?.toString('utf8'), `case ${i}`);
      assert.equal(r.response, '{"predictions": [[5.625]]}');
    }
    assert.equal(omittedBody(1234), '{"ferry_body_omitted":true,"size_bytes":1234}');
    assert.deepEqual(writer.countsOf('bodies'), { queuedRows: 0, writtenRows: cases.length, droppedRows: 0 });
    assert.deepEqual(writer.countsOf('elsewhere'), { queuedRows: 0, writtenRows: 0, droppedRows: 0 });
  });

  test('OIP v2 bodies with binary tensor data are kept as JSON: the header, and the tensor bytes in base64', async () => {
    const writer = new InferenceTableWriter({ store, settingsOf: (e) => (e === 'bin' ? { ...ON, endpointId: 'bin' } : undefined), bufferRows: 100, retentionMs: 86_400_000 });
    const header = '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}';
    const tensor = Buffer.from(Float32Array.of(1, 2, 3, 4).buffer);
    const answerHeader = '{"model_name":"bin","outputs":[{"name":"y","datatype":"FP32","shape":[1,1],"parameters":{"binary_data_size":4}}]}';
    const answer = Buffer.from(Float32Array.of(5.625).buffer);
    writer.onEvent(event({
      endpoint: 'bin', requestBody: Buffer.concat([Buffer.from(header), tensor]), requestHeaderBytes: header.length,
      responseBody: Buffer.concat([Buffer.from(answerHeader), answer]), responseHeaderBytes: answerHeader.length,
    }));
    await writer.flush();
    const [row] = (await store.query({ endpoint: 'bin', endpointId: 'bin', maxResults: 10 })).items;
    const request = JSON.parse(row?.request ?? '');
    assert.deepEqual(request.inference_header, JSON.parse(header));
    assert.deepEqual(Buffer.from(request.binary_data_base64, 'base64'), tensor);
    const response = JSON.parse(row?.response ?? '');
    assert.deepEqual(response.inference_header, JSON.parse(answerHeader));
    assert.equal(Buffer.from(response.binary_data_base64, 'base64').readFloatLE(0), 5.625);
  });

  test('the event\'s requestId is kept; an event without one (\'\') gets a fresh id per row', async () => {
    const writer = new InferenceTableWriter({ store, settingsOf: (e) => (e === 'ids' ? { ...ON, endpointId: 'i' } : undefined), bufferRows: 100, retentionMs: 86_400_000 });
    writer.onEvent(event({ endpoint: 'ids', requestId: 'from-gateway' }));
    writer.onEvent(event({ endpoint: 'ids' }));
    writer.onEvent(event({ endpoint: 'ids' }));
    await writer.flush();
    const ids = (await store.query({ endpoint: 'ids', endpointId: 'i', maxResults: 10 })).items.map((r) => r.requestId).reverse();
    assert.equal(ids[0], 'from-gateway');
    assert.match(ids[1]!, /^[0-9a-f-]{36}$/);
    assert.notEqual(ids[1], ids[2]);
  });

  test('a failed write drops and counts its batch, publishes the drop, and later rows are written', async () => {
    let fail = true;
    const failing: InferenceTableStore = {
      append: async (rows) => {
        if (fail) throw new Error('disk full');
        return store.append(rows);
      },
      query: (q) => store.query(q),
      deleteBefore: (t) => store.deleteBefore(t),
      close: async () => undefined,
    };
    const errors: unknown[] = [];
    const published: InferenceTableDropEvent[] = [];
    const onDrop = (m: unknown): void => void published.push(m as InferenceTableDropEvent);
    diagnosticsChannel.subscribe(INFERENCE_TABLE_DROP_CHANNEL, onDrop);
    try {
      const writer = new InferenceTableWriter({ store: failing, settingsOf: (e) => (e === 'fails' ? { ...ON, endpointId: 'f' } : undefined), bufferRows: 100, retentionMs: 86_400_000, onError: (e) => errors.push(e) });
      for (let i = 0; i < 3; i++) writer.onEvent(event({ endpoint: 'fails' }));
      await writer.flush();
      fail = false;
      writer.onEvent(event({ endpoint: 'fails' }));
      await writer.flush();
      assert.deepEqual(writer.countsOf('fails'), { queuedRows: 0, writtenRows: 1, droppedRows: 3 });
      assert.deepEqual(writer.droppedRows(), new Map([['fails', 3]]));
      assert.deepEqual(published, [{ endpoint: 'fails', reason: 'write_failed', rows: 3 }]);
      assert.equal(errors.length, 1);
      assert.equal((await store.query({ endpoint: 'fails', endpointId: 'f', maxResults: 10 })).items.length, 1);
    } finally {
      diagnosticsChannel.unsubscribe(INFERENCE_TABLE_DROP_CHANNEL, onDrop);
    }
  });

  test('retention on a fake clock: expired rows go at start, then on each run', async () => {
    const day = 86_400_000;
    let nowMs = 100 * day;
    const writer = new InferenceTableWriter({ store, settingsOf: () => undefined, bufferRows: 10, retentionMs: 30 * day, now: () => nowMs });
    const ep = { endpoint: 'ret', endpointId: 'r' };
    const q = { ...ep, maxResults: 100 };
    await store.append([row(60 * day, ep), row(70 * day - 1, ep), row(70 * day, ep), row(99 * day, ep)]);
    await writer.start();
    try {
      assert.deepEqual((await allPages(store, q)).map((r) => r.timestampMs / day), [99, 70], 'rows before day 70 (now - 30 d) went at start');
      nowMs = 110 * day;
      assert.equal(await writer.enforceRetention(), 1);
      assert.deepEqual((await allPages(store, q)).map((r) => r.timestampMs / day), [99]);
      nowMs = 129 * day;
      assert.equal(await writer.enforceRetention(), 0);
      nowMs = 129 * day + 1;
      assert.equal(await writer.enforceRetention(), 1);
    } finally {
      await writer.close();
    }
  });
});

describe('through a real server', () => {
  let dir: string;
  let server: FerryServer;
  const dataDir = (): string => path.join(dir, 'data');
  const start = async (now?: () => number): Promise<void> => {
    server = await startServer(compileServerConfig({ port: 0, dataDir: dataDir(), maxBodySize: '4MiB' , gatewayWorkers: TEST_GATEWAY_WORKERS }), { adminToken: ADMIN_TOKEN, ...(now === undefined ? {} : { now }) });
  };
  const call = (method: string, p: string, json?: unknown, token: string | null = ADMIN_TOKEN): Promise<HttpResult> =>
    request({ url: server.url, method, path: p, token, ...(json === undefined ? {} : { json }) });
  const table = (name: string, query = '', token: string | null = ADMIN_TOKEN): Promise<HttpResult> =>
    call('GET', `/api/2.0/serving-endpoints/${name}/inference-table${query}`, undefined, token);
  const ROW = { inputs: [[1, 2, 3, 4]] };
  /** Every row of the endpoint, newest first, once there are `n` of them. */
  const rowsOnce = (name: string, n: number): Promise<any[]> => waitFor(`${n} rows of ${name}`, async () => {
    const r = await table(name, '?max_results=1000');
    assert.equal(r.status, 200, r.text);
    assert.ok(r.json.rows.length <= n, `more rows than expected: ${r.json.rows.length} > ${n}`);
    return r.json.rows.length === n ? (r.json.rows as any[]) : undefined;
  });
  const createReady = async (name: string, aiGateway?: unknown): Promise<void> => {
    const r = await call('POST', '/api/2.0/serving-endpoints', {
      name, config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] }, ...(aiGateway === undefined ? {} : { ai_gateway: aiGateway }),
    });
    assert.equal(r.status, 200, r.text);
    await waitSettled(server.url, name);
    await waitFor(`${name} ready`, async () => ((await call('GET', `/api/2.0/serving-endpoints/${name}`)).json.state.ready === 'READY' ? true : undefined));
  };
  /** What each scripted call sent and got, for comparing rows. */
  interface Sent { body: string | undefined; res: HttpResult; t0: number; t1: number; durationMs: number }
  const sent: Sent[] = [];
  const send = async (p: string, body: unknown): Promise<HttpResult> => {
    const t0 = Date.now();
    const p0 = performance.now();
    const res = await call('POST', p, body);
    sent.push({ body: JSON.stringify(body), res, t0, t1: Date.now(), durationMs: performance.now() - p0 });
    return res;
  };

  before(async () => {
    dir = await tempDir();
    const fx = await writeFixtures(path.join(dir, 'fixtures'));
    await start();
    await registerVersion(server.url, 'linear', fx.linear);
  });
  after(async () => {
    await server.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test('config: shown in the endpoint and the PUT answer; unknown keys and bad fractions are 400s naming the field', { timeout: 60_000 }, async () => {
    await createReady('tbl', { inference_table_config: { enabled: true } });
    assert.deepEqual((await call('GET', '/api/2.0/serving-endpoints/tbl')).json.ai_gateway, { fallback_config: { enabled: false }, inference_table_config: { enabled: true, sample_fraction: 1 } });
    const cases: Array<[unknown, string]> = [
      [{ inference_table_config: { enabled: true, catalog_name: 'main' } }, `Unknown key 'catalog_name' in 'inference_table_config'.`],
      [{ inference_table_config: { enabled: true, sample_fraction: 0 } }, `Invalid value 0 for 'inference_table_config.sample_fraction': expected a number with 0 < sample_fraction <= 1.`],
      [{ inference_table_config: { enabled: true, sample_fraction: 1.5 } }, `Invalid value 1.5 for 'inference_table_config.sample_fraction': expected a number with 0 < sample_fraction <= 1.`],
      [{ inference_table_config: { enabled: 'yes' } }, `Invalid value "yes" for 'inference_table_config.enabled': expected true or false.`],
    ];
    for (const [body, message] of cases) {
      const r = await call('PUT', '/api/2.0/serving-endpoints/tbl/ai-gateway', body);
      assert.equal(r.status, 400, r.text);
      assert.deepEqual(r.json, { error_code: 'INVALID_PARAMETER_VALUE', message });
    }
    const create = await call('POST', '/api/2.0/serving-endpoints', {
      name: 'nope', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] }, ai_gateway: { inference_table_config: { enabled: true, table_name_prefix: 'x' } },
    });
    assert.equal(create.status, 400);
    assert.equal(create.json.message, `Unknown key 'table_name_prefix' in 'ai_gateway.inference_table_config'.`);
    assert.equal((await call('GET', '/api/2.0/serving-endpoints/tbl')).json.ai_gateway.inference_table_config.enabled, true, 'a refused PUT changes nothing');
  });

  test('rows match a scripted sequence of calls exactly, newest first', { timeout: 60_000 }, async () => {
    // A 1.2 MB body of 60,000 rows (multiples of 1/4: exact outputs) → the marker; its response is logged.
    const big = { client_request_id: 'big-one', inputs: Array.from({ length: 60_000 }, (_, i) => [0.25 * (i % 8), 0.5, 0.75, 1.25]) };
    const v2 = { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] };
    assert.equal((await send('/serving-endpoints/tbl/invocations', ROW)).status, 200);
    assert.equal((await send('/serving-endpoints/tbl/invocations', { client_request_id: '=HYPERLINK("http://evil","order-17")', ...ROW })).status, 200);
    assert.equal((await send('/serving-endpoints/tbl/invocations', { inputs: [[1, 2, 3]] })).status, 400);
    assert.equal((await send('/v2/models/tbl/infer', v2)).status, 200);
    assert.equal((await send('/v2/models/tbl/versions/7/infer', v2)).status, 404);
    const bigRes = await send('/serving-endpoints/tbl/invocations', big);
    assert.equal(bigRes.status, 200, bigRes.text.slice(0, 200));
    assert.ok(sent.at(-1)!.body!.length > MAX_LOGGED_BODY_BYTES && bigRes.text.length < MAX_LOGGED_BODY_BYTES);
    // Metadata and readiness calls are not inference: no rows.
    assert.equal((await call('GET', '/v2/models/tbl')).status, 200);
    assert.equal((await call('GET', '/v2/models/tbl/ready')).status, 200);

    const rows = (await rowsOnce('tbl', sent.length)).reverse();
    const expected = sent.map((s, i) => {
      const notFound = i === 4;
      return {
        client_request_id: [null, '=HYPERLINK("http://evil","order-17")', null, null, null, null][i],
        endpoint_name: 'tbl',
        status_code: s.res.status,
        error_code: notFound ? 'RESOURCE_DOES_NOT_EXIST' : null,
        served_entity: notFound ? '' : 'linear-1',
        model_name: notFound ? '' : 'linear',
        model_version: notFound ? '' : '1',
        principal: 'admin',
        // The version-path 404 is refused before the body is read; the big body is the marker.
        request: notFound ? null : i === 5 ? omittedBody(Buffer.byteLength(s.body!)) : s.body,
        response: notFound ? null : s.res.text,
        sampling_fraction: 1,
      };
    });
    assert.deepEqual(rows.map((r) => { const { request_id: _i, timestamp_ms: _t, execution_time_ms: _e, ...rest } = r; return rest; }), expected);
    for (const [i, r] of rows.entries()) {
      const s = sent[i]!;
      assert.equal(r.request_id, s.res.headers['x-request-id'], `row ${i}: the request id the gateway answered with`);
      assert.ok(r.timestamp_ms >= s.t0 && r.timestamp_ms <= s.t1, `row ${i}: timestamp ${r.timestamp_ms} outside [${s.t0}, ${s.t1}]`);
      assert.ok(r.execution_time_ms >= 0 && r.execution_time_ms <= s.durationMs, `row ${i}: execution_time_ms ${r.execution_time_ms} > ${s.durationMs}`);
    }
    assert.equal(new Set(rows.map((r) => r.request_id)).size, rows.length);
    assert.deepEqual((await table('tbl', '/status')).json, { enabled: true, sample_fraction: 1, queued_rows: 0, written_rows: sent.length, dropped_rows: 0 });
  });

  test('API: filters, pages, JSON Lines and CSV exports, clear 400s', { timeout: 30_000 }, async () => {
    const all = (await table('tbl', '?max_results=1000')).json.rows as any[];
    assert.equal(all.length, sent.length);
    const ids = async (query: string): Promise<string[]> => {
      const r = await table('tbl', query);
      assert.equal(r.status, 200, r.text);
      return r.json.rows.map((x: any) => x.request_id);
    };
    const idsOf = (pred: (x: any) => boolean): string[] => all.filter(pred).map((x) => x.request_id);
    assert.deepEqual(await ids('?status=400'), idsOf((x) => x.status_code === 400));
    assert.deepEqual(await ids('?status=200&served_entity=linear-1'), idsOf((x) => x.status_code === 200));
    assert.deepEqual(await ids('?served_entity=nobody'), []);
    const mid = all[2].timestamp_ms as number;
    assert.deepEqual(await ids(`?start_ms=${mid}`), idsOf((x) => x.timestamp_ms >= mid));
    assert.deepEqual(await ids(`?end_ms=${mid}`), idsOf((x) => x.timestamp_ms < mid));
    assert.deepEqual(await ids('?max_results=1'), [all[0].request_id]);

    const walked: string[] = [];
    let token: string | undefined;
    do {
      const r = await table('tbl', `?max_results=2${token === undefined ? '' : `&page_token=${token}`}`);
      assert.ok(r.json.rows.length <= 2);
      walked.push(...r.json.rows.map((x: any) => x.request_id));
      token = r.json.next_page_token;
    } while (token !== undefined);
    assert.deepEqual(walked, all.map((x) => x.request_id));

    const jsonl = await table('tbl', '/export?format=jsonl');
    assert.equal(jsonl.status, 200);
    assert.equal(jsonl.headers['content-type'], 'application/x-ndjson');
    assert.deepEqual(jsonl.text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l)), all);
    assert.deepEqual((await table('tbl', '/export')).text, jsonl.text, 'JSON Lines is the default');
    const csv = await table('tbl', '/export?format=csv&status=200');
    assert.equal(csv.headers['content-type'], 'text/csv; charset=utf-8');
    const records = parseCsv(csv.text);
    assert.deepEqual(records[0], [...COLUMNS]);
    // Text a spreadsheet would run as a formula gets a leading quote (OWASP CSV injection); numbers stay numbers.
    const cell = (v: string | number | null): string => (v === null ? '' : typeof v === 'string' && /^[=+\-@\t\r]/.test(v) ? `'${v}` : String(v));
    assert.deepEqual(records.slice(1), all.filter((x) => x.status_code === 200).map((x) => COLUMNS.map((c) => cell(x[c]))));
    assert.ok(records.slice(1).some((r) => r.includes(`'=HYPERLINK("http://evil","order-17")`)), 'a formula is exported as text; quotes and commas survive');

    const bad: Array<[string, string]> = [
      ['?max_results=0', `Invalid value "0" for 'max_results': expected a whole number from 1 to 1000.`],
      ['?max_results=5000', `Invalid value "5000" for 'max_results': expected a whole number from 1 to 1000.`],
      ['?start_ms=yesterday', `Invalid value "yesterday" for 'start_ms': expected the earliest time in milliseconds since the epoch.`],
      ['?status=abc', `Invalid value "abc" for 'status': expected an HTTP status code such as 500.`],
      ['?start_ms=2000&end_ms=1000', `Invalid value 1000 for 'end_ms': expected a time after start_ms (2000).`],
      ['?page_token=bogus', `Invalid value "bogus" for 'page_token': use the next_page_token of a previous response.`],
      ['?colour=red', `Unknown key 'colour'.`],
      ['/export?format=xml', `Invalid value "xml" for 'format': expected "jsonl" or "csv".`],
      ['/export?max_results=5', `Unknown key 'max_results'.`],
    ];
    for (const [query, message] of bad) {
      const r = await table('tbl', query);
      assert.equal(r.status, 400, `${query}: ${r.text}`);
      assert.deepEqual(r.json, { error_code: 'INVALID_PARAMETER_VALUE', message }, query);
    }
    assert.equal((await table('ghost')).status, 404);
  });

  test('access: rows need CAN_MANAGE (403 for CAN_QUERY), the counts CAN_VIEW', { timeout: 30_000 }, async () => {
    const tokenFor = async (name: string, level: string): Promise<string> => {
      assert.equal((await call('POST', '/api/2.0/principals', { name, type: 'USER' })).status, 200);
      const t = await call('POST', '/api/2.0/token-management/on-behalf-of/tokens', { principal: name, comment: 'test' });
      const g = await call('PATCH', '/api/2.0/permissions/serving-endpoints/tbl', { access_control_list: [{ user_name: name, permission_level: level }] });
      assert.equal(g.status, 200, g.text);
      return t.json.token_value as string;
    };
    const querier = await tokenFor('quentin', 'CAN_QUERY');
    const manager = await tokenFor('mona', 'CAN_MANAGE');
    for (const query of ['', '/export', '/export?format=csv']) {
      const r = await table('tbl', query, querier);
      assert.equal(r.status, 403, r.text);
      assert.equal(r.json.error_code, 'PERMISSION_DENIED');
      assert.equal((await table('tbl', query, manager)).status, 200);
    }
    assert.equal((await table('tbl', '/status', querier)).status, 200);
    assert.equal((await table('tbl', '', null)).status, 401);
    // The querier's own calls are logged under its name.
    assert.equal((await request({ url: server.url, method: 'POST', path: '/serving-endpoints/tbl/invocations', token: querier, json: ROW })).status, 200);
    await waitFor('the querier\'s row', async () => ((await table('tbl', '?max_results=1')).json.rows[0]?.principal === 'quentin' ? true : undefined));
  });

  test('a slow store does not slow responses: calls complete while its write is pending; a full queue drops and counts', { timeout: 60_000 }, async () => {
    const slow = new SlowStore();
    const bufferRows = 20;
    const writer = new InferenceTableWriter({ store: slow, settingsOf: (e) => server.controller.inferenceTableOf(e), bufferRows, retentionMs: 86_400_000 });
    const published: InferenceTableDropEvent[] = [];
    const onDrop = (m: unknown): void => void published.push(m as InferenceTableDropEvent);
    diagnosticsChannel.subscribe(INFERENCE_TABLE_DROP_CHANNEL, onDrop);
    await writer.start();
    try {
      const before = (await table('tbl', '/status')).json.written_rows as number;
      const calls = 30;
      for (let i = 0; i < calls; i++) {
        assert.equal((await call('POST', '/serving-endpoints/tbl/invocations', ROW)).status, 200);
        if (i === 0) await waitFor('the first write to start', () => (slow.pending === 1 ? true : undefined));
      }
      // Every response came back while the first batch's write has not finished.
      assert.equal(slow.pending, 1);
      assert.equal(slow.appendCalls, 1);
      assert.equal(slow.appended.length, 0);
      // At most `bufferRows` rows are held (the batch being written included); the rest were dropped.
      assert.deepEqual(writer.countsOf('tbl'), { queuedRows: bufferRows - 1, writtenRows: 0, droppedRows: calls - bufferRows });
      assert.equal(published.length, calls - bufferRows);
      assert.ok(published.every((p) => p.endpoint === 'tbl' && p.reason === 'queue_full' && p.rows === 1));
      assert.deepEqual(writer.droppedRows(), new Map([['tbl', calls - bufferRows]]));

      slow.release();
      await writer.flush();
      assert.equal(slow.appended.length, bufferRows);
      assert.deepEqual(writer.countsOf('tbl'), { queuedRows: 0, writtenRows: bufferRows, droppedRows: calls - bufferRows });
      // The server's own writer, with a working store, logged every call.
      await waitFor('the server\'s rows', async () => ((await table('tbl', '/status')).json.written_rows === before + calls ? true : undefined));
      assert.equal((await table('tbl', '/status')).json.dropped_rows, 0);
    } finally {
      slow.release();
      await writer.close();
      diagnosticsChannel.unsubscribe(INFERENCE_TABLE_DROP_CHANNEL, onDrop);
    }
  });

  test('disabled: no rows; enabling on a live endpoint applies to the next call; sampling draws per call', { timeout: 90_000 }, async () => {
    await createReady('live');
    for (let i = 0; i < 3; i++) assert.equal((await call('POST', '/serving-endpoints/live/invocations', { client_request_id: `off-${i}`, ...ROW })).status, 200);
    const put = await call('PUT', '/api/2.0/serving-endpoints/live/ai-gateway', { inference_table_config: { enabled: true } });
    assert.deepEqual(put.json, { fallback_config: { enabled: false }, inference_table_config: { enabled: true, sample_fraction: 1 } });
    assert.equal((await call('POST', '/serving-endpoints/live/invocations', { client_request_id: 'on-0', ...ROW })).status, 200);
    assert.equal((await call('POST', '/serving-endpoints/live/invocations', { client_request_id: 'on-1', ...ROW })).status, 200);
    // Rows are written in arrival order: once the two appear, the three before would have too.
    assert.deepEqual((await rowsOnce('live', 2)).map((r) => r.client_request_id), ['on-1', 'on-0']);

    assert.equal((await call('PUT', '/api/2.0/serving-endpoints/live/ai-gateway', { inference_table_config: { enabled: true, sample_fraction: 0.5 } })).status, 200);
    const n = 400;
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < n) {
        next++;
        assert.equal((await call('POST', '/serving-endpoints/live/invocations', ROW)).status, 200);
      }
    }));
    await call('PUT', '/api/2.0/serving-endpoints/live/ai-gateway', { inference_table_config: { enabled: true, sample_fraction: 1 } });
    assert.equal((await call('POST', '/serving-endpoints/live/invocations', { client_request_id: 'sentinel', ...ROW })).status, 200);
    await waitFor('the sentinel row', async () => ((await table('live', '?max_results=1')).json.rows[0]?.client_request_id === 'sentinel' ? true : undefined));
    const rows = (await table('live', '/export')).text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l));
    const sampled = rows.filter((r) => r.sampling_fraction === 0.5).length;
    // Binomial(400, 0.5): mean 200, sd 10; ±50 is 5 sd (fails by chance about once in 1.7 million runs).
    assert.ok(Math.abs(sampled - n / 2) <= 50, `sampled ${sampled} of ${n} at 0.5`);
    assert.equal(rows.length, sampled + 3, 'on-0, on-1 and the sentinel at fraction 1, nothing else');
    assert.deepEqual(rows.filter((r) => r.sampling_fraction === 1).map((r) => r.client_request_id), ['sentinel', 'on-1', 'on-0']);
  });

  test('the CLI prints rows as a table and streams CSV', { timeout: 30_000 }, async () => {
    const env = { ...process.env, FERRY_URL: server.url, FERRY_TOKEN: ADMIN_TOKEN };
    const run = promisify(execFile);
    const csv = await run(process.execPath, [FERRY_BIN, 'endpoints', 'inference-table', 'tbl', '--status', '400', '--format', 'csv'], { env });
    const records = parseCsv(csv.stdout);
    assert.deepEqual(records[0], [...COLUMNS]);
    assert.equal(records.length, 2, csv.stdout);
    assert.equal(records[1]![COLUMNS.indexOf('status_code')], '400');
    const listed = await run(process.execPath, [FERRY_BIN, 'endpoints', 'inference-table', 'tbl', '--since', '1h', '--limit', '3'], { env });
    const lines = listed.stdout.trim().split('\n');
    assert.match(lines[0]!, /^TIME\s+REQUEST ID\s+STATUS/);
    assert.equal(lines.length, 4, listed.stdout);
    const bad = await run(process.execPath, [FERRY_BIN, 'endpoints', 'inference-table', 'tbl', '--format', 'xml'], { env }).catch((e: { code: number; stderr: string }) => e);
    assert.equal((bad as { code: number }).code, 2);
  });

  test('rows survive a restart, the setting too; a new endpoint of the same name starts with no rows', { timeout: 90_000 }, async () => {
    const before = (await table('tbl', '?max_results=1000')).json.rows as any[];
    const liveBefore = (await table('live', '?max_results=1000')).json.rows.length as number;
    assert.ok(liveBefore > 0);
    await server.close();
    await start();
    await waitFor('tbl ready after restart', async () => ((await call('GET', '/api/2.0/serving-endpoints/tbl')).json.state?.ready === 'READY' ? true : undefined), 30_000);
    assert.deepEqual((await table('tbl', '?max_results=1000')).json.rows, before);
    assert.equal((await call('POST', '/serving-endpoints/tbl/invocations', { client_request_id: 'after-restart', ...ROW })).status, 200);
    assert.equal((await rowsOnce('tbl', before.length + 1))[0].client_request_id, 'after-restart');

    assert.equal((await call('DELETE', '/api/2.0/serving-endpoints/live')).status, 200);
    assert.equal((await table('live')).status, 404);
    await createReady('live', { inference_table_config: { enabled: true } });
    assert.deepEqual((await table('live')).json, { rows: [] });
  });

  test('retention: a start past the retention deletes the old rows', { timeout: 60_000 }, async () => {
    assert.ok((await table('tbl')).json.rows.length > 0);
    await server.close();
    const shift = 31 * 86_400_000;
    await start(() => Date.now() + shift);
    assert.deepEqual((await table('tbl')).json, { rows: [] });
  });
});

/** RFC 4180 CSV (CRLF records, quoted fields with doubled quotes). */
function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let record: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c !== '"') field += c;
      else if (text[i + 1] === '"') field += text[++i];
      else quoted = false;
    } else if (c === '"') {
      quoted = true;
    } else if (c === ',') {
      record.push(field);
      field = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      record.push(field);
      records.push(record);
      record = [];
      field = '';
      i++;
    } else {
      field += c;
    }
  }
  if (field !== '' || record.length > 0) records.push([...record, field]);
  return records;
}
