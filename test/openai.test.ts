/**
 * The OpenAI-compatible routes end to end: a real server, real replica processes (permission
 * model, privilege drop when root) serving the tiny GGUF model through node-llama-cpp, requests
 * over HTTP. Streaming, cancellation, shared sequences, errors in OpenAI's shape, access rules.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import diagnosticsChannel from 'node:diagnostics_channel';
import fsp from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import OpenAI from 'openai';
import { hashToken } from '../src/auth/index.js';
import { writeTinyGguf } from '../src/fixtures/index.js';
import { GATEWAY_STREAM_CHANNEL, type GatewayStreamEvent } from '../src/gateway/index.js';
import type { FerryServer } from '../src/server/index.js';
import { ADMIN_TOKEN, registerVersion, replicaNodePid, replicaPids, request, startTestServer, tempDir, waitSettled } from './support/index.js';

let dir: string;
let server: FerryServer;
let url: string;
const QUERIER = 'ferry_test_querier_token_0123456789';
const VIEWER = 'ferry_test_viewer_token_0123456789';

/** A model directory: the tiny GGUF and its ferry.json. */
async function llmDir(name: string, settings: Record<string, unknown>): Promise<string> {
  const d = path.join(dir, name);
  await fsp.mkdir(d, { recursive: true });
  await writeTinyGguf(d);
  await fsp.writeFile(path.join(d, 'ferry.json'), JSON.stringify(settings));
  return d;
}

async function serve(endpoint: string, settings: Record<string, unknown>): Promise<void> {
  const version = await registerVersion(url, endpoint, await llmDir(endpoint, settings));
  const r = await request({ url, method: 'POST', path: '/api/2.0/serving-endpoints', json: { name: endpoint, config: { served_entities: [{ entity_name: endpoint, entity_version: version }] } } });
  assert.equal(r.status, 200, r.text);
  const e = await waitSettled(url, endpoint, 60_000);
  assert.equal(e.state.ready, 'READY', JSON.stringify(e));
}

before(async () => {
  dir = await tempDir('ferry-openai-');
  server = await startTestServer(path.join(dir, 'data'), { requestTimeout: '20s', warmPoolSize: 0 });
  url = server.url;
  for (const [name, token] of [['querier', QUERIER], ['viewer', VIEWER]] as const) {
    await server.store.createPrincipal({ name, kind: 'user', admin: false, createdMs: 0, createdBy: 'test' });
    await server.store.putToken({ id: name, principal: name, hash: hashToken(token), createdMs: 0, expiresMs: undefined, description: '' });
  }
  // Two replicas of the same model file: one sequence (cancellation), two (sharing).
  await serve('chat', { sequences: 2, context_size: 512 });
  await serve('solo', { sequences: 1, context_size: 4096, max_queued_requests: 4 });
  await server.store.setGrants('serving-endpoint', 'chat', [{ grantee: 'querier', level: 'CAN_QUERY' }, { grantee: 'viewer', level: 'CAN_VIEW' }]);
});

after(async () => {
  await server?.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

const post = (p: string, json: unknown, token: string | null = ADMIN_TOKEN) => request({ url, method: 'POST', path: p, json, token });

/** Reads an SSE response to its end: the `data:` payloads in order. */
function sse(p: string, json: unknown, token = ADMIN_TOKEN): Promise<{ status: number; contentType: string | undefined; events: string[] }> {
  const body = JSON.stringify(json);
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname: u.hostname, port: u.port, method: 'POST', path: p, agent: false, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({
        status: res.statusCode ?? 0, contentType: res.headers['content-type'],
        events: text.split('\n\n').filter((e) => e !== '').map((e) => e.replace(/^data: /, '')),
      }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('chat completion at temperature 0 is deterministic, with usage counts', async () => {
  const body = { model: 'chat', messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 12, temperature: 0 };
  const a = await post('/v1/chat/completions', body);
  assert.equal(a.status, 200, a.text);
  assert.equal(a.json.object, 'chat.completion');
  assert.equal(a.json.model, 'chat');
  assert.equal(a.json.choices.length, 1);
  assert.equal(a.json.choices[0].message.role, 'assistant');
  assert.equal(a.json.choices[0].finish_reason, 'length');
  // The fixture never emits EOS: exactly max_tokens tokens.
  assert.equal(a.json.usage.completion_tokens, 12);
  assert.equal(a.json.usage.total_tokens, a.json.usage.prompt_tokens + 12);
  assert.ok(a.json.usage.prompt_tokens > 'Hello there'.length, 'the prompt includes the chat template');
  const b = await post('/v1/chat/completions', body);
  assert.equal(b.json.choices[0].message.content, a.json.choices[0].message.content);

  // Sampling with a seed repeats too; n gives independent choices.
  const seeded = { model: 'chat', messages: body.messages, max_tokens: 8, temperature: 1, seed: 42, n: 2 };
  const s1 = await post('/v1/chat/completions', seeded);
  const s2 = await post('/v1/chat/completions', seeded);
  assert.equal(s1.status, 200, s1.text);
  assert.deepEqual(s1.json.choices.map((c: any) => c.index), [0, 1]);
  assert.deepEqual(s2.json.choices.map((c: any) => c.message.content), s1.json.choices.map((c: any) => c.message.content));
  assert.equal(s1.json.usage.completion_tokens, 16);
});

test('completions: prompt tokens are BOS + one per byte of the byte-level vocabulary; stop strings cut the text', async () => {
  const r = await post('/v1/completions', { model: 'chat', prompt: 'abc', max_tokens: 5, temperature: 0 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.object, 'text_completion');
  assert.equal(r.json.usage.prompt_tokens, 4);
  assert.equal(r.json.usage.completion_tokens, 5);
  const text: string = r.json.choices[0].text;
  const long = await post('/v1/completions', { model: 'chat', prompt: 'abc', max_tokens: 40, temperature: 0 });
  const full: string = long.json.choices[0].text;
  assert.ok(full.startsWith(text));
  // Stop at a piece of the greedy text that is not at its start: the answer ends right before it.
  const stopAt = [...full].slice(6, 8).join('');
  const cut = await post('/v1/completions', { model: 'chat', prompt: 'abc', max_tokens: 40, temperature: 0, stop: [stopAt] });
  assert.equal(cut.json.choices[0].finish_reason, 'stop');
  assert.equal(cut.json.choices[0].text, full.slice(0, full.indexOf(stopAt)));
  // The same body at the Databricks route.
  const inv = await post('/serving-endpoints/chat/invocations', { prompt: 'abc', max_tokens: 5, temperature: 0 });
  assert.equal(inv.status, 200, inv.text);
  assert.equal(inv.json.choices[0].text, text);
});

test('streaming: chat.completion.chunk events in order, finish_reason last, then [DONE]', async () => {
  const body = { model: 'chat', messages: [{ role: 'user', content: 'Stream please' }], max_tokens: 10, temperature: 0 };
  const whole = await post('/v1/chat/completions', body);
  const events: GatewayStreamEvent[] = [];
  const listen = (e: unknown): void => void events.push(e as GatewayStreamEvent);
  diagnosticsChannel.subscribe(GATEWAY_STREAM_CHANNEL, listen);
  const s = await sse('/v1/chat/completions', { ...body, stream: true, stream_options: { include_usage: true } });
  diagnosticsChannel.unsubscribe(GATEWAY_STREAM_CHANNEL, listen);
  // The gateway's stream event: time to first token and one chunk per SSE event.
  assert.equal(events.length, 1);
  assert.equal(events[0]?.endpoint, 'chat');
  assert.equal(events[0]?.outcome, 'complete');
  assert.equal(events[0]?.chunks, s.events.length);
  assert.ok((events[0]?.firstChunkMs ?? -1) >= 0);
  assert.equal(s.status, 200);
  assert.equal(s.contentType, 'text/event-stream; charset=utf-8');
  assert.equal(s.events.at(-1), '[DONE]');
  const chunks = s.events.slice(0, -1).map((e) => JSON.parse(e));
  const usage = chunks.pop();
  assert.deepEqual(usage.choices, []);
  assert.deepEqual(usage.usage, whole.json.usage);
  for (const c of chunks) {
    assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(c.id, chunks[0].id);
  }
  assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
  const last = chunks.at(-1);
  assert.equal(last.choices[0].finish_reason, 'length');
  assert.deepEqual(last.choices[0].delta, {});
  assert.ok(chunks.slice(0, -1).every((c: any) => c.choices[0].finish_reason === null));
  const text = chunks.map((c: any) => c.choices[0].delta.content ?? '').join('');
  assert.equal(text, whole.json.choices[0].message.content);
  // The same event feeds the Prometheus metrics: time to first token, tokens, streams by outcome.
  const metrics = (await request({ url, path: '/api/2.0/serving-endpoints/chat/metrics' })).text;
  assert.match(metrics, /^ferry_time_to_first_token_seconds_count\{endpoint="chat",served_entity="[^"]+"\} [1-9]\d*$/m);
  assert.match(metrics, /^ferry_generated_tokens_total\{endpoint="chat",served_entity="[^"]+"\} [1-9]\d*$/m);
  assert.match(metrics, /^ferry_streams_total\{endpoint="chat",served_entity="[^"]+",outcome="complete"\} [1-9]\d*$/m);
});

test('a client that disconnects mid-stream frees the sequence: the next request on a one-sequence model is served', async () => {
  // Unbounded for practical purposes: without cancellation this stream would hold the only
  // sequence for minutes, and the second request would wait past its deadline.
  const long = JSON.stringify({ model: 'solo', prompt: 'go', max_tokens: 1_000_000, temperature: 0, stream: true });
  const u = new URL(url);
  await new Promise<void>((resolve, reject) => {
    const req = http.request({ hostname: u.hostname, port: u.port, method: 'POST', path: '/v1/completions', agent: false, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(long) } }, (res) => {
      assert.equal(res.statusCode, 200);
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(err)));
    req.end(long);
  });
  const next = await post('/v1/completions', { model: 'solo', prompt: 'again', max_tokens: 4, temperature: 0 });
  assert.equal(next.status, 200, next.text);
  assert.equal(next.json.usage.completion_tokens, 4);
});

test('concurrent chat requests share one model in one replica', async () => {
  const [pid] = await replicaPids(path.join(dir, 'data'), 'chat');
  assert.ok(pid !== undefined);
  const nodePid = await replicaNodePid(pid); // in the sandbox the runtime's child is bwrap
  const rss = async (): Promise<number> => Number(/VmRSS:\s+(\d+)/.exec(await fsp.readFile(`/proc/${nodePid}/status`, 'utf8'))?.[1]) * 1024;
  const before = await rss();
  const body = (content: string) => ({ model: 'chat', messages: [{ role: 'user', content }], max_tokens: 200, temperature: 0 });
  const [a, b] = await Promise.all([post('/v1/chat/completions', body('one')), post('/v1/chat/completions', body('two'))]);
  assert.equal(a.status, 200, a.text);
  assert.equal(b.status, 200, b.text);
  assert.equal(a.json.usage.completion_tokens, 200);
  assert.equal(b.json.usage.completion_tokens, 200);
  assert.deepEqual(await replicaPids(path.join(dir, 'data'), 'chat'), [pid]);
  // The model and its context are loaded once: two concurrent generations do not double the
  // replica's resident memory (a second model instance per request would).
  const after = await rss();
  assert.ok(after < 2 * before, `RSS went from ${before} to ${after} bytes`);
});

test('embeddings: one vector per input with the embedding width', async () => {
  const r = await post('/v1/embeddings', { model: 'chat', input: ['hello', 'world!'] });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.object, 'list');
  assert.deepEqual(r.json.data.map((d: any) => [d.object, d.index, d.embedding.length]), [['embedding', 0, 64], ['embedding', 1, 64]]);
  assert.equal(r.json.usage.prompt_tokens, 'hello'.length + 'world!'.length);
});

test('errors on /v1 routes have OpenAI’s shape', async () => {
  const shape = (r: { json: any }, status: number, type: string): void => {
    assert.equal(typeof r.json.error.message, 'string');
    assert.equal(r.json.error.type, type);
    assert.ok('param' in r.json.error && 'code' in r.json.error);
    assert.equal(r.json.error_code, undefined);
    void status;
  };
  const missing = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }] });
  assert.equal(missing.status, 400);
  shape(missing, 400, 'invalid_request_error');
  assert.match(missing.json.error.message, /'model'/);
  const unknown = await post('/v1/chat/completions', { model: 'nope', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(unknown.status, 404);
  shape(unknown, 404, 'not_found_error');
  const temp = await post('/v1/chat/completions', { model: 'chat', messages: [{ role: 'user', content: 'x' }], temperature: 7 });
  assert.equal(temp.status, 400, temp.text);
  shape(temp, 400, 'invalid_request_error');
  assert.match(temp.json.error.message, /temperature/);
  const anonymous = await post('/v1/chat/completions', { model: 'chat', messages: [] }, null);
  assert.equal(anonymous.status, 401);
  shape(anonymous, 401, 'authentication_error');
  const viewer = await post('/v1/chat/completions', { model: 'chat', messages: [{ role: 'user', content: 'x' }] }, VIEWER);
  assert.equal(viewer.status, 403);
  shape(viewer, 403, 'permission_error');
  const querier = await post('/v1/completions', { model: 'chat', prompt: 'x', max_tokens: 2 }, QUERIER);
  assert.equal(querier.status, 200, querier.text);
  // Elsewhere errors keep Ferry's shape.
  const ferry = await post('/serving-endpoints/nope/invocations', {});
  assert.equal(ferry.json.error_code, 'RESOURCE_DOES_NOT_EXIST');
});

test('token rate limits charge each caller the tokens of its answers: usage, the usage chunk of a stream, else its chunks', async () => {
  const limit = { tokens: 50, renewal_period: 'minute', key: 'user' };
  /** Sets the limit anew: a new limiter, so every bucket starts full. */
  const limitTokens = async (): Promise<void> => {
    const put = await request({ url, method: 'PUT', path: '/api/2.0/serving-endpoints/chat/ai-gateway', json: { rate_limits: [limit] } });
    assert.equal(put.status, 200, put.text);
    assert.deepEqual(put.json, { rate_limits: [limit], fallback_config: { enabled: false } });
  };
  const small = { model: 'chat', prompt: 'a', max_tokens: 1, temperature: 0 };
  const longPrompt = 'x'.repeat(100); // 101 prompt tokens (BOS + one per byte)
  try {
    await limitTokens();
    assert.deepEqual((await request({ url, path: '/api/2.0/serving-endpoints/chat' })).json.ai_gateway.rate_limits, [limit]);
    // One answer of 64 tokens puts the admin's bucket in debt (50 per minute: 64 × 1.2 s - 60 s + 1.2 s = 18 s).
    const big = await post('/v1/completions', { model: 'chat', prompt: 'abc', max_tokens: 60, temperature: 0 });
    assert.equal(big.status, 200, big.text);
    assert.equal(big.json.usage.total_tokens, 64);
    const refused = await post('/v1/completions', small);
    assert.equal(refused.status, 429, refused.text);
    assert.equal(refused.json.error.type, 'rate_limit_error');
    assert.equal(refused.json.error.code, 'REQUEST_LIMIT_EXCEEDED');
    assert.match(refused.json.error.message, /^Rate limit of 50 tokens per minute per user exceeded for serving endpoint 'chat'; retry in \d+ s\.$/);
    const retryAfter = Number(refused.headers['retry-after']);
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 18, `Retry-After ${refused.headers['retry-after']}`);
    // Another user has a bucket of his own; the Databricks route is charged the same way.
    const other = await post('/serving-endpoints/chat/invocations', { prompt: 'abc', max_tokens: 60, temperature: 0 }, QUERIER);
    assert.equal(other.status, 200, other.text);
    assert.equal(other.json.usage.total_tokens, 64);
    const otherRefused = await post('/serving-endpoints/chat/invocations', small, QUERIER);
    assert.equal(otherRefused.status, 429, otherRefused.text);
    assert.equal(otherRefused.json.error_code, 'REQUEST_LIMIT_EXCEEDED');

    // A stream without the usage chunk is charged its chunks (at most 5 text pieces, the finish
    // chunk, [DONE]), not its 101 prompt tokens: the next call is admitted.
    await limitTokens();
    const plain = await sse('/v1/completions', { model: 'chat', prompt: longPrompt, max_tokens: 5, temperature: 0, stream: true });
    assert.equal(plain.status, 200);
    assert.ok(plain.events.length <= 7, plain.events.join('\n'));
    assert.equal((await post('/v1/completions', small)).status, 200);
    // A long stream: more chunks than the limit (a piece is one character, at most 4 byte tokens), in debt.
    const long = await sse('/v1/completions', { model: 'chat', prompt: 'abc', max_tokens: 300, temperature: 0, stream: true });
    assert.equal(long.status, 200);
    assert.ok(long.events.length > 50, `${long.events.length} chunks`);
    assert.equal((await post('/v1/completions', small)).status, 429);

    // The same stream as the first, with the usage chunk: charged its usage (106 tokens), in debt.
    await limitTokens();
    const counted = await sse('/v1/completions', { model: 'chat', prompt: longPrompt, max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true } });
    assert.equal(counted.status, 200);
    assert.equal(JSON.parse(counted.events.at(-2) ?? '{}').usage.total_tokens, 106);
    assert.equal((await post('/v1/completions', small)).status, 429);
  } finally {
    await request({ url, method: 'PUT', path: '/api/2.0/serving-endpoints/chat/ai-gateway', json: { rate_limits: [] } });
  }
});

test('GET /v1/models lists the endpoints the caller may view', async () => {
  const admin = await request({ url, path: '/v1/models' });
  assert.deepEqual(admin.json.data.map((m: any) => m.id), ['chat', 'solo']);
  const viewer = await request({ url, path: '/v1/models', token: VIEWER });
  assert.deepEqual(viewer.json.data.map((m: any) => m.id), ['chat']);
});

test('the official OpenAI Node SDK (openai 6, unmodified, default options): embeddings, models.retrieve, a non-ASCII stream', async () => {
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: VIEWER, maxRetries: 0 });
  const querier = new OpenAI({ baseURL: `${url}/v1`, apiKey: QUERIER, maxRetries: 0 });
  // embeddings.create without encoding_format sends "base64" and decodes the float32 bytes itself.
  const sent: unknown[] = [];
  const capture = new OpenAI({
    baseURL: `${url}/v1`, apiKey: QUERIER, maxRetries: 0,
    fetch: async (input: string | URL | Request, init?: RequestInit) => {
      sent.push(JSON.parse(typeof init?.body === 'string' ? init.body : ''));
      return fetch(input, init);
    },
  });
  const viaSdk = await capture.embeddings.create({ model: 'chat', input: ['hello', 'world!'] });
  assert.equal((sent[0] as { encoding_format?: string }).encoding_format, 'base64');
  const floats = await post('/v1/embeddings', { model: 'chat', input: ['hello', 'world!'], encoding_format: 'float' });
  assert.equal(floats.status, 200, floats.text);
  assert.equal(viaSdk.data.length, 2);
  viaSdk.data.forEach((d, i) => {
    assert.equal(d.embedding.length, 64);
    // base64 carries float32: the same values as the float answer, rounded to float32 once.
    assert.deepEqual(d.embedding, Array.from(Float32Array.from(floats.json.data[i].embedding as number[])));
  });
  assert.deepEqual(viaSdk.usage, floats.json.usage);
  await assert.rejects(querier.embeddings.create({ model: 'chat', input: 'x', dimensions: 3 }), (err: unknown) => err instanceof OpenAI.BadRequestError && /dimensions/.test(err.message));

  // models.retrieve: GET /v1/models/{id}; 403 for an endpoint the caller may not view, 404 (to an admin) for none.
  assert.deepEqual(await client.models.retrieve('chat'), { id: 'chat', object: 'model', created: 0, owned_by: 'ferry' });
  await assert.rejects(client.models.retrieve('solo'), (err: unknown) => err instanceof OpenAI.PermissionDeniedError);
  const admin = new OpenAI({ baseURL: `${url}/v1`, apiKey: ADMIN_TOKEN, maxRetries: 0 });
  await assert.rejects(admin.models.retrieve('nope'), (err: unknown) => err instanceof OpenAI.NotFoundError && /Model 'nope' not found/.test(err.message));

  // Streaming: the SDK reads the events; the charset is named, so byte-level readers decode UTF-8.
  const stream = await querier.chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'Grüße, 東京 🚢' }], max_tokens: 8, temperature: 0, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
  const whole = await querier.chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'Grüße, 東京 🚢' }], max_tokens: 8, temperature: 0 });
  assert.equal(text, whole.choices[0]?.message.content);
  const raw = await querier.chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }], max_tokens: 1, stream: true }).asResponse();
  assert.equal(raw.headers.get('content-type'), 'text/event-stream; charset=utf-8');
  await raw.text();
});

test('the llm replica runs under the permission model, as the replica user when the server is root', async () => {
  const [child = 0] = await replicaPids(path.join(dir, 'data'), 'chat');
  const pid = await replicaNodePid(child); // in the sandbox the runtime's child is bwrap
  const cmdline = (await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
  assert.ok(cmdline.includes('--experimental-permission'));
  assert.ok(!cmdline.some((a) => a.startsWith('--allow-fs-write=') && !a.endsWith('.sock')), 'writes only its socket');
  const uid = Number(/Uid:\s+(\d+)/.exec(await fsp.readFile(`/proc/${pid}/status`, 'utf8'))?.[1]);
  if (process.getuid?.() === 0) assert.notEqual(uid, 0, 'the replica is not root');
});
