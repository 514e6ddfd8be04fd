/**
 * Per-endpoint rate limits (Databricks `ai_gateway.rate_limits`): `calls` or `tokens` per renewal
 * period, counted per caller (`key: "user"`, by authenticated principal) or for all callers
 * together (`key: "endpoint"`).
 *
 * Algorithm: GCRA, the token bucket kept as one number per bucket. A bucket holds `calls` calls (or
 * `tokens` tokens) and refills one every `periodMs / calls`; its state is the theoretical arrival
 * time (TAT): the time at which it would be full again. A call is allowed when, after one unit, the
 * bucket is not "more than one period in debt", i.e. `max(tat, now) + interval - now <= periodMs`.
 *
 * Worked example (checked by test/rate-limit.test.ts): 5 calls per minute, interval 12 s. Eight
 * calls at t = 0: the first five move the TAT to 12, 24, 36, 48, 60 s; the sixth would move it to
 * 72 s, 12 s over one period, so it is refused with Retry-After 12, as are the seventh and eighth.
 * At t = 12 s one call is allowed again (TAT 72 s), the next one at t = 24 s.
 *
 * Token limits: a call's tokens are known only after its answer, so a call is admitted by the same
 * test with one token (the bucket is not in debt), and charged its tokens when the answer is done:
 * the TAT moves by `tokens` intervals and may go past one period, a debt later calls wait out.
 * Worked example (checked too): 1000 tokens per minute, interval 60 ms. A call at t = 0 is admitted
 * and its answer, done at t = 0, is charged 1500 tokens: TAT 90 s, 30 s more than a full period.
 * A call at t = 0 waits 90 + 0.06 - 60 = 30.06 s (Retry-After 31); at t = 30.06 s it is admitted.
 * Calls admitted while earlier answers are still running are not held back by their tokens: a
 * token limit bounds the rate over time, not the tokens in flight.
 *
 * Decisions are pure functions of a bucket's TAT and the time (tests walk virtual time); `RateLimiter` keeps
 * the buckets of one endpoint and is the only stateful part.
 */
import { FerryError } from '../errors.js';
import type { Context, Reply } from '../http/index.js';

/** Length of each renewal period Databricks accepts (only "minute" so far). */
export const RENEWAL_PERIOD_MS = { minute: 60_000 } as const;
export type RenewalPeriod = keyof typeof RENEWAL_PERIOD_MS;
export const RATE_LIMIT_KEYS = ['user', 'endpoint'] as const;
export type RateLimitKey = (typeof RATE_LIMIT_KEYS)[number];

interface RateLimitBase {
  renewalPeriod: RenewalPeriod;
  /** What a bucket counts: one caller's calls or tokens ("user") or everyone's ("endpoint"). */
  key: RateLimitKey;
}

/** Calls allowed per renewal period (a positive integer); also the burst a full bucket allows. */
export interface CallLimit extends RateLimitBase {
  calls: number;
}

/** Tokens (LLM `usage.total_tokens`) allowed per renewal period (a positive integer). */
export interface TokenLimit extends RateLimitBase {
  tokens: number;
}

/** One compiled rate limit of an endpoint: of calls or of tokens. */
export type RateLimit = CallLimit | TokenLimit;

/** A limit with its timing precomputed for the hot path. */
export interface BucketSpec {
  readonly limit: RateLimit;
  readonly periodMs: number;
  /** Time one call (or token) takes to refill: `periodMs / calls` (or `/ tokens`). */
  readonly intervalMs: number;
}

/**
 * Slack for float rounding of the TAT sums (ms). Without it, 7 calls per minute (interval
 * 8571.43 ms) could refuse the 7th call of a burst because 6 × interval rounds above 6/7 of a minute.
 */
const ROUNDING_SLACK_MS = 1e-6;

export function bucketSpec(limit: RateLimit): BucketSpec {
  const periodMs = RENEWAL_PERIOD_MS[limit.renewalPeriod];
  return { limit, periodMs, intervalMs: periodMs / ('tokens' in limit ? limit.tokens : limit.calls) };
}

/**
 * How long (ms) a call must wait before the bucket at `tatMs` allows it (one call, or for a token
 * limit one token); 0 means allowed now. `tatMs` undefined is a new (full) bucket.
 * Example: 5/min, TAT 60 s, now 0 → 12000.
 */
export function waitMs(spec: BucketSpec, tatMs: number | undefined, nowMs: number): number {
  const wait = Math.max(tatMs ?? nowMs, nowMs) + spec.intervalMs - nowMs - spec.periodMs;
  return wait <= ROUNDING_SLACK_MS ? 0 : wait;
}

/** The bucket's TAT after one allowed call. Example: 5/min, new bucket, now 0 → 12000. */
export function consume(spec: BucketSpec, tatMs: number | undefined, nowMs: number): number {
  return consumeTokens(spec, tatMs, nowMs, 1);
}

/**
 * The bucket's TAT after charging `n` units (a token limit: the tokens of an answer), which may
 * put it in debt. Example: 1000 tokens/min, new bucket, now 0, n 1500 → 90000.
 */
export function consumeTokens(spec: BucketSpec, tatMs: number | undefined, nowMs: number, n: number): number {
  return Math.max(tatMs ?? nowMs, nowMs) + n * spec.intervalMs;
}

/**
 * The buckets of one limit: one per principal (key "user") or one shared by all (key "endpoint",
 * kept under the principal ""). A TAT that has passed is a full bucket, exactly like a missing
 * one, so forgetting it changes no decision: such entries are swept at most once per period,
 * during a call, and the map holds only the callers of roughly the last period (plus those in debt).
 */
class Buckets {
  private readonly tats = new Map<string, number>();
  private nextSweepMs = 0;

  constructor(readonly spec: BucketSpec) {}

  get principals(): IterableIterator<string> {
    return this.tats.keys();
  }

  wait(principal: string, nowMs: number): number {
    if (nowMs >= this.nextSweepMs) this.sweep(nowMs);
    return waitMs(this.spec, this.tats.get(this.idOf(principal)), nowMs);
  }

  charge(principal: string, nowMs: number, n: number): void {
    const id = this.idOf(principal);
    this.tats.set(id, consumeTokens(this.spec, this.tats.get(id), nowMs, n));
  }

  private idOf(principal: string): string {
    return this.spec.limit.key === 'user' ? principal : '';
  }

  private sweep(nowMs: number): void {
    for (const [id, tat] of this.tats) if (tat <= nowMs) this.tats.delete(id);
    this.nextSweepMs = nowMs + this.spec.periodMs;
  }
}

/**
 * The buckets of one endpoint: at most one calls limit and one tokens limit per key. A call must
 * pass all of them; it is checked against all before any is charged, so a refusal by one does not
 * use up another, and a refusal names the limit with the longest wait (its Retry-After is when
 * every limit allows the call).
 */
export class RateLimiter {
  private readonly calls: Buckets[];
  private readonly tokens: Buckets[];
  /** Calls limits, then tokens limits: the order a call is checked in. */
  private readonly all: Buckets[];

  /** `limits` hold at most one calls and one tokens limit per key (config validation guarantees it). */
  constructor(readonly endpointName: string, limits: readonly RateLimit[]) {
    this.calls = limits.filter((l) => !('tokens' in l)).map((l) => new Buckets(bucketSpec(l)));
    this.tokens = limits.filter((l) => 'tokens' in l).map((l) => new Buckets(bucketSpec(l)));
    this.all = [...this.calls, ...this.tokens];
  }

  /** Whether answers must be metered: the endpoint has a token limit. */
  get countsTokens(): boolean {
    return this.tokens.length > 0;
  }

  /** Principals holding a bucket of a per-user limit now: the memory the limiter uses (see `Buckets`). */
  get trackedUsers(): number {
    const held = new Set<string>();
    for (const b of this.all) if (b.spec.limit.key === 'user') for (const p of b.principals) held.add(p);
    return held.size;
  }

  /**
   * Admits one call by `principal` at `nowMs` and charges it to the calls limits, or throws 429
   * REQUEST_LIMIT_EXCEEDED with `retryAfterS` (whole seconds, at least 1) when a limit refuses it.
   */
  admit(principal: string, nowMs: number): void {
    let refusing: { spec: BucketSpec; wait: number } | undefined;
    for (const b of this.all) {
      const wait = b.wait(principal, nowMs);
      if (wait > (refusing?.wait ?? 0)) refusing = { spec: b.spec, wait };
    }
    if (refusing !== undefined) throw this.refusal(refusing.spec, refusing.wait);
    for (const b of this.calls) b.charge(principal, nowMs, 1);
  }

  /** Charges an admitted call's answer, `tokens` tokens, to the tokens limits at `nowMs`. */
  chargeTokens(principal: string, nowMs: number, tokens: number): void {
    if (tokens > 0) for (const b of this.tokens) b.charge(principal, nowMs, tokens);
  }

  private refusal(spec: BucketSpec, wait: number): FerryError {
    const retryAfterS = Math.max(1, Math.ceil(wait / 1000));
    const l = spec.limit;
    const [n, unit] = 'tokens' in l ? [l.tokens, 'token'] : [l.calls, 'call'];
    return new FerryError(
      'REQUEST_LIMIT_EXCEEDED',
      `Rate limit of ${n} ${unit}${n === 1 ? '' : 's'} per ${l.renewalPeriod} per ${l.key} exceeded for serving endpoint '${this.endpointName}'; retry in ${retryAfterS} s.`,
      { retryAfterS },
    );
  }
}

/**
 * Counts the tokens of one answer for token limits. A whole answer counts its `usage.total_tokens`
 * (OpenAI's shape, as llm replicas answer on every route), or 0 without one: token limits only
 * count LLM usage. A streamed answer counts the `usage` of its usage chunk (sent when the client
 * set `stream_options.include_usage`), else one token per chunk relayed: llm replicas send one
 * chunk per generated text piece (about one per token; a character spread over several tokens is
 * one piece), plus the chat role chunk, the finish chunk and `[DONE]`; prompt tokens are then not
 * counted.
 */
export class TokenMeter {
  private usageTokens: number | undefined;
  private chunks = 0;

  /** The tokens to charge. */
  get tokens(): number {
    return this.usageTokens ?? this.chunks;
  }

  /** A whole (non-streamed) answer. */
  answer(body: Buffer): void {
    this.usageTokens = totalTokensOf(body.toString('utf8')) ?? 0;
  }

  /** One chunk of a streamed answer, as relayed (Server-Sent Events: `data: {json}` lines). */
  chunk(chunk: Buffer): void {
    this.chunks++;
    // Only the usage chunk has the key `"usage"` unescaped (in generated text it would be `\"usage\"`).
    if (!chunk.includes('"usage"')) return;
    for (const line of chunk.toString('utf8').split('\n')) {
      const total = line.startsWith('data:') ? totalTokensOf(line.slice('data:'.length)) : undefined;
      if (total !== undefined) this.usageTokens = total;
    }
  }
}

/** `usage.total_tokens` of an OpenAI answer or chunk, undefined when `json` has none. */
function totalTokensOf(json: string): number | undefined {
  if (!json.includes('"usage"')) return undefined;
  try {
    const total = (JSON.parse(json) as { usage?: { total_tokens?: unknown } } | null)?.usage?.total_tokens;
    return typeof total === 'number' && Number.isFinite(total) && total >= 0 ? total : undefined;
  } catch {
    return undefined;
  }
}

/**
 * An inference handler with its endpoint's route (an `EndpointRoute`) already looked up; `meter`
 * is given when the endpoint has a token limit: the handler reports its answer to it.
 */
export type RouteHandler<R> = (ctx: Context, route: R, meter?: TokenMeter) => Promise<Reply | undefined>;

/**
 * What the gateway step needs of an endpoint's limits: a `RateLimiter` in the process that holds
 * the buckets, or a gateway worker's stand-in that asks that process (`admit` then returns a
 * promise: src/gateway/worker-gateway.ts), so that every worker draws on the same buckets.
 */
export interface Admission {
  readonly countsTokens: boolean;
  /** Admits one call or throws (rejects) 429 REQUEST_LIMIT_EXCEEDED with `retryAfterS`. */
  admit(principal: string, nowMs: number): void | Promise<void>;
  chargeTokens(principal: string, nowMs: number, tokens: number): void;
}

/**
 * Gateway step (a `(next) => handler` middleware, like auth and tracing): refuses a call over its endpoint's rate limits before the body is
 * read and, with a token limit, charges the answer's tokens when it is done (also when it failed
 * part way: what was relayed counts). Endpoints without limits pay one property check, endpoints
 * without token limits no metering. The clock is monotonic, so a wall-clock jump neither refills
 * nor drains buckets.
 */
export function rateLimited<R extends { rateLimiter: Admission | undefined }>(next: RouteHandler<R>): RouteHandler<R> {
  const metered = async (ctx: Context, route: R, limiter: Admission, principal: string): Promise<Reply | undefined> => {
    const meter = new TokenMeter();
    try {
      return await next(ctx, route, meter);
    } finally {
      limiter.chargeTokens(principal, performance.now(), meter.tokens);
    }
  };
  // Not an async function: an endpoint without limits (or with call limits only) costs no promise here.
  return (ctx, route) => {
    const limiter = route.rateLimiter;
    if (limiter === undefined) return next(ctx, route);
    const principal = ctx.principal ?? '';
    const admitted = limiter.admit(principal, performance.now());
    const go = (): Promise<Reply | undefined> => (limiter.countsTokens ? metered(ctx, route, limiter, principal) : next(ctx, route));
    return admitted === undefined ? go() : admitted.then(go);
  };
}
