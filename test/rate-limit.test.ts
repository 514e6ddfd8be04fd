/** Rate limits and input limits of `ai_gateway`: the GCRA decisions on a virtual clock, and validation. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { aiGatewayView, compileAiGateway } from '../src/control/config.js';
import { FerryError } from '../src/errors.js';
import { RateLimiter, type RateLimit } from '../src/gateway/index.js';

const perUser = (calls: number): RateLimit => ({ calls, renewalPeriod: 'minute', key: 'user' });
const perEndpoint = (calls: number): RateLimit => ({ calls, renewalPeriod: 'minute', key: 'endpoint' });

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

const CEILING = { maxBodyBytes: 1024 };
const rate = (l: Record<string, unknown>): Record<string, unknown> => ({ rate_limits: [{ calls: 5, renewal_period: 'minute', ...l }] });

test('ai_gateway validation: each bad value is a 400 naming the field path and the value', () => {
  const cases: Array<[body: unknown, message: string]> = [
    [rate({ calls: 0 }), `Invalid value 0 for 'rate_limits[0].calls': expected a positive integer.`],
    [rate({ calls: -3 }), `Invalid value -3 for 'rate_limits[0].calls': expected a positive integer.`],
    [rate({ calls: 2.5 }), `Invalid value 2.5 for 'rate_limits[0].calls': expected a positive integer.`],
    [rate({ calls: '5' }), `Invalid value "5" for 'rate_limits[0].calls': expected a positive integer.`],
    [{ rate_limits: [{ renewal_period: 'minute' }] }, `Invalid value undefined for 'rate_limits[0].calls': expected a positive integer.`],
    [rate({ renewal_period: 'hour' }), `Invalid value "hour" for 'rate_limits[0].renewal_period': expected "minute".`],
    [{ rate_limits: [{ calls: 5 }] }, `Invalid value undefined for 'rate_limits[0].renewal_period': expected "minute".`],
    [rate({ key: 'group' }), `Invalid value "group" for 'rate_limits[0].key': expected "user" or "endpoint".`],
    [rate({ tokens: 10 }), `Unknown key 'tokens' in 'rate_limits[0]'.`],
    [{ rate_limits: [{ calls: 5, renewal_period: 'minute', key: 'endpoint' }, { calls: 9, renewal_period: 'minute', key: 'endpoint' }] },
      `Invalid value "endpoint" for 'rate_limits[1].key': expected at most one rate limit per key (rate_limits[0] already has key "endpoint").`],
    [{ rate_limits: [{ calls: 5, renewal_period: 'minute' }, { calls: 9, renewal_period: 'minute', key: 'user' }] },
      `Invalid value "user" for 'rate_limits[1].key': expected at most one rate limit per key (rate_limits[0] already has key "user").`],
    [{ rate_limits: { calls: 5 } }, `Invalid value {"calls":5} for 'rate_limits': expected an array of {"calls", "renewal_period", "key"} objects.`],
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
