/** Rate limits and input limits of `ai_gateway`: the GCRA decisions on a virtual clock, and validation. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { aiGatewayView, compileAiGateway } from '../src/control/ai-gateway.js';
import { FerryError } from '../src/errors.js';
import { RateLimiter, TokenMeter, type RateLimit } from '../src/gateway/index.js';

const perUser = (calls: number): RateLimit => ({ calls, renewalPeriod: 'minute', key: 'user' });
const perEndpoint = (calls: number): RateLimit => ({ calls, renewalPeriod: 'minute', key: 'endpoint' });
const tokensPerUser = (tokens: number): RateLimit => ({ tokens, renewalPeriod: 'minute', key: 'user' });
const tokensPerEndpoint = (tokens: number): RateLimit => ({ tokens, renewalPeriod: 'minute', key: 'endpoint' });

/** Undefined when the call is admitted, else the refusal. */
function attempt(limiter: RateLimiter, principal: string, nowMs: number): FerryError | undefined {
  try {
    limiter.admit(principal, nowMs);
    return undefined;
  } catch (err) {
    assert.ok(err instanceof FerryError);
    return err;
  }
}

/** How many of `n` calls at `nowMs` are refused. */
function refusedOf(limiter: RateLimiter, principal: string, n: number, nowMs: number): number {
  let refused = 0;
  for (let i = 0; i < n; i++) if (attempt(limiter, principal, nowMs) !== undefined) refused++;
  return refused;
}

test('the worked example: 5 per minute, 8 calls at once → 3 refused with Retry-After 12; one more at 12 s', () => {
  const l = new RateLimiter('x', [perUser(5)]);
  for (let i = 0; i < 5; i++) assert.equal(attempt(l, 'alice', 0), undefined);
  for (let i = 0; i < 3; i++) {
    const err = attempt(l, 'alice', 0);
    assert.equal(err?.code, 'REQUEST_LIMIT_EXCEEDED');
    assert.equal(err?.status, 429);
    assert.equal(err?.retryAfterS, 12);
    assert.equal(err?.message, "Rate limit of 5 calls per minute per user exceeded for serving endpoint 'x'; retry in 12 s.");
  }
  assert.equal(attempt(l, 'alice', 11_999)?.retryAfterS, 1, '1 ms short: rounded up to a whole second');
  assert.equal(attempt(l, 'alice', 12_000), undefined);
  assert.equal(attempt(l, 'alice', 12_000)?.retryAfterS, 12);
  assert.equal(attempt(l, 'alice', 24_000), undefined);
});

test('a burst of N + k calls refuses exactly k, also for intervals that are not whole milliseconds and at large clock values', () => {
  for (const calls of [1, 3, 7, 13, 60, 97, 1000]) {
    for (const startMs of [0, 123.456, 1.7e12 + 0.5]) {
      for (const k of [0, 1, 4]) {
        const l = new RateLimiter('x', [perEndpoint(calls)]);
        assert.equal(refusedOf(l, 'a', calls + k, startMs), k, `${calls}/min, +${k}, from ${startMs}`);
      }
    }
  }
});

test('after a burst, each 60/N s refills exactly one call', () => {
  for (const calls of [4, 7, 60]) {
    const l = new RateLimiter('x', [perUser(calls)]);
    const t0 = 5_000;
    assert.equal(refusedOf(l, 'u', calls, t0), 0);
    const intervalMs = 60_000 / calls;
    for (let step = 1; step <= 3; step++) {
      const at = t0 + step * intervalMs;
      assert.ok(attempt(l, 'u', at - 1) !== undefined, `${calls}/min: refused 1 ms before refill ${step}`);
      assert.equal(attempt(l, 'u', at), undefined, `${calls}/min: refill ${step}`);
      assert.ok(attempt(l, 'u', at) !== undefined, `${calls}/min: only one per refill`);
    }
  }
});

test('Retry-After is the whole seconds until one call is allowed, at least 1', () => {
  const l = new RateLimiter('x', [perEndpoint(2)]); // one call per 30 s
  assert.equal(refusedOf(l, 'u', 2, 0), 0);
  const cases: Array<[nowMs: number, retryAfterS: number]> = [[0, 30], [500, 30], [1_000, 29], [29_000, 1], [29_999.9, 1]];
  for (const [nowMs, retryAfterS] of cases) assert.equal(attempt(l, 'u', nowMs)?.retryAfterS, retryAfterS, `at ${nowMs} ms`);
  assert.equal(attempt(l, 'u', 30_000), undefined);
  // A refused call costs nothing: the next one is still allowed at 60 s.
  assert.equal(attempt(l, 'u', 59_999)?.retryAfterS, 1);
  assert.equal(attempt(l, 'u', 60_000), undefined);
});

test('key "user" counts each principal separately; key "endpoint" counts everyone together', () => {
  const byUser = new RateLimiter('x', [perUser(2)]);
  assert.equal(refusedOf(byUser, 'alice', 3, 0), 1);
  assert.equal(refusedOf(byUser, 'bob', 2, 0), 0, 'bob has his own bucket');
  assert.equal(refusedOf(byUser, 'alice', 1, 0), 1);

  const shared = new RateLimiter('x', [perEndpoint(2)]);
  assert.equal(refusedOf(shared, 'alice', 1, 0), 0);
  assert.equal(refusedOf(shared, 'bob', 1, 0), 0);
  const err = attempt(shared, 'carol', 0);
  assert.equal(err?.message, "Rate limit of 2 calls per minute per endpoint exceeded for serving endpoint 'x'; retry in 30 s.");
});

test('both keys: a call must pass both, and a refusal by one does not use up the other', () => {
  // A user refusal leaves the endpoint bucket alone: alice's third call is refused, bob still gets the endpoint's third.
  const a = new RateLimiter('x', [perUser(2), perEndpoint(3)]);
  assert.equal(refusedOf(a, 'alice', 2, 0), 0);
  assert.match(attempt(a, 'alice', 0)?.message ?? '', /per user/);
  assert.equal(attempt(a, 'bob', 0), undefined);
  assert.match(attempt(a, 'carol', 0)?.message ?? '', /per endpoint/);

  // An endpoint refusal leaves the user bucket alone: bob's refused call at 0 s does not delay his next at 20 s.
  const b = new RateLimiter('x', [perEndpoint(3), perUser(2)]);
  assert.equal(refusedOf(b, 'alice', 2, 0), 0);
  assert.equal(attempt(b, 'bob', 0), undefined);
  assert.match(attempt(b, 'bob', 0)?.message ?? '', /per endpoint/);
  assert.equal(attempt(b, 'bob', 20_000), undefined, 'endpoint refilled one call at 20 s; bob has one left');
});

test('user buckets that are full again are forgotten at the next sweep, without changing any decision', () => {
  const l = new RateLimiter('x', [perUser(2)]);
  for (let i = 0; i < 1000; i++) l.admit(`user-${i}`, 0);
  assert.equal(l.trackedUsers, 1000);
  // alice keeps a bucket that is still in debt when the sweep runs (one period after the first call).
  assert.equal(refusedOf(l, 'alice', 3, 59_000), 1);
  assert.equal(l.trackedUsers, 1001, 'no sweep before a period has passed');
  assert.equal(attempt(l, 'bob', 60_000), undefined);
  assert.equal(l.trackedUsers, 2, 'idle users forgotten; alice (in debt) and bob kept');
  assert.ok(attempt(l, 'alice', 60_000) !== undefined, 'alice is still limited after the sweep');
  assert.equal(refusedOf(l, 'user-7', 3, 60_000), 1, 'a forgotten user starts with a full bucket, as before');
});

test('the token worked example: 1000 tokens per minute, an answer of 1500 tokens puts the bucket 30 s in debt → Retry-After 31', () => {
  const l = new RateLimiter('x', [tokensPerUser(1000)]);
  assert.equal(attempt(l, 'alice', 0), undefined);
  l.chargeTokens('alice', 0, 1500);
  const err = attempt(l, 'alice', 0);
  assert.equal(err?.code, 'REQUEST_LIMIT_EXCEEDED');
  assert.equal(err?.status, 429);
  assert.equal(err?.retryAfterS, 31, 'waits 90 + 0.06 - 60 = 30.06 s');
  assert.equal(err?.message, "Rate limit of 1000 tokens per minute per user exceeded for serving endpoint 'x'; retry in 31 s.");
  assert.equal(attempt(l, 'alice', 29_060)?.retryAfterS, 1, 'the debt shrinks with time');
  assert.ok(attempt(l, 'alice', 30_059) !== undefined, '1 ms before one token is free');
  assert.equal(attempt(l, 'alice', 30_060), undefined, 'one token free: admitted');
  // Admission itself charges nothing: only the answer's tokens do.
  assert.equal(attempt(l, 'alice', 30_060), undefined);
  l.chargeTokens('alice', 30_060, 1);
  assert.ok(attempt(l, 'alice', 30_060) !== undefined, 'one token used again: refused');
});

test('token limits admit calls while the bucket is not in debt, whatever the answers will cost', () => {
  const l = new RateLimiter('x', [tokensPerEndpoint(100)]); // one token per 600 ms
  // Answers not yet charged: any number of calls is admitted (tokens in flight are not bounded).
  assert.equal(refusedOf(l, 'a', 20, 0), 0);
  l.chargeTokens('a', 0, 99);
  assert.equal(attempt(l, 'b', 0), undefined, 'one token left');
  l.chargeTokens('b', 0, 1);
  assert.equal(attempt(l, 'c', 0)?.retryAfterS, 1, 'full: the next token is free in 600 ms');
  assert.equal(attempt(l, 'c', 600), undefined);
  // A large answer: 400 tokens at 600 ms → TAT 60 + 240 = 300 s; one token free at 300.6 - 60 = 240.6 s.
  l.chargeTokens('c', 600, 400);
  assert.equal(attempt(l, 'd', 600)?.retryAfterS, 240);
  assert.equal(attempt(l, 'd', 240_599)?.retryAfterS, 1);
  assert.equal(attempt(l, 'd', 240_600), undefined);
  // Charging nothing (an answer without usage) changes nothing.
  const fresh = new RateLimiter('x', [tokensPerUser(1)]);
  fresh.chargeTokens('a', 0, 0);
  assert.equal(fresh.trackedUsers, 0);
  assert.equal(attempt(fresh, 'a', 0), undefined);
});

test('calls and tokens limits on one key: a call must pass both, the refusal names the longer wait', () => {
  const l = new RateLimiter('x', [perUser(3), tokensPerUser(100)]); // a call per 20 s, a token per 600 ms
  // alice: small answers, so the calls limit refuses her 4th call.
  for (let i = 0; i < 3; i++) {
    assert.equal(attempt(l, 'alice', 0), undefined);
    l.chargeTokens('alice', 0, 10);
  }
  assert.equal(attempt(l, 'alice', 0)?.message, "Rate limit of 3 calls per minute per user exceeded for serving endpoint 'x'; retry in 20 s.");
  // bob: one large answer, so the tokens limit refuses his 2nd call (150.6 - 60 = 90.6 s).
  assert.equal(attempt(l, 'bob', 0), undefined);
  l.chargeTokens('bob', 0, 250);
  assert.equal(attempt(l, 'bob', 0)?.message, "Rate limit of 100 tokens per minute per user exceeded for serving endpoint 'x'; retry in 91 s.");
  // carol: both refuse; calls wait 20 s, tokens (40 + 40 + 40) 72.6 - 60 = 12.6 s → calls named.
  // dave: both refuse; tokens (10 + 10 + 280) wait 180.6 - 60 = 120.6 s → tokens named.
  for (const [who, answers, named, retryAfterS] of [['carol', [40, 40, 40], 'calls', 20], ['dave', [10, 10, 280], 'tokens', 121]] as const) {
    for (const tokens of answers) {
      assert.equal(attempt(l, who, 0), undefined, who);
      l.chargeTokens(who, 0, tokens);
    }
    const err = attempt(l, who, 0);
    assert.match(err?.message ?? '', new RegExp(` ${named} per minute`), who);
    assert.equal(err?.retryAfterS, retryAfterS, who);
  }
  // A refusal by the tokens limit uses no call: bob's calls bucket still has 2 of 3 at 90.6 s.
  assert.equal(attempt(l, 'bob', 90_600), undefined);
  assert.equal(attempt(l, 'bob', 90_600), undefined);
  assert.equal(attempt(l, 'bob', 90_600), undefined);
  assert.match(attempt(l, 'bob', 90_600)?.message ?? '', /3 calls per minute/);
});

test('a per-endpoint token limit and a per-user call limit: one caller\'s tokens hold back everyone', () => {
  const l = new RateLimiter('x', [perUser(10), tokensPerEndpoint(600)]); // a token per 100 ms
  assert.equal(attempt(l, 'alice', 0), undefined);
  l.chargeTokens('alice', 0, 700); // TAT 70 s: 10 s + one token to wait
  assert.equal(attempt(l, 'bob', 0)?.message, "Rate limit of 600 tokens per minute per endpoint exceeded for serving endpoint 'x'; retry in 11 s.");
  assert.equal(attempt(l, 'bob', 10_100), undefined);
});

test('TokenMeter: usage.total_tokens of a whole answer, else 0; of a stream, its usage chunk, else one per chunk', () => {
  const whole = (body: unknown): number => {
    const m = new TokenMeter();
    m.answer(Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)));
    return m.tokens;
  };
  assert.equal(whole({ object: 'chat.completion', choices: [], usage: { prompt_tokens: 7, completion_tokens: 5, total_tokens: 12 } }), 12);
  assert.equal(whole({ object: 'list', data: [], usage: { prompt_tokens: 3, total_tokens: 3 } }), 3, 'embeddings');
  assert.equal(whole({ predictions: [1, 2] }), 0, 'not an LLM answer');
  assert.equal(whole({ usage: { total_tokens: 'many' } }), 0);
  assert.equal(whole({ usage: null }), 0);
  assert.equal(whole('{"usage": {"total_tokens": 5}'), 0, 'not JSON');
  assert.equal(whole({ error_code: 'MODEL_ERROR', message: 'bad' }), 0);

  const streamed = (events: unknown[]): number => {
    const m = new TokenMeter();
    for (const e of events) m.chunk(Buffer.from(e === '[DONE]' ? 'data: [DONE]\n\n' : `data: ${JSON.stringify(e)}\n\n`));
    return m.tokens;
  };
  const piece = (content: string): unknown => ({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content }, finish_reason: null }] });
  const pieces = [piece(''), piece('He'), piece('llo'), piece('"usage"'), { object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, finish_reason: 'length' }] }];
  assert.equal(streamed([...pieces, '[DONE]']), 6, 'no usage chunk (generated text saying "usage" is not one): every chunk counts');
  assert.equal(streamed([...pieces, { choices: [], usage: { prompt_tokens: 20, completion_tokens: 4, total_tokens: 24 } }, '[DONE]']), 24);
  assert.equal(streamed([]), 0);
});

const CEILING = { maxBodyBytes: 1024 };
const rate = (l: Record<string, unknown>): Record<string, unknown> => ({ rate_limits: [{ calls: 5, renewal_period: 'minute', ...l }] });

test('ai_gateway validation: each bad value is a 400 naming the field path and the value', () => {
  const cases: Array<[body: unknown, message: string]> = [
    [rate({ calls: 0 }), `Invalid value 0 for 'rate_limits[0].calls': expected a positive integer.`],
    [rate({ calls: -3 }), `Invalid value -3 for 'rate_limits[0].calls': expected a positive integer.`],
    [rate({ calls: 2.5 }), `Invalid value 2.5 for 'rate_limits[0].calls': expected a positive integer.`],
    [rate({ calls: '5' }), `Invalid value "5" for 'rate_limits[0].calls': expected a positive integer.`],
    [{ rate_limits: [{ renewal_period: 'minute' }] }, `Invalid value undefined for 'rate_limits[0].calls': expected a positive integer (or "tokens" for a token limit).`],
    [{ rate_limits: [{ tokens: 0, renewal_period: 'minute' }] }, `Invalid value 0 for 'rate_limits[0].tokens': expected a positive integer.`],
    [{ rate_limits: [{ tokens: 1.5, renewal_period: 'minute' }] }, `Invalid value 1.5 for 'rate_limits[0].tokens': expected a positive integer.`],
    [{ rate_limits: [{ tokens: '100', renewal_period: 'minute' }] }, `Invalid value "100" for 'rate_limits[0].tokens': expected a positive integer.`],
    [rate({ renewal_period: 'hour' }), `Invalid value "hour" for 'rate_limits[0].renewal_period': expected "minute".`],
    [{ rate_limits: [{ calls: 5 }] }, `Invalid value undefined for 'rate_limits[0].renewal_period': expected "minute".`],
    [rate({ key: 'group' }), `Invalid value "group" for 'rate_limits[0].key': expected "user" or "endpoint".`],
    [rate({ tokens: 10 }),
      `Invalid value 10 for 'rate_limits[0].tokens': expected no "tokens" next to "calls" (a limit counts either calls or tokens; add a second limit for the other).`],
    [rate({ requests: 10 }), `Unknown key 'requests' in 'rate_limits[0]'.`],
    [{ rate_limits: [{ calls: 5, renewal_period: 'minute', key: 'endpoint' }, { calls: 9, renewal_period: 'minute', key: 'endpoint' }] },
      `Invalid value "endpoint" for 'rate_limits[1].key': expected at most one calls limit per key (rate_limits[0] already limits calls with key "endpoint").`],
    [{ rate_limits: [{ calls: 5, renewal_period: 'minute' }, { calls: 9, renewal_period: 'minute', key: 'user' }] },
      `Invalid value "user" for 'rate_limits[1].key': expected at most one calls limit per key (rate_limits[0] already limits calls with key "user").`],
    [{ rate_limits: [{ tokens: 5, renewal_period: 'minute' }, { calls: 5, renewal_period: 'minute' }, { tokens: 9, renewal_period: 'minute', key: 'user' }] },
      `Invalid value "user" for 'rate_limits[2].key': expected at most one tokens limit per key (rate_limits[0] already limits tokens with key "user").`],
    [{ rate_limits: { calls: 5 } }, `Invalid value {"calls":5} for 'rate_limits': expected an array of {"calls" or "tokens", "renewal_period", "key"} objects.`],
    [{ input_limits: { max_body_bytes: 0 } }, `Invalid value 0 for 'input_limits.max_body_bytes': expected a positive integer.`],
    [{ input_limits: { max_body_bytes: 2048 } },
      `Invalid value 2048 for 'input_limits.max_body_bytes': expected at most the server's maxBodySize of 1024 bytes (raise maxBodySize in the server config to allow more).`],
  ];
  for (const [body, message] of cases) {
    assert.throws(() => compileAiGateway(body, CEILING, ''), (err: unknown) => {
      assert.ok(err instanceof FerryError);
      assert.equal(err.code, 'INVALID_PARAMETER_VALUE');
      assert.equal(err.message, message, JSON.stringify(body));
      return true;
    });
  }
  // At create time the same errors are under `ai_gateway.`.
  assert.throws(() => compileAiGateway(rate({ calls: 0 }), CEILING), /'ai_gateway\.rate_limits\[0\]\.calls'/);
});

test('ai_gateway compile: key defaults to "user", both keys may be set, the view is the Databricks shape', () => {
  const a = compileAiGateway({
    rate_limits: [{ calls: 100, renewal_period: 'minute' }, { calls: 1000, renewal_period: 'minute', key: 'endpoint' }],
    fallback_config: { enabled: true },
    input_limits: { max_body_bytes: 1024 },
  }, CEILING, '');
  assert.deepEqual(a, { fallbackEnabled: true, rateLimits: [perUser(100), perEndpoint(1000)], maxBodyBytes: 1024 });
  assert.deepEqual(aiGatewayView(a), {
    rate_limits: [{ calls: 100, renewal_period: 'minute', key: 'user' }, { calls: 1000, renewal_period: 'minute', key: 'endpoint' }],
    fallback_config: { enabled: true },
    input_limits: { max_body_bytes: 1024 },
  });
  assert.deepEqual(aiGatewayView(compileAiGateway(undefined, CEILING)), { fallback_config: { enabled: false } });
  assert.deepEqual(compileAiGateway({ rate_limits: [] }, CEILING, '').rateLimits, []);
});

test('ai_gateway compile: tokens limits next to calls limits, shown as given', () => {
  const limits = [
    { tokens: 5000, renewal_period: 'minute', key: 'user' },
    { calls: 100, renewal_period: 'minute', key: 'user' },
    { tokens: 50_000, renewal_period: 'minute', key: 'endpoint' },
  ];
  const a = compileAiGateway({ rate_limits: limits }, CEILING, '');
  assert.deepEqual(a.rateLimits, [tokensPerUser(5000), perUser(100), tokensPerEndpoint(50_000)]);
  assert.deepEqual(aiGatewayView(a), { rate_limits: limits, fallback_config: { enabled: false } });
  assert.deepEqual(compileAiGateway({ rate_limits: [{ tokens: 10, renewal_period: 'minute' }] }, CEILING, '').rateLimits, [tokensPerUser(10)], 'key defaults to "user"');
});
