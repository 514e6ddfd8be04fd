/**
 * What a client is told of a failed request (src/http `listener`, `sendError`; src/errors
 * `clientError`), over real HTTP: a FerryError's message as it is (a model's MODEL_ERROR 5xx
 * included); an unexpected error as a generic 500 naming the request id, the error itself only
 * given to `onError` for the log.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { FerryError } from '../src/errors.js';
import { listener, Router, type Context, type Handler } from '../src/http/index.js';
import { requestTracing, traceOf } from '../src/tracing/index.js';
import { request } from './support/index.js';

const logged: Array<{ err: unknown; requestId: string | undefined }> = [];
let server: http.Server;
let url: string;

before(async () => {
  const router = new Router<Handler, undefined>()
    .add('GET', '/bug', () => Promise.reject(new TypeError("Cannot read properties of undefined (reading 'rows') at /srv/ferry/dist/x.js")))
    .add('GET', '/model', () => Promise.reject(new FerryError('MODEL_ERROR', 'The model failed: division by zero in layer 3.')))
    .add('GET', '/missing', () => Promise.reject(new FerryError('RESOURCE_DOES_NOT_EXIST', "Endpoint 'x' not found.")));
  server = http.createServer(listener(router, [requestTracing()], (err: unknown, ctx: Context) => logged.push({ err, requestId: traceOf(ctx)?.requestId })));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise((resolve) => server.close(resolve));
});

test('an unexpected error: a generic 500 naming the request id; the error goes to the log', async () => {
  const r = await request({ url, path: '/bug', token: null, headers: { 'x-request-id': 'req-7f3a' } });
  assert.equal(r.status, 500);
  assert.equal(r.headers['x-request-id'], 'req-7f3a');
  assert.deepEqual(r.json, { error_code: 'INTERNAL_ERROR', message: "Internal error (request id req-7f3a): the details are in the server's log." });
  assert.ok(!r.text.includes('/srv/ferry') && !r.text.includes('rows'));
  const entry = logged.find((l) => l.requestId === 'req-7f3a');
  assert.ok(entry?.err instanceof TypeError && entry.err.message.includes('/srv/ferry'));
});

test("a FerryError's message reaches the client, a model's 5xx included", async () => {
  const m = await request({ url, path: '/model', token: null });
  assert.equal(m.status, 500);
  assert.deepEqual(m.json, { error_code: 'MODEL_ERROR', message: 'The model failed: division by zero in layer 3.' });
  const n = await request({ url, path: '/missing', token: null });
  assert.deepEqual([n.status, n.json], [404, { error_code: 'RESOURCE_DOES_NOT_EXIST', message: "Endpoint 'x' not found." }]);
});
