/**
 * The framed channel over real Unix sockets in a temp dir: multiplexing, deadlines, connection
 * loss (sent / not sent), reconnection, server-side errors and limits, and HTTP + framed on one
 * socket through listenShared. Every test tears down its servers, channels and dir.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ChannelError, FramedChannel, HEADER_BYTES, MethodCode, PREFACE, encodeRequestFrame, encodeResponseFrame, listenShared, serveFrames,
  type FrameHandler, type FramedConnection, type ServeFramesOptions,
} from '../src/channel/index.js';
import { FerryError } from '../src/errors.js';

const LIMIT = { maxPayloadBytes: 1024 * 1024 };
const T = { timeout: 20_000 };

let dir: string;
let n = 0;
before(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'ferry-channel-'));
});
after(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

const sockPath = (): string => path.join(dir, `s${n++}.sock`);

interface Served {
  socketPath: string;
  server: net.Server;
  connections: FramedConnection[];
  sockets: net.Socket[];
  close(): Promise<void>;
}

/** A framed-only server on a fresh Unix socket. */
async function serve(handler: FrameHandler, opts: Partial<ServeFramesOptions> = {}): Promise<Served> {
  const socketPath = sockPath();
  const connections: FramedConnection[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    connections.push(serveFrames(socket, handler, { ...LIMIT, ...opts }));
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    socketPath, server, connections, sockets,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A raw server whose connections the test drives byte by byte. */
async function rawServer(onConnection: (socket: net.Socket) => void): Promise<{ socketPath: string; close(): Promise<void> }> {
  const socketPath = sockPath();
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    socketPath,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const post = (p: string, body: string) => ({ method: 'POST', path: p, body: Buffer.from(body) });
const get = (p: string) => ({ method: 'GET', path: p, body: undefined });
const echo: FrameHandler = async (req) => ({ status: 200, body: JSON.stringify({ method: req.method, path: req.path, body: req.body.toString() }) });

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  assert.fail('expected a rejection');
}

describe('framed channel', () => {
  test('1000 concurrent requests share one connection and are each answered with their own body, out of order', T, async () => {
    const order: number[] = [];
    const s = await serve(async (req) => {
      const i = Number(req.path.slice(1));
      await sleep(Math.floor(Math.random() * 20));
      order.push(i);
      return { status: 200 + (i % 3), body: req.body };
    });
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => ch.request(post(`/${i}`, `{"i":${i},"pad":"${'x'.repeat(i % 50)}"}`), 10_000)));
      results.forEach((res, i) => {
        assert.equal(res.status, 200 + (i % 3));
        assert.equal(res.contentType, 'application/json');
        assert.deepEqual(JSON.parse(res.body.toString()), { i, pad: 'x'.repeat(i % 50) });
      });
      assert.equal(s.sockets.length, 1, 'one connection');
      assert.equal(order.length, 1000);
      assert.notDeepEqual(order, [...order].sort((a, b) => a - b), 'answered out of order');
      assert.equal(ch.inFlight, 0);
    } finally {
      ch.close();
      await s.close();
    }
  });

  test('GET with no body, and a zero-length POST body, reach the handler as empty bodies', T, async () => {
    const s = await serve(echo);
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      const g = await ch.request(get('/v2/models/m/ready'), 5000);
      assert.deepEqual(JSON.parse(g.body.toString()), { method: 'GET', path: '/v2/models/m/ready', body: '' });
      const p = await ch.request(post('/invocations', ''), 5000);
      assert.deepEqual(JSON.parse(p.body.toString()), { method: 'POST', path: '/invocations', body: '' });
      await assert.rejects(ch.request({ ...get('/x'), method: 'PUT' }, 5000), (err: FerryError) => err.code === 'METHOD_NOT_ALLOWED');
    } finally {
      ch.close();
      await s.close();
    }
  });

  test('request metadata reaches the handler; its span comes back only when asked, also with big bodies and error answers', T, async () => {
    const span = { spanId: '00f067aa0ba902b7', startUnixUs: 1_732_600_000_000_000, durationUs: 42.5 };
    const s = await serve(async (req) => ({
      status: req.path === '/fail' ? 500 : 200, span,
      body: req.path === '/big' ? Buffer.alloc(40_000, 0x20) : JSON.stringify({ meta: req.meta ?? null, body: req.body.toString() }),
    }));
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    const meta = { requestId: 'req-7', traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate: 'a=b', wantSpan: false };
    try {
      // Same turn: frames with and without metadata, with and without spans, share one write.
      const [plain, withMeta, wanted, big, failed] = await Promise.all([
        ch.request(post('/x', '{"n":1}'), 5000),
        ch.request({ ...post('/x', '{"n":2}'), meta }, 5000),
        ch.request({ ...post('/x', '{"n":3}'), meta: { ...meta, wantSpan: true } }, 5000),
        ch.request({ ...post('/big', ''), meta: { ...meta, wantSpan: true } }, 5000),
        ch.request({ ...post('/fail', ''), meta: { ...meta, wantSpan: true } }, 5000),
      ]);
      assert.deepEqual(JSON.parse(plain.body.toString()), { meta: null, body: '{"n":1}' });
      assert.equal(plain.span, undefined);
      assert.deepEqual(JSON.parse(withMeta.body.toString()), { meta, body: '{"n":2}' });
      assert.equal(withMeta.span, undefined, 'not asked for: not sent');
      assert.deepEqual(JSON.parse(wanted.body.toString()), { meta: { ...meta, wantSpan: true }, body: '{"n":3}' });
      assert.deepEqual(wanted.span, span);
      assert.equal(big.body.length, 40_000);
      assert.deepEqual(big.span, span);
      assert.equal(failed.status, 500);
      assert.deepEqual(failed.span, span);
      assert.equal(s.sockets.length, 1);
    } finally {
      ch.close();
      await s.close();
    }
  });

  test('big bodies (written as their own chunks) and small ones in the same turn, up to the exact payload limit', T, async () => {
    const limit = 300_000;
    const s = await serve(async (req) => ({ status: 200, body: req.path === '/text' ? req.body.toString('latin1') : req.body }), { maxPayloadBytes: limit });
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, { maxPayloadBytes: limit });
    try {
      const sizes = [10, 20_000, 0, 5, 100_000, 16 * 1024 - 1, 16 * 1024, limit - 2 - '/bin'.length, 3];
      const bodies = sizes.map((n, i) => Buffer.alloc(n, 0x41 + i));
      const results = await Promise.all(bodies.map((b, i) => ch.request({ ...post(i === 1 ? '/text' : '/bin', ''), body: b }, 10_000)));
      results.forEach((r, i) => {
        assert.equal(r.status, 200, `body ${i}`);
        assert.ok(r.body.equals(bodies[i]!), `body ${i} of ${sizes[i]} bytes came back intact`);
      });
      assert.equal(s.sockets.length, 1);
      // One byte more is refused before it is sent; the connection and other requests are unaffected.
      const over = await rejection(ch.request({ ...post('/bin', ''), body: Buffer.alloc(limit - 2 - '/bin'.length + 1) }, 5000));
      assert.ok(over instanceof FerryError && over.code === 'PAYLOAD_TOO_LARGE' && !(over instanceof ChannelError), String(over));
      assert.equal((await ch.request(get('/bin'), 5000)).status, 200);
      assert.equal(s.sockets.length, 1);
    } finally {
      ch.close();
      await s.close();
    }
  });

  test('a request past its deadline fails with DEADLINE_EXCEEDED; its late answer is ignored', T, async () => {
    const s = await serve(async (req) => {
      if (req.path === '/slow') await sleep(150);
      return { status: 200, body: req.path };
    });
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      const started = Date.now();
      const err = await rejection(ch.request(get('/slow'), 30));
      assert.ok(err instanceof FerryError && err.code === 'DEADLINE_EXCEEDED', String(err));
      assert.ok(Date.now() - started < 140, 'failed at its deadline, not at the answer');
      assert.equal(ch.inFlight, 0);
      await sleep(200); // the late answer arrives and is dropped
      const ok = await ch.request(get('/fast'), 1000);
      assert.equal(ok.body.toString(), '/fast');
      assert.equal(s.sockets.length, 1, 'the connection survived the late answer');
    } finally {
      ch.close();
      await s.close();
    }
  });

  test('never connected (no socket file, refused TCP port) → ChannelError sent: false', T, async () => {
    const missing = new FramedChannel({ kind: 'unix', socketPath: path.join(dir, 'missing.sock') }, LIMIT);
    const e1 = await rejection(missing.request(post('/invocations', '{}'), 5000));
    assert.ok(e1 instanceof ChannelError && !e1.sent, String(e1));
    assert.match((e1 as Error).message, /unreachable: ENOENT/);
    missing.close();

    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const refused = new FramedChannel({ kind: 'tcp', host: '127.0.0.1', port }, LIMIT);
    const many = await Promise.allSettled([1, 2, 3].map(() => refused.request(get('/ping'), 5000)));
    for (const r of many) assert.ok(r.status === 'rejected' && r.reason instanceof ChannelError && !r.reason.sent, r.status);
    refused.close();
  });

  test('the replica dying half-way through a response frame rejects everything flushed with sent: true', T, async () => {
    let requestsSeen = 0;
    const s = await rawServer((socket) => {
      socket.on('data', (chunk: Buffer) => {
        const before = requestsSeen;
        requestsSeen += chunk.length;
        // Once all three request frames (16 bytes each) are in: half a response, then death.
        const all = PREFACE.length + 3 * 16;
        if (!(before < all && requestsSeen >= all)) return;
        const frame = encodeResponseFrame(0, 200, '{"predictions":[1,2,3]}');
        socket.write(frame.subarray(0, 20), () => setTimeout(() => socket.destroy(), 20));
      });
    });
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      const results = await Promise.allSettled([1, 2, 3].map(() => ch.request(get('/x'), 5000)));
      for (const r of results) {
        assert.ok(r.status === 'rejected' && r.reason instanceof ChannelError && r.reason.sent, String(r.status === 'rejected' ? r.reason : r.value));
      }
      assert.equal(ch.inFlight, 0);
    } finally {
      ch.close();
      await s.close();
    }
  });

  test('close() rejects queued (unflushed) requests with sent: false and later ones at once', T, async () => {
    const s = await serve(echo);
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      const p = ch.request(get('/x'), 5000);
      ch.close(); // same turn: the frame is still queued
      const err = await rejection(p);
      assert.ok(err instanceof ChannelError && !err.sent, String(err));
      const later = await rejection(ch.request(get('/y'), 5000));
      assert.ok(later instanceof ChannelError && !later.sent);
    } finally {
      await s.close();
    }
  });

  test('after the connection is lost, the next request reconnects', T, async () => {
    const s = await serve(echo);
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      assert.equal((await ch.request(get('/a'), 5000)).status, 200);
      s.sockets[0]!.destroy();
      await sleep(50);
      const b = await ch.request(get('/b'), 5000);
      assert.equal(JSON.parse(b.body.toString()).path, '/b');
      assert.equal(s.sockets.length, 2, 'a second connection');
      // Also after the replica restarts on the same path.
      await s.close();
      const err = await rejection(ch.request(get('/c'), 5000));
      assert.ok(err instanceof ChannelError && !err.sent, String(err));
      const s2 = await serve(echo);
      const ch2 = new FramedChannel({ kind: 'unix', socketPath: s2.socketPath }, LIMIT);
      assert.equal((await ch2.request(get('/d'), 5000)).status, 200);
      ch2.close();
      await s2.close();
    } finally {
      ch.close();
      await s.close().catch(() => undefined);
    }
  });

  test('handler errors: FerryError keeps its status, code and message; anything else is a generic 500 naming the request id, its details only for the log', T, async () => {
    const logged: Array<{ err: unknown; requestId: string | undefined }> = [];
    const s = await serve((req) => {
      // A plain function: a synchronous throw must be caught as well as a rejection.
      if (req.path === '/ferry') throw new FerryError('TEMPORARILY_UNAVAILABLE', 'Replica is shutting down.');
      if (req.path === '/status') return Promise.resolve({ status: 42, body: '' });
      return Promise.reject(new TypeError('bad'));
    }, { onHandlerError: (err, meta) => logged.push({ err, requestId: meta?.requestId }) });
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      const a = await ch.request(get('/ferry'), 5000);
      assert.equal(a.status, 503);
      assert.deepEqual(JSON.parse(a.body.toString()), { error_code: 'TEMPORARILY_UNAVAILABLE', message: 'Replica is shutting down.' });
      const b = await ch.request({ ...get('/other'), meta: { requestId: 'req-42', traceparent: undefined, tracestate: undefined, wantSpan: false } }, 5000);
      assert.equal(b.status, 500);
      assert.deepEqual(JSON.parse(b.body.toString()), { error_code: 'INTERNAL_ERROR', message: "Internal error (request id req-42): the details are in the server's log." });
      assert.ok(logged[0]?.err instanceof TypeError && logged[0].err.message === 'bad' && logged[0].requestId === 'req-42');
      // The handler's own bug (an invalid status) likewise; without a request id the answer names none.
      const c = await ch.request(get('/status'), 5000);
      assert.equal(c.status, 500);
      assert.deepEqual(JSON.parse(c.body.toString()), { error_code: 'INTERNAL_ERROR', message: "Internal error: the details are in the server's log." });
      assert.equal(logged.length, 2);
      assert.match(String(logged[1]?.err), /invalid status 42/);
    } finally {
      ch.close();
      await s.close();
    }
  });

  test('a response over the limit becomes a 500 on the replica side; the connection survives', T, async () => {
    const s = await serve(async () => ({ status: 200, body: Buffer.alloc(2000) }), { maxPayloadBytes: 1000 });
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, { maxPayloadBytes: 1000 });
    try {
      const res = await ch.request(get('/big'), 5000);
      assert.equal(res.status, 500);
      assert.match(JSON.parse(res.body.toString()).message, /2000 bytes exceeds the channel limit of 1000/);
      assert.equal((await ch.request(get('/big'), 5000)).status, 500);
      assert.equal(s.sockets.length, 1);
    } finally {
      ch.close();
      await s.close();
    }
  });

  test('protocol errors close the connection: oversize request, bad preface version, oversize or wrong-type frame to the client', T, async () => {
    const errors: Error[] = [];
    const s = await serve(echo, { maxPayloadBytes: 100, onError: (err) => errors.push(err) });
    try {
      // An oversize request from a channel with a bigger limit: the replica closes; flushed → sent: true.
      const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
      const err = await rejection(ch.request(post('/invocations', 'x'.repeat(200)), 5000));
      assert.ok(err instanceof ChannelError && err.sent, String(err));
      ch.close();
      assert.ok(errors.some((e) => /exceeds the limit of 100/.test(e.message)), errors.join());
      // A client speaking version 2.
      const raw = net.connect(s.socketPath);
      raw.write(Buffer.from([0x46, 0x45, 0x52, 0x52, 0x59, 0x00, 0x02, 0x00]));
      raw.write(encodeRequestFrame(1, MethodCode.GET, '/x', undefined));
      await new Promise((resolve) => raw.on('close', resolve).on('error', () => undefined));
      assert.ok(errors.some((e) => /Unsupported protocol version 2/.test(e.message)), errors.join());
    } finally {
      await s.close();
    }

    const bad = await rawServer((socket) => {
      socket.once('data', () => socket.write(encodeRequestFrame(0, MethodCode.GET, '/x', undefined)));
    });
    const big = await rawServer((socket) => {
      socket.once('data', () => socket.write(encodeResponseFrame(0, 200, Buffer.alloc(5000)).subarray(0, HEADER_BYTES)));
    });
    const c1 = new FramedChannel({ kind: 'unix', socketPath: bad.socketPath }, LIMIT);
    const c2 = new FramedChannel({ kind: 'unix', socketPath: big.socketPath }, { maxPayloadBytes: 1000 });
    try {
      const e1 = await rejection(c1.request(get('/x'), 5000));
      assert.ok(e1 instanceof ChannelError && e1.sent && /Unexpected frame type 1/.test(e1.message), String(e1));
      const e2 = await rejection(c2.request(get('/x'), 5000));
      assert.ok(e2 instanceof ChannelError && e2.sent && /5000 bytes exceeds the limit of 1000/.test(e2.message), String(e2));
    } finally {
      c1.close();
      c2.close();
      await bad.close();
      await big.close();
    }
  });

  test('drain() answers what is in flight, then closes the connection', T, async () => {
    const s = await serve(async () => {
      await sleep(50);
      return { status: 200, body: '{}' };
    });
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      const p = Promise.all([ch.request(get('/a'), 5000), ch.request(get('/b'), 5000)]);
      await sleep(20);
      assert.equal(s.connections[0]!.inFlight, 2);
      const drained = s.connections[0]!.drain();
      const res = await p;
      assert.deepEqual(res.map((r) => r.status), [200, 200]);
      await drained;
      assert.equal(s.sockets[0]!.destroyed, true);
    } finally {
      ch.close();
      await s.close();
    }
  });

  test('maxInFlightRequests pauses reading until answers bring it back under the limit', T, async () => {
    const held: (() => void)[] = [];
    let started = 0;
    const s = await serve(async () => {
      started++;
      await new Promise<void>((resolve) => held.push(resolve));
      return { status: 200, body: '{}' };
    }, { maxInFlightRequests: 4 });
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      // Six in one turn arrive in one read: all run (the limit is soft by one read), then reading stops.
      const first = Array.from({ length: 6 }, () => ch.request(get('/x'), 5000));
      for (let i = 0; i < 100 && started < 6; i++) await sleep(5);
      assert.equal(started, 6);
      assert.equal(s.sockets[0]!.isPaused(), true);
      const later = Array.from({ length: 3 }, () => ch.request(get('/y'), 5000));
      await sleep(50);
      assert.equal(started, 6, 'nothing more read while paused');
      // Three answers: 3 in flight, under the limit: reading resumes and the later three run.
      for (const release of held.splice(0, 3)) release();
      for (let i = 0; i < 100 && started < 9; i++) await sleep(5);
      assert.equal(started, 9);
      for (const release of held.splice(0)) release();
      const results = await Promise.all([...first, ...later]);
      assert.ok(results.every((r) => r.status === 200));
    } finally {
      for (const release of held.splice(0)) release();
      ch.close();
      await s.close();
    }
  });
});

describe('streamed responses', () => {
  test('head, chunks in order, end: the stream yields each chunk as sent, beside plain answers on the same connection', T, async () => {
    const s = await serve(async (req) => {
      if (req.path === '/plain') return { status: 200, body: '{"plain":true}' };
      return {
        status: 201, body: '', contentType: 'text/event-stream',
        stream: (async function* () {
          for (let i = 0; i < 50; i++) {
            if (i % 10 === 0) await sleep(1);
            yield `data: ${i}\n\n`;
          }
          yield ''; // empty items are not sent
        })(),
      };
    });
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      const [res, plain] = await Promise.all([ch.request(post('/stream', '{}'), 5000), ch.request(post('/plain', '{}'), 5000)]);
      assert.equal(plain.stream, undefined);
      assert.deepEqual(JSON.parse(plain.body.toString()), { plain: true });
      assert.equal(res.status, 201);
      assert.equal(res.contentType, 'text/event-stream');
      assert.ok(res.stream);
      const chunks: string[] = [];
      for await (const c of res.stream) chunks.push(c.toString());
      assert.deepEqual(chunks, Array.from({ length: 50 }, (_, i) => `data: ${i}\n\n`));
      await res.stream.ended;
      assert.equal(ch.inFlight, 0);
      assert.equal(s.connections[0]?.inFlight, 0);
    } finally {
      ch.close();
      await s.close();
    }
  });

  test('a stream that throws after its head ends FAILED: iteration throws the error after the chunks before it', T, async () => {
    const s = await serve(async () => ({
      status: 200, body: '',
      stream: (async function* () {
        yield 'one';
        throw new FerryError('MODEL_ERROR', 'generation broke');
      })(),
    }));
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      const res = await ch.request(post('/', '{}'), 5000);
      const got: string[] = [];
      const err = await rejection((async () => {
        for await (const c of res.stream ?? []) got.push(c.toString());
      })());
      assert.deepEqual(got, ['one']);
      assert.ok(err instanceof FerryError && err.code === 'MODEL_ERROR' && /generation broke/.test(err.message));
    } finally {
      ch.close();
      await s.close();
    }
  });

  test('cancel: the replica handler sees its signal aborted and stops; the caller gets REQUEST_TIMEOUT', T, async () => {
    let aborted!: () => void;
    const sawAbort = new Promise<void>((resolve) => (aborted = resolve));
    let produced = 0;
    const s = await serve(async (req) => {
      req.signal.addEventListener('abort', () => aborted());
      return {
        status: 200, body: '',
        stream: (async function* () {
          while (!req.signal.aborted) {
            produced++;
            yield 'tick';
            await sleep(2);
          }
        })(),
      };
    });
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      const res = await ch.request(post('/', '{}'), 5000);
      const it = res.stream?.[Symbol.asyncIterator]();
      assert.equal((await it?.next())?.value?.toString(), 'tick');
      res.stream?.cancel();
      await sawAbort;
      const err = await rejection((async () => {
        for (;;) if ((await it?.next())?.done !== false) return;
      })());
      assert.ok(err instanceof FerryError && err.code === 'REQUEST_TIMEOUT');
      const at = produced;
      await sleep(30);
      assert.ok(produced <= at + 1, 'the handler stopped producing');
      await waitUntil(() => s.connections[0]?.inFlight === 0);
    } finally {
      ch.close();
      await s.close();
    }
  });

  test('an aborted signal before the answer cancels the request on the replica too', T, async () => {
    let sawAbort!: () => void;
    const aborted = new Promise<void>((resolve) => (sawAbort = resolve));
    const s = await serve((req) => new Promise((resolve) => {
      req.signal.addEventListener('abort', () => {
        sawAbort();
        resolve({ status: 200, body: '{}' });
      });
    }));
    const ch = new FramedChannel({ kind: 'unix', socketPath: s.socketPath }, LIMIT);
    try {
      const c = new AbortController();
      const pending = ch.request({ ...post('/', '{}'), signal: c.signal }, 5000);
      await waitUntil(() => s.connections[0]?.inFlight === 1);
      c.abort();
      const err = await rejection(pending);
      assert.ok(err instanceof FerryError && err.code === 'REQUEST_TIMEOUT');
      await aborted;
    } finally {
      ch.close();
      await s.close();
    }
  });
});

/** Polls `cond` every 5 ms (at most 5 s). */
async function waitUntil(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await sleep(5);
  assert.ok(cond());
}


describe('listenShared: HTTP and framed on one socket', () => {
  test('both protocols work, including first packets shorter than the magic, and HTTP connection tracking still works', T, async () => {
    const socketPath = sockPath();
    const httpServer = http.createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ http: req.url }));
    });
    const framed: FramedConnection[] = [];
    listenShared(httpServer, (socket) => framed.push(serveFrames(socket, echo, LIMIT)));
    await new Promise<void>((resolve) => httpServer.listen(socketPath, resolve));
    const agent = new http.Agent({ keepAlive: true });
    const ch = new FramedChannel({ kind: 'unix', socketPath }, LIMIT);
    const raws: net.Socket[] = [];
    try {
      const httpGet = (p: string): Promise<string> => new Promise((resolve, reject) => {
        http.get({ socketPath, path: p, agent }, (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString()));
          res.on('end', () => resolve(text));
        }).on('error', reject);
      });
      const [h, f] = await Promise.all([httpGet('/v2/health/ready'), ch.request(post('/invocations', '{"inputs":[1]}'), 5000)]);
      assert.deepEqual(JSON.parse(h), { http: '/v2/health/ready' });
      assert.deepEqual(JSON.parse(f.body.toString()), { method: 'POST', path: '/invocations', body: '{"inputs":[1]}' });
      assert.deepEqual(JSON.parse(await httpGet('/again')), { http: '/again' }, 'keep-alive reuse');

      // HTTP whose first packet is one byte, with two pipelined requests after it.
      const rawHttp = net.connect(socketPath);
      raws.push(rawHttp);
      let httpText = '';
      rawHttp.on('data', (d: Buffer) => (httpText += d.toString()));
      rawHttp.write('G');
      await sleep(30);
      rawHttp.write('ET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n');
      // Framed whose preface comes 3 bytes at a time.
      const rawFramed = net.connect(socketPath);
      raws.push(rawFramed);
      const got: Buffer[] = [];
      rawFramed.on('data', (d: Buffer) => got.push(d));
      const bytes = Buffer.concat([PREFACE, encodeRequestFrame(5, MethodCode.GET, '/slow', undefined)]);
      for (let i = 0; i < bytes.length; i += 3) {
        rawFramed.write(bytes.subarray(i, i + 3));
        await sleep(5);
      }
      for (let i = 0; i < 100 && (!httpText.includes('{"http":"/b"}') || Buffer.concat(got).length < HEADER_BYTES); i++) await sleep(10);
      assert.match(httpText, /\{"http":"\/a"\}[\s\S]*\{"http":"\/b"\}/);
      const answer = Buffer.concat(got);
      assert.equal(answer.readUInt32BE(4), 5);
      assert.equal(answer.readUInt16BE(10), 200);
      assert.deepEqual(JSON.parse(answer.subarray(HEADER_BYTES).toString()), { method: 'GET', path: '/slow', body: '' });
      assert.equal(framed.length, 2);

      // node:http still tracks the connections it was handed: closeAllConnections closes them.
      const closed = new Promise((resolve) => rawHttp.once('close', resolve));
      httpServer.closeAllConnections();
      await closed;
      assert.equal(rawFramed.destroyed, false, 'framed connections are not node:http\'s');
    } finally {
      for (const r of raws) r.destroy();
      ch.close();
      agent.destroy();
      for (const c of framed) c.destroy();
      httpServer.closeAllConnections();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
    }
  });

  test('a connection that never sends enough to tell its protocol is closed after sniffTimeoutMs', T, async () => {
    const socketPath = sockPath();
    const httpServer = http.createServer((_req, res) => res.end());
    listenShared(httpServer, (socket) => socket.destroy(), { sniffTimeoutMs: 50 });
    await new Promise<void>((resolve) => httpServer.listen(socketPath, resolve));
    const raw = net.connect(socketPath);
    try {
      raw.write('FER');
      const started = Date.now();
      await new Promise((resolve) => raw.on('close', resolve).on('error', () => undefined));
      assert.ok(Date.now() - started < 2000);
    } finally {
      raw.destroy();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
    }
  });
});
