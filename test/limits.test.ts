/**
 * Input limits and transport: the JSON shape pre-scan (exact against a reference walk), rows per
 * request, request-head size and slow clients on a real server over raw sockets, HTTPS with a
 * certificate made here by the openssl CLI, and the warning for a server reachable from other
 * machines.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import fsp from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import fc from 'fast-check';
import { compileServerConfig } from '../src/config/index.js';
import { FerryError } from '../src/errors.js';
import { linearFixture } from '../src/fixtures/index.js';
import { PROTO_FILE } from '../src/grpc/index.js';
import { checkJsonLimits, parseJson, type JsonLimits } from '../src/http/index.js';
import { checkRowCount } from '../src/protocols/index.js';
import { startReplica, type Replica } from '../src/replica/index.js';
import type { FerryServer } from '../src/server/index.js';
import { bindWarning, defaultMaxConnections, isLoopback } from '../src/server/listen.js';
import { ADMIN_TOKEN, FERRY_BIN, registerVersion, rejectsWith, request, startTestServer, tempDir, waitFor, waitSettled, type HttpResult } from './support/index.js';

let dir: string;
let modelFile: string;

before(async () => {
  dir = await tempDir();
  modelFile = path.join(dir, 'model', linearFixture.file);
  await fsp.mkdir(path.dirname(modelFile));
  await fsp.writeFile(modelFile, linearFixture.build());
});

after(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Nesting depth and value count of a parsed JSON value, the way `JsonLimits` defines them. */
function measure(value: unknown): { depth: number; elements: number } {
  if (typeof value !== 'object' || value === null) return { depth: 0, elements: 1 };
  let depth = 0;
  let elements = 1;
  for (const child of Object.values(value)) {
    const m = measure(child);
    depth = Math.max(depth, m.depth);
    elements += m.elements;
  }
  return { depth: depth + 1, elements };
}

/** The BAD_REQUEST message `checkJsonLimits` throws for `text` under `limits`, or undefined. */
function scanError(text: string, limits: JsonLimits): string | undefined {
  try {
    checkJsonLimits(Buffer.from(text), limits);
    return undefined;
  } catch (err) {
    assert.ok(err instanceof FerryError && err.code === 'BAD_REQUEST', String(err));
    return err.message;
  }
}

describe('JSON shape limits', () => {
  test('the scan measures exactly what a walk of the parsed value measures (compact and indented, any strings)', () => {
    fc.assert(fc.property(fc.jsonValue(), fc.boolean(), (value, indent) => {
      const text = JSON.stringify(value, null, indent ? 2 : undefined);
      const { depth, elements } = measure(value);
      assert.equal(scanError(text, { maxDepth: depth, maxElements: elements }), undefined, text);
      if (depth > 0) assert.match(scanError(text, { maxDepth: depth - 1, maxElements: elements }) ?? '', new RegExp(`depth ${depth} exceeds ${depth - 1} `), text);
      if (elements > 1) assert.match(scanError(text, { maxDepth: depth, maxElements: elements - 1 }) ?? '', new RegExp(`has ${elements} values, more than ${elements - 1} `), text);
    }), { numRuns: 500 });
  });

  test('brackets, commas and escaped quotes inside strings are not structure', () => {
    const text = JSON.stringify({ k: ['[[{,', '\\"]]', 'é"}'], '[': '\\' });
    assert.deepEqual(measure(JSON.parse(text)), { depth: 2, elements: 6 });
    assert.equal(scanError(text, { maxDepth: 2, maxElements: 6 }), undefined);
    assert.equal(scanError(text, { maxDepth: 1, maxElements: 6 }), "JSON nesting depth 2 exceeds 1 (the server's maxJsonDepth).");
    assert.equal(scanError(text, { maxDepth: 2, maxElements: 5 }), "JSON body has 6 values, more than 5 (the server's maxJsonElements); send smaller requests.");
  });

  test('dense bodies, at the edge of the bounds that let small bodies skip the scan, are measured exactly', () => {
    // `[[1]]`: 5 bytes, 3 values (the most 5 bytes can hold), 2 openers and depth 2.
    assert.equal(scanError('[[1]]', { maxDepth: 2, maxElements: 3 }), undefined);
    assert.equal(scanError('[[1]]', { maxDepth: 1, maxElements: 3 }), "JSON nesting depth 2 exceeds 1 (the server's maxJsonDepth).");
    assert.match(scanError('[1,2,[]]', { maxDepth: 2, maxElements: 3 }) ?? '', /has 4 values, more than 3 /);
  });

  test('parseJson applies the default limits (64 levels), or the ones it is given, before parsing', () => {
    const nested = (levels: number): Buffer => Buffer.from('['.repeat(levels) + ']'.repeat(levels));
    assert.doesNotThrow(() => parseJson(nested(64)));
    assert.throws(() => parseJson(nested(10_000)), /JSON nesting depth 10000 exceeds 64 \(the server's maxJsonDepth\)/);
    assert.throws(() => parseJson(Buffer.from('[1, 2, 3]'), { maxDepth: 8, maxElements: 3 }), /has 4 values, more than 3/);
    assert.deepEqual(parseJson(Buffer.alloc(0), { maxDepth: 1, maxElements: 1 }), {});
  });
});

describe('rows per request', () => {
  const rows = (n: number): Record<string, { dtype: 'float32'; shape: number[]; data: Float32Array }> =>
    ({ x: { dtype: 'float32', shape: [n, 4], data: new Float32Array(n * 4) } });
  test('the first dimension of the largest input is the row count; a scalar input is one row', () => {
    assert.doesNotThrow(() => checkRowCount(rows(3), 3));
    assert.throws(() => checkRowCount(rows(4), 3), (err: unknown) => err instanceof FerryError && err.status === 400
      && err.message === "Request has 4 rows, more than 3 (the server's maxRowsPerRequest); send them in smaller requests.");
    assert.doesNotThrow(() => checkRowCount({ s: { dtype: 'float32', shape: [], data: new Float32Array(1) } }, 1));
  });

  describe('a replica (in this process, on a Unix socket) with maxRowsPerRequest 3, maxJsonDepth 8', () => {
    let replica: Replica;
    let socketPath: string;
    const post = (p: string, json: unknown): Promise<HttpResult> => request({ socketPath, path: p, json, token: null });
    before(async () => {
      socketPath = path.join(dir, 'replica.sock');
      replica = await startReplica({
        socketPath, dir: path.dirname(modelFile), flavor: 'onnx',
        loadOptions: { modelFile: path.basename(modelFile), workloadType: 'CPU', intraOpThreads: 1 },
        modelName: 'lin', modelVersion: '1', maxBodyBytes: 1024 * 1024, drainTimeoutMs: 1000,
        batching: { enabled: true, maxBatchSize: 8, maxQueueDelayUs: 0, preferredBatchSizes: [] }, execution: 'inline',
        maxRowsPerRequest: 3, maxJsonDepth: 8, maxJsonElements: 1000,
      });
    });
    after(() => replica.close());

    test('MLflow and v2 requests over the row limit are 400s naming the count and the limit; at the limit they run', async () => {
      const x = (n: number): number[][] => Array.from({ length: n }, () => [1, 2, 3, 4]);
      const ok = await post('/invocations', { inputs: x(3) });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.json.predictions.length, 3);
      const over = await post('/invocations', { dataframe_split: { columns: ['a', 'b', 'c', 'd'], data: x(4) } });
      assert.equal(over.status, 400);
      assert.deepEqual(over.json, { error_code: 'BAD_REQUEST', message: "Request has 4 rows, more than 3 (the server's maxRowsPerRequest); send them in smaller requests." });
      const v2 = (n: number): unknown => ({ inputs: [{ name: 'x', datatype: 'FP32', shape: [n, 4], data: x(n).flat() }] });
      assert.equal((await post('/v2/models/lin/infer', v2(3))).status, 200);
      const v2Over = await post('/v2/models/lin/infer', v2(5));
      assert.equal(v2Over.status, 400);
      assert.match(v2Over.json.message, /^Request has 5 rows, more than 3 /);
    });

    test('the replica parses with its own JSON limits', async () => {
      const deep = await post('/invocations', { inputs: [[[[[[[[[1]]]]]]]]] });
      assert.equal(deep.status, 400);
      assert.deepEqual(deep.json, { error_code: 'BAD_REQUEST', message: "JSON nesting depth 10 exceeds 8 (the server's maxJsonDepth)." });
      const many = await post('/invocations', { inputs: Array.from({ length: 300 }, () => [1, 2, 3, 4]) });
      assert.equal(many.status, 400);
      assert.match(many.json.message, /^JSON body has 1502 values, more than 1000 /);
    });
  });
});

/**
 * Opens a raw connection and writes `head` then `body`, one byte every 100 ms from the first byte
 * named by `slowFrom` on. Resolves once the server closes the connection, with its answer and how
 * many bytes went out before that.
 */
function trickle(url: string, text: string, slowFrom: number): Promise<{ answer: string; sent: number }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname);
    let answer = '';
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    socket.on('error', () => undefined); // a write racing the server's close; 'close' follows
    socket.on('close', () => {
      clearInterval(timer);
      resolve({ answer, sent });
    });
    socket.once('connect', () => {
      socket.write(text.slice(0, slowFrom));
      sent = slowFrom;
      timer = setInterval(() => {
        if (sent === text.length) return reject(new Error(`the server read all ${sent} bytes without closing: ${answer}`));
        socket.write(text[sent++]!);
      }, 100);
    });
  });
}

describe('a server with small limits: 4 KiB heads, 500 ms to send a head, 2 s for a request, JSON depth 8 and 100 values', () => {
  let server: FerryServer;
  const call = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
    request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });
  const healthy = async (): Promise<void> => assert.equal((await call('GET', '/v2/health/live')).status, 200);

  before(async () => {
    server = await startTestServer(path.join(dir, 'data'), {
      maxHeaderSize: '4KiB', headersTimeout: '500ms', bodyTimeout: '2s', maxJsonDepth: 8, maxJsonElements: 100, maxRowsPerRequest: 3,
    });
  });
  after(() => server.close());

  test('registry API: nesting past maxJsonDepth and values past maxJsonElements are 400s; at the limits the request goes through', async () => {
    const create = (body: unknown): Promise<HttpResult> => call('POST', '/api/2.0/mlflow/registered-models/create', body);
    const deep = await create({ name: 'deep', description: [[[[[[[['x']]]]]]]] });
    assert.equal(deep.status, 400);
    assert.deepEqual(deep.json, { error_code: 'BAD_REQUEST', message: "JSON nesting depth 9 exceeds 8 (the server's maxJsonDepth)." });
    // Depth 8 passes the scan and reaches validation.
    const atDepth = await create({ name: 'deep', description: [[[[[[['x']]]]]]] });
    assert.equal(atDepth.json.error_code, 'INVALID_PARAMETER_VALUE', atDepth.text);
    // 1 object + name + description + tags array + 32 tags × (object, key, value) = 100 values.
    const tags = (n: number): unknown[] => Array.from({ length: n }, (_, i) => ({ key: `k${i}`, value: 'v' }));
    const over = await create({ name: 'many', description: 'd', tags: tags(33) });
    assert.equal(over.status, 400);
    assert.deepEqual(over.json, { error_code: 'BAD_REQUEST', message: "JSON body has 103 values, more than 100 (the server's maxJsonElements); send smaller requests." });
    const atLimit = await create({ name: 'many', description: 'd', tags: tags(32) });
    assert.equal(atLimit.status, 200, atLimit.text);
    assert.equal(atLimit.json.registered_model.tags.length, 32);
  });

  test('endpoints API and a real endpoint refuse nesting past the limit; a normal query is served', async () => {
    const deepConfig = await call('POST', '/api/2.0/serving-endpoints', { name: 'lin', config: { served_entities: [{ entity_name: 'linear', entity_version: '1', x: [[[[[1]]]]] }] } });
    assert.equal(deepConfig.status, 400);
    assert.match(deepConfig.json.message, /^JSON nesting depth 9 exceeds 8 /);

    await registerVersion(server.url, 'linear', modelFile);
    const created = await call('POST', '/api/2.0/serving-endpoints', { name: 'lin', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } });
    assert.equal(created.status, 200, created.text);
    assert.equal((await waitSettled(server.url, 'lin')).state.ready, 'READY');
    const ok = await call('POST', '/serving-endpoints/lin/invocations', { inputs: [[1, 2, 3, 4]] });
    assert.equal(ok.status, 200, ok.text);
    // The replica parses inference bodies, with the server's limit.
    const deep = await call('POST', '/serving-endpoints/lin/invocations', { inputs: JSON.parse('['.repeat(8) + ']'.repeat(8)) as unknown });
    assert.equal(deep.status, 400);
    assert.equal(deep.json.error_code, 'BAD_REQUEST');
    assert.match(deep.json.message, /^JSON nesting depth 9 exceeds 8 \(the server's maxJsonDepth\)\.$/);
    const rows = await call('POST', '/serving-endpoints/lin/invocations', { inputs: [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]] });
    assert.equal(rows.status, 400, rows.text);
    assert.match(rows.json.message, /^Request has 4 rows, more than 3 \(the server's maxRowsPerRequest\)/);
    assert.equal((await call('DELETE', '/api/2.0/serving-endpoints/lin')).status, 200);
  });

  test('a request head over maxHeaderSize is answered 431 and the server keeps serving', async () => {
    const big = await request({ url: server.url, path: '/v2/health/live', headers: { 'x-padding': 'a'.repeat(5000) } });
    assert.equal(big.status, 431);
    assert.equal(big.json?.error_code, 'REQUEST_HEADER_FIELDS_TOO_LARGE', big.text);
    assert.match(big.json.message, /exceed 4096 bytes \(the server's maxHeaderSize\)/);
    await healthy();
  });

  test('a client sending its head one byte per 100 ms gets 408 and a closed connection; the server keeps serving', async () => {
    const head = `GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ${'a'.repeat(200)}\r\n\r\n`;
    const { answer, sent } = await trickle(server.url, head, 1);
    assert.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.match(answer, /\r\n\r\n\{"error_code":"REQUEST_TIMEOUT","message":"The request was not received in time/);
    assert.ok(sent < head.length, `closed after ${sent} of ${head.length} bytes`);
    await healthy();
  });

  test('a client sending its body one byte per 100 ms gets 408 and a closed connection; the server keeps serving', async () => {
    const body = JSON.stringify({ name: 'slow', description: 'x'.repeat(200) });
    const head = `POST /api/2.0/mlflow/registered-models/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\n`
      + `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
    const { answer, sent } = await trickle(server.url, head + body, head.length);
    assert.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.ok(sent < head.length + body.length, `closed after ${sent - head.length} of ${body.length} body bytes`);
    assert.equal((await call('GET', '/api/2.0/mlflow/registered-models/get?name=slow')).status, 404);
    await healthy();
  });
});

describe('a server holding at most 100 connections, with the default 10 min bodyTimeout', () => {
  let server: FerryServer;
  before(async () => {
    // The per-address limit of heads not yet in is the next describe's: here all 300 connect at once from one address.
    server = await startTestServer(path.join(dir, 'conn-data'), { maxConnections: 100, maxPendingConnectionsPerIp: 1000, warmPoolSize: 0 });
  });
  after(() => server.close());

  test('300 unauthenticated clients trickling their bodies are answered 401 and disconnected at once; a legitimate client is served throughout', { timeout: 60_000 }, async () => {
    const head = 'POST /api/2.0/mlflow/registered-models/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{';
    const attack = Promise.all(Array.from({ length: 300 }, () => trickle(server.url, head + ' '.repeat(99_999), head.length)));
    // While 100 attackers hold every slot a new connection is closed at once (maxConnections), so
    // the legitimate client retries a reset connection as any client would; it gets in as soon as
    // the attackers it raced with were answered 401 and let go.
    const legit = await waitFor('the legitimate client served', () => request({ url: server.url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name: 'legit' } }), 20_000);
    assert.equal(legit.status, 200, legit.text);
    // Each attacker is let go after its 401 (or, past maxConnections, at once), long before its body is in.
    const results = await attack;
    const answered = results.filter((r) => r.answer !== '');
    assert.ok(answered.length >= 100, `${answered.length} answered`);
    for (const r of answered) {
      assert.match(r.answer, /^HTTP\/1\.1 401 Unauthorized\r\n/);
      assert.match(r.answer, /\r\nConnection: close\r\n/i);
      assert.ok(r.sent < head.length + 20, `the server waited for ${r.sent - head.length} body bytes`);
    }
    assert.equal((await request({ url: server.url, path: '/api/2.0/mlflow/registered-models/get?name=legit' })).status, 200);
  });
});

describe('a server allowing 20 connections per address without a request head', () => {
  let server: FerryServer;
  before(async () => {
    server = await startTestServer(path.join(dir, 'pending-data'), { maxPendingConnectionsPerIp: 20, warmPoolSize: 0 });
  });
  after(() => server.close());

  test('50 connections from one address trickling their heads: 30 are closed at once, other addresses are served, and the address is served again once they go', { timeout: 60_000 }, async () => {
    const { port } = new URL(server.url);
    const sockets = await Promise.all(Array.from({ length: 50 }, () => new Promise<{ socket: net.Socket; closed: Promise<void> }>((resolve) => {
      const socket = net.connect({ port: Number(port), host: '127.0.0.1' });
      socket.on('error', () => undefined);
      const closed = new Promise<void>((done) => socket.once('close', () => done()));
      socket.once('connect', () => {
        socket.write('GET /v2/health/live HTTP/1.1\r\nHost: x\r\n');
        resolve({ socket, closed });
      });
    })));
    try {
      let closedCount = 0;
      for (const s of sockets) void s.closed.then(() => closedCount++);
      // Well before headersTimeout (10 s) would close them all.
      await waitFor('30 connections closed', () => (closedCount >= 30 ? true : undefined), 5_000);
      // Another address of this machine is not held up by them.
      const other = await new Promise<string>((resolve, reject) => {
        const socket = net.connect({ port: Number(port), host: '127.0.0.1', localAddress: '127.0.0.2' });
        let answer = '';
        socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
        socket.on('error', reject);
        socket.on('close', () => resolve(answer));
        socket.once('connect', () => socket.end('GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      });
      assert.match(other, /^HTTP\/1\.1 200 OK\r\n/);
      assert.equal(closedCount, 30, 'the 20 within the limit are still open');
    } finally {
      for (const s of sockets) s.socket.destroy();
    }
    await waitFor('the address served again', async () => ((await request({ url: server.url, path: '/v2/health/live' })).status === 200 ? true : undefined));
  });
});

describe('configuration', () => {
  test('headersTimeout past bodyTimeout is refused, naming both', () => {
    assert.throws(() => compileServerConfig({ headersTimeout: '20s', bodyTimeout: '10s' }),
      /Invalid value "20s" for 'headersTimeout': expected at most bodyTimeout \("10s"\)/);
  });
});

const hasOpenssl = ((): boolean => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('TLS', { skip: hasOpenssl ? false : 'the openssl CLI is not installed' }, () => {
  let tlsDir: string;
  let cert: string;
  let key: string;
  let otherKey: string;
  let server: FerryServer | undefined;
  const url = (): string => server?.url ?? assert.fail('the TLS server did not start');

  /** A self-signed certificate for 127.0.0.1 and localhost, and its key. */
  const selfSigned = (name: string): { cert: string; key: string } => {
    const files = { cert: path.join(tlsDir, `${name}.crt`), key: path.join(tlsDir, `${name}.key`) };
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', files.key, '-out', files.cert, '-days', '2', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
    return files;
  };
  /** `ferry models list --json` against the server: exit code and stderr. */
  const cli = (env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> => new Promise((resolve) => {
    execFile(process.execPath, [FERRY_BIN, 'models', 'list', '--json'], { env: { PATH: process.env.PATH ?? '', FERRY_URL: url(), FERRY_TOKEN: ADMIN_TOKEN, ...env } },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }));
  });

  before(async () => {
    tlsDir = path.join(dir, 'tls');
    await fsp.mkdir(tlsDir);
    ({ cert, key } = selfSigned('server'));
    otherKey = selfSigned('other').key;
    server = await startTestServer(path.join(dir, 'tls-data'), { tlsCert: cert, tlsKey: key, grpcPort: 0 });
  });
  after(() => server?.close());

  test('HTTPS with the certificate as CA works; plain HTTP to the same port gets no answer', async () => {
    assert.match(url(), /^https:\/\/127\.0\.0\.1:\d+$/);
    const ca = await fsp.readFile(cert);
    const status = await new Promise<number>((resolve, reject) => {
      https.get(`${url()}/api/2.0/mlflow/registered-models/search`, { ca, headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject);
    });
    assert.equal(status, 200);
    await assert.rejects(request({ url: url().replace('https:', 'http:'), path: '/v2/health/live' }));
  });

  test('gRPC (grpcPort) uses the same certificate: a client trusting it is served, a plaintext one is not', async () => {
    const definition = protoLoader.loadSync(PROTO_FILE, { keepCase: true, defaults: true, oneofs: true });
    const Service = (grpc.loadPackageDefinition(definition) as any).inference.GRPCInferenceService as typeof grpc.Client;
    const live = (credentials: grpc.ChannelCredentials): Promise<unknown> => {
      const client = new Service(server?.grpcAddress ?? assert.fail('no gRPC address'), credentials) as any;
      return new Promise((resolve, reject) => client.ServerLive({}, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, res: unknown) => {
        client.close();
        if (err) reject(err);
        else resolve(res);
      }));
    };
    assert.deepEqual(await live(grpc.credentials.createSsl(await fsp.readFile(cert))), { live: true });
    await assert.rejects(live(grpc.credentials.createInsecure()));
  });

  test('the CLI client trusts the certificate through NODE_EXTRA_CA_CERTS, and says so when it does not', async () => {
    const trusted = await cli({ NODE_EXTRA_CA_CERTS: cert });
    assert.equal(trusted.code, 0, trusted.stderr);
    assert.ok(Array.isArray(JSON.parse(trusted.stdout)));
    const untrusted = await cli({});
    assert.equal(untrusted.code, 3);
    assert.match(untrusted.stderr, /presented a TLS certificate this client does not trust \(DEPTH_ZERO_SELF_SIGNED_CERT\)\. .*NODE_EXTRA_CA_CERTS/);
  });

  test('a missing, invalid or mismatched file stops the start with an error naming the key and the file', async () => {
    const start = (tls: Record<string, string>): Promise<unknown> => startTestServer(path.join(dir, 'tls-bad'), tls);
    const missing = path.join(tlsDir, 'missing.key');
    await rejectsWith(start({ tlsCert: cert, tlsKey: missing }), 'INVALID_PARAMETER_VALUE',
      new RegExp(`^Invalid value "${missing}" for 'tlsKey': expected a readable PEM private key file \\(ENOENT\\)\\.$`));
    await rejectsWith(start({ tlsCert: key, tlsKey: key }), 'INVALID_PARAMETER_VALUE', new RegExp(`^Invalid value "${key}" for 'tlsCert': expected a PEM certificate`));
    await rejectsWith(start({ tlsCert: cert, tlsKey: otherKey }), 'INVALID_PARAMETER_VALUE',
      new RegExp(`^Invalid value "${otherKey}" for 'tlsKey': expected the private key of the certificate in ${cert} \\(.*key values mismatch\\)`));
  });

  test('ferry server --tls-cert/--tls-key with a bad key path exits 1 with one line, no stack trace', async () => {
    const missing = path.join(tlsDir, 'nope.key');
    const { code, stderr } = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(process.execPath, [FERRY_BIN, 'server', '--port', '0', '--data-dir', path.join(dir, 'tls-cli'), '--tls-cert', cert, '--tls-key', missing],
        { env: { PATH: process.env.PATH ?? '' } }, (err, _stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stderr }));
    });
    assert.equal(code, 1);
    assert.equal(stderr, `ferry: INVALID_PARAMETER_VALUE: Invalid value "${missing}" for 'tlsKey': expected a readable PEM private key file (ENOENT).\n`);
  });
});

describe('maxConnections default', () => {
  test('three quarters of the soft open-file limit, between 64 and 10,000', () => {
    const limits = (soft: number): string => `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                 1048576              files\n`;
    assert.equal(defaultMaxConnections(limits(1024)), 768);
    assert.equal(defaultMaxConnections(limits(1_048_576)), 10_000);
    assert.equal(defaultMaxConnections(limits(50)), 64);
    assert.equal(defaultMaxConnections(undefined), 10_000);
  });
});

describe('bind warning', () => {
  test('loopback addresses are quiet; others say what is exposed and whether TLS is on', () => {
    for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) {
      assert.equal(isLoopback(a), true, a);
      assert.equal(bindWarning(a, 8080, false), undefined, a);
    }
    assert.equal(bindWarning('0.0.0.0', 8080, false),
      'Listening on 0.0.0.0:8080 (every IPv4 interface): reachable from other machines. TLS is off: tokens and payloads travel in clear text; '
      + 'set tlsCert and tlsKey (--tls-cert, --tls-key) or put a TLS proxy in front. See docs/security.md.');
    assert.equal(bindWarning('::', 443, true),
      'Listening on [::]:443 (every interface): reachable from other machines. TLS is on: clients must use https:// and trust the certificate. See docs/security.md.');
    assert.match(bindWarning('10.1.2.3', 8080, false) ?? '', /^Listening on 10\.1\.2\.3:8080: reachable from other machines\. TLS is off: tokens and payloads travel in clear text/);
    assert.equal(isLoopback('::ffff:10.0.0.1'), false);
  });
});
