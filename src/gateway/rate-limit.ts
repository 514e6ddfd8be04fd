/**
 * Per-endpoint rate limits (Databricks `ai_gateway.rate_limits`): `calls` per renewal period,
 * counted per caller (`key: "user"`, by authenticated principal) or for all callers together
 * (`key: "endpoint"`).
 *
 * Algorithm: GCRA, the token bucket kept as one number per bucket. A bucket holds `calls` calls and
 * refills one every `periodMs / calls`; its state is the theoretical arrival time (TAT): the time
 * at which it would be full again. A call is allowed when, after it, the bucket is not "more than
 * one period in debt", i.e. `max(tat, now) + interval - now <= periodMs`.
 *
 * Worked example (checked by test/rate-limit.test.ts): 5 calls per minute, interval 12 s. Eight
 * calls at t = 0: the first five move the TAT to 12, 24, 36, 48, 60 s; the sixth would move it to
 * 72 s, 12 s over one period, so it is refused with Retry-After 12, as are the seventh and eighth.
 * At t = 12 s one call is allowed again (TAT 72 s), the next one at t = 24 s.
 *
 * Decisions are pure functions of a bucket's TAT and the time (CONVENTIONS 6); `RateLimiter` keeps
 * the buckets of one endpoint and is the only stateful part.
 */
import { FerryError } from '../errors.js';
import type { Context, Reply } from '../http/index.js';

/** Length of each renewal period Databricks accepts (only "minute" so far). */
export const RENEWAL_PERIOD_MS = { minute: 60_000 } as const;
export type RenewalPeriod = keyof typeof RENEWAL_PERIOD_MS;
export const RATE_LIMIT_KEYS = ['user', 'endpoint'] as const;
export type RateLimitKey = (typeof RATE_LIMIT_KEYS)[number];

/** One compiled rate limit of an endpoint. */
export interface RateLimit {
  /** Calls allowed per renewal period (a positive integer); also the burst a full bucket allows. */
  calls: number;
  renewalPeriod: RenewalPeriod;
  /** What a bucket counts: one caller's calls ("user") or everyone's ("endpoint"). */
  key: RateLimitKey;
}

/** A limit with its timing precomputed for the hot path. */
export interface BucketSpec {
  readonly limit: RateLimit;
  readonly periodMs: number;
  /** Time one call takes to refill: `periodMs / calls`. */
  readonly intervalMs: number;
}

/**
 * Slack for float rounding of the TAT sums (ms). Without it, 7 calls per minute (interval
 * 8571.43 ms) could refuse the 7th call of a burst because 6 × interval rounds above 6/7 of a minute.
 */
const ROUNDING_SLACK_MS = 1e-6;

export function bucketSpec(limit: RateLimit): BucketSpec {
  const periodMs = RENEWAL_PERIOD_MS[limit.renewalPeriod];
  return { limit, periodMs, intervalMs: periodMs / limit.calls };
}

/**
 * How long (ms) a call must wait before the bucket at `tatMs` allows it; 0 means allowed now.
 * `tatMs` undefined is a new (full) bucket. Example: 5/min, TAT 60 s, now 0 → 12000.
 */
export function waitMs(spec: BucketSpec, tatMs: number | undefined, nowMs: number): number {
  const wait = Math.max(tatMs ?? nowMs, nowMs) + spec.intervalMs - nowMs - spec.periodMs;
  return wait <= ROUNDING_SLACK_MS ? 0 : wait;
}

/** The bucket's TAT after one allowed call. Example: 5/min, new bucket, now 0 → 12000. */
export function consume(spec: BucketSpec, tatMs: number | undefined, nowMs: number): number {
  return Math.max(tatMs ?? nowMs, nowMs) + spec.intervalMs;
}

/**
 * The buckets of one endpoint: at most one per-user limit and one endpoint-wide limit. A call must
 * pass both; it is checked against both before either is charged, so a refusal by one does not
 * use up the other.
 *
 * Memory: a user bucket whose TAT has passed is full again, exactly like a bucket that does not
 * exist, so forgetting it changes no decision. Such buckets are swept at most once per period,
 * during a call: the map holds only the callers of roughly the last period.
 */
export class RateLimiter {
  private readonly user: BucketSpec | undefined;
  private readonly endpoint: BucketSpec | undefined;
  private readonly users = new Map<string, number>();
  private endpointTatMs: number | undefined;
  private nextSweepMs = 0;

  /** `limits` hold at most one limit per key (config validation guarantees it). */
  constructor(readonly endpointName: string, limits: readonly RateLimit[]) {
    const of = (key: RateLimitKey): BucketSpec | undefined => {
      const l = limits.find((x) => x.key === key);
      return l === undefined ? undefined : bucketSpec(l);
    };
    this.user = of('user');
    this.endpoint = of('endpoint');
  }

  /** User buckets held now: the memory the limiter uses, about one period's callers (see the sweep). */
  get trackedUsers(): number {
    return this.users.size;
  }

  /**
   * Charges one call by `principal` at `nowMs`, or throws 429 REQUEST_LIMIT_EXCEEDED with
   * `retryAfterS` (whole seconds, at least 1) when a limit refuses it.
   */
  admit(principal: string, nowMs: number): void {
    const user = this.user;
    const endpoint = this.endpoint;
    let userTat: number | undefined;
    if (user !== undefined) {
      if (nowMs >= this.nextSweepMs) this.sweep(nowMs, user.periodMs);
      userTat = this.users.get(principal);
      const wait = waitMs(user, userTat, nowMs);
      if (wait > 0) throw this.refusal(user, wait);
    }
    if (endpoint !== undefined) {
      const wait = waitMs(endpoint, this.endpointTatMs, nowMs);
      if (wait > 0) throw this.refusal(endpoint, wait);
      this.endpointTatMs = consume(endpoint, this.endpointTatMs, nowMs);
    }
    if (user !== undefined) this.users.set(principal, consume(user, userTat, nowMs));
  }

  /** Drops the user buckets that are full again (TAT passed); see the class comment. */
  private sweep(nowMs: number, periodMs: number): void {
    for (const [principal, tat] of this.users) if (tat <= nowMs) this.users.delete(principal);
    this.nextSweepMs = nowMs + periodMs;
  }

  private refusal(spec: BucketSpec, wait: number): FerryError {
    const retryAfterS = Math.max(1, Math.ceil(wait / 1000));
    const { calls, renewalPeriod, key } = spec.limit;
    return new FerryError(
      'REQUEST_LIMIT_EXCEEDED',
      `Rate limit of ${calls} call${calls === 1 ? '' : 's'} per ${renewalPeriod} per ${key} exceeded for serving endpoint '${this.endpointName}'; retry in ${retryAfterS} s.`,
      { retryAfterS },
    );
  }
}

/** An inference handler with its endpoint's route (an `EndpointRoute`) already looked up. */
export type RouteHandler<R> = (ctx: Context, route: R) => Promise<Reply | undefined>;

/**
 * Gateway step (CONVENTIONS 8): refuses a call over its endpoint's rate limits before the body is
 * read. Endpoints without limits pay one property check. The clock is monotonic, so a wall-clock
 * jump neither refills nor drains buckets.
 */
export function rateLimited<R extends { rateLimiter: RateLimiter | undefined }>(next: RouteHandler<R>): RouteHandler<R> {
  return (ctx, route) => {
    route.rateLimiter?.admit(ctx.principal ?? '', performance.now());
    return next(ctx, route);
  };
}
