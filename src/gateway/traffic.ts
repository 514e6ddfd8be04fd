/**
 * EntityTraffic: the gateway's live view of one served entity. It owns the entity's ready
 * backends, bounds how many requests each replica carries (backpressure), and holds requests that
 * find no replica with room in a bounded buffer (the activator): they wait, in arrival order, for
 * a replica to turn ready or free up, or fail with 429 (buffer full) or 503 (deadline passed).
 * The control plane adds and removes backends; the autoscaler reads `inFlight`; `onDemand`
 * pokes it when a request has to wait for capacity (e.g. scale from zero).
 */
import { FerryError } from '../errors.js';
import { pickAffine, pickBackend, type Backend } from './pick.js';

export interface TrafficOptions {
  /** Requests one replica carries at once; beyond it requests wait or go to another replica. */
  maxConcurrencyPerReplica: number;
  /** Requests the buffer holds at most; one more is refused with 429. */
  maxQueued: number;
  /** How long a request may wait in the buffer before a 503. */
  queueTimeoutMs: number;
  /** Called (synchronously, so keep it cheap) whenever a request starts waiting. */
  onDemand: () => void;
  /** Names the entity in errors. */
  name: string;
  /**
   * Called synchronously after a backend is added or removed (gateway workers mirror the
   * backends: src/gateway/route-mirror.ts); absent: nobody mirrors them.
   */
  onBackendsChange?: (() => void) | undefined;
}

interface Waiter {
  resolve: (b: Backend) => void;
  reject: (err: FerryError) => void;
  timer: NodeJS.Timeout;
  exclude: Backend | undefined;
  affinity: number | undefined;
}

/** Seconds a client should wait before retrying a request refused for lack of capacity. */
const RETRY_AFTER_S = 1;
/** Transport failures in a row after which a replica is ejected, and for how long. */
const EJECT_AFTER_FAILURES = 3;
const EJECT_MS = 5000;
/**
 * Retry budget (as Envoy's): retries may add at most this share of the requests of the last
 * `RETRY_WINDOW_MS`, plus `MIN_RETRIES_PER_WINDOW`, so a failing replica set cannot turn into a
 * retry storm. Example: 1000 requests in the window → at most 200 + 10 retries.
 */
const RETRY_BUDGET_RATIO = 0.2;
const MIN_RETRIES_PER_WINDOW = 10;
const RETRY_WINDOW_MS = 1000;

export class EntityTraffic {
  readonly backends: Backend[] = [];
  private readonly waiters: Waiter[] = [];
  /** Requests admitted and not yet released (sent to a replica or waiting). */
  private admitted = 0;
  /** Requests between `begin` and `end`: the concurrency the autoscaler sees. */
  private active = 0;
  /** ∫ active dt since `windowStartMs` (request·ms), for the time-weighted average. */
  private area = 0;
  private lastChangeMs = performance.now();
  private windowStartMs = this.lastChangeMs;

  /** Requests and retries in the current retry-budget window. */
  private budget = { startMs: 0, requests: 0, retries: 0 };

  constructor(readonly opts: TrafficOptions) {}

  /** Counts a request against the retry budget's window. */
  countRequest(): void {
    this.rollBudget().requests++;
  }

  /** Takes one retry from the budget; false when the budget is spent. */
  tryRetry(): boolean {
    const b = this.rollBudget();
    if (b.retries >= MIN_RETRIES_PER_WINDOW + RETRY_BUDGET_RATIO * b.requests) return false;
    b.retries++;
    return true;
  }

  /** A transport failure on `b`: after `EJECT_AFTER_FAILURES` in a row it is not picked for `EJECT_MS`. */
  markFailure(b: Backend): void {
    b.consecutiveFailures = (b.consecutiveFailures ?? 0) + 1;
    if (b.consecutiveFailures >= EJECT_AFTER_FAILURES) b.ejectedUntilMs = performance.now() + EJECT_MS;
  }

  markSuccess(b: Backend): void {
    if (b.consecutiveFailures) b.consecutiveFailures = 0;
  }

  private rollBudget(): { startMs: number; requests: number; retries: number } {
    const now = performance.now();
    if (now - this.budget.startMs >= RETRY_WINDOW_MS) this.budget = { startMs: now, requests: 0, retries: 0 };
    return this.budget;
  }

  /**
   * Average number of requests in flight (on replicas or waiting) since the previous call,
   * weighted by time: what the autoscaler samples. An instantaneous count read once a second
   * would mostly see the gaps between a fast model's requests. Example: 8 requests in flight for
   * 500 ms, then 0 for 500 ms → 4.
   */
  takeAverageConcurrency(): number {
    const now = performance.now();
    this.area += this.active * (now - this.lastChangeMs);
    this.lastChangeMs = now;
    const spanMs = now - this.windowStartMs;
    const avg = spanMs > 0 ? this.area / spanMs : this.active;
    this.area = 0;
    this.windowStartMs = now;
    return avg;
  }

  /**
   * A request for this entity arrived (call `end` when its answer is written). Counts the whole
   * time the gateway holds it (body, wait, model, answer), as a replica-side queue would.
   */
  begin(): void {
    this.accumulate();
    this.active++;
  }

  end(): void {
    this.accumulate();
    this.active--;
  }

  private accumulate(): void {
    const now = performance.now();
    this.area += this.active * (now - this.lastChangeMs);
    this.lastChangeMs = now;
  }

  /** Requests the gateway holds for this entity right now (reading, waiting, on a replica, answering). */
  get inFlight(): number {
    return this.active;
  }

  get queued(): number {
    return this.waiters.length;
  }

  /**
   * A backend with room for one more request (its outstanding count already incremented), now or
   * once one frees up. `exclude` skips a backend that just failed this request. `affinity` (a
   * family model's hash, `modelAffinity`) prefers the replicas that model's requests went to
   * before, within a load bound (see `pickAffine`).
   */
  acquire(exclude?: Backend, affinity?: number): Promise<Backend> {
    const b = this.pick(exclude, affinity);
    if (b !== undefined && this.waiters.length === 0) {
      b.outstanding++;
      this.admitted++;
      return Promise.resolve(b);
    }
    if (this.waiters.length >= this.opts.maxQueued) {
      return Promise.reject(new FerryError('REQUEST_LIMIT_EXCEEDED',
        `Served entity '${this.opts.name}' has ${this.waiters.length} requests waiting for capacity (the limit); retry shortly.`, { retryAfterS: RETRY_AFTER_S }));
    }
    this.admitted++;
    return new Promise<Backend>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        exclude,
        affinity,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          this.admitted--;
          reject(new FerryError('TEMPORARILY_UNAVAILABLE',
            `No replica of served entity '${this.opts.name}' had room within ${this.opts.queueTimeoutMs} ms; retry shortly.`, { retryAfterS: RETRY_AFTER_S }));
        }, this.opts.queueTimeoutMs),
      };
      this.waiters.push(waiter);
      this.opts.onDemand();
      this.dispatch();
    });
  }

  /** Gives back what `acquire` took; a waiting request gets the room. */
  release(b: Backend): void {
    b.outstanding--;
    this.admitted--;
    this.dispatch();
  }

  addBackend(b: Backend): void {
    this.backends.push(b);
    this.opts.onBackendsChange?.();
    this.dispatch();
  }

  /** Takes a backend out of rotation (requests already on it finish). */
  removeBackend(b: Backend): boolean {
    const i = this.backends.indexOf(b);
    if (i < 0) return false;
    this.backends.splice(i, 1);
    this.opts.onBackendsChange?.();
    return true;
  }

  /** Fails every waiting request (the entity is going away). */
  rejectWaiting(err: FerryError): void {
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      this.admitted--;
      w.reject(err);
    }
  }

  private pick(exclude: Backend | undefined, affinity?: number): Backend | undefined {
    const max = this.opts.maxConcurrencyPerReplica;
    const usable = (x: Backend, now: number): boolean => x !== exclude && x.outstanding < max && (x.ejectedUntilMs === undefined || x.ejectedUntilMs <= now);
    const now = performance.now();
    if (affinity !== undefined) {
      const a = pickAffine(this.backends, affinity, (x) => usable(x, now));
      if (a !== undefined) return a;
    }
    const b = pickBackend(this.backends, Math.random(), Math.random(), exclude);
    if (b !== undefined && usable(b, now)) return b;
    // The two random choices were full, ejected or excluded: the least loaded usable one.
    let best: Backend | undefined;
    for (const x of this.backends) if (usable(x, now) && (best === undefined || x.outstanding < best.outstanding)) best = x;
    // Every replica ejected: an ejected one is better than none (ejection is a preference).
    if (best === undefined) for (const x of this.backends) if (x !== exclude && x.outstanding < max && (best === undefined || x.outstanding < best.outstanding)) best = x;
    return best;
  }

  /** Hands free capacity to waiting requests, oldest first. */
  private dispatch(): void {
    while (this.waiters.length > 0) {
      const w = this.waiters[0] as Waiter;
      const b = this.pick(w.exclude, w.affinity);
      if (b === undefined) return;
      this.waiters.shift();
      clearTimeout(w.timer);
      b.outstanding++;
      w.resolve(b);
    }
  }
}
