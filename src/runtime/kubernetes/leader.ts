/**
 * Leader election among Ferry server replicas over a coordination.k8s.io/v1 Lease: one replica
 * runs the reconciler and the autoscaler, the others serve the API and the gateway and wait.
 *
 * The decision (take the Lease, renew it, step down, wait) is `decideLeadership`, a pure function
 * of what was last read, my identity and the time (tests walk virtual time); `LeaderElector` is the loop
 * that reads and writes the Lease and applies it. Writes carry the resourceVersion they read, so
 * of two replicas racing for a free Lease the API server accepts one and answers the other 409.
 *
 * Time is measured on each replica's own clock, never compared across machines: a follower counts
 * a lease duration from the moment it first saw the current version of the Lease; the leader counts
 * its renew deadline, shorter than the lease duration, from the moment it started its last
 * successful renew. The leader's start is before the write, the follower's sighting after it, and
 * the deadline is shorter, so the leader always gives up first, with the difference as a margin
 * for timers firing late (client-go's leaderelection works the same way: 10 s and 15 s).
 */
import { ApiException, CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';

/**
 * The Lease the Ferry servers of one namespace elect their leader with; the install manifests'
 * Role lets them read and renew this one Lease only.
 */
export const DEFAULT_LEASE_NAME = 'ferry-server-leader';


/** The Lease as this replica last read it. */
export interface LeaseObservation {
  /** spec.holderIdentity; undefined or '' when nobody holds it (never taken, or released). */
  holder: string | undefined;
  /** metadata.resourceVersion: changes with every write, so a holder that renews changes it. */
  resourceVersion: string;
  /** My clock (ms) when I first saw this resourceVersion. */
  observedAtMs: number;
}

/** What to do next, decided by `decideLeadership`. */
export type LeadershipDecision =
  /** No Lease exists: create it with me as holder. */
  | { action: 'create' }
  /** The Lease is free or its holder stopped renewing: take it (a write with its resourceVersion). */
  | { action: 'acquire' }
  /** I hold it: renew it. */
  | { action: 'renew' }
  /** I held it but could not renew it within the renew deadline: another replica may take it soon. */
  | { action: 'step-down' }
  /** Someone else holds it: wait; it is mine to take at `expiresAtMs` unless it is renewed. */
  | { action: 'follow'; holder: string; expiresAtMs: number };

export interface LeadershipInput {
  /** The Lease as last read; undefined when it does not exist (404). */
  lease: LeaseObservation | undefined;
  identity: string;
  /** My clock (ms) when my last successful create/acquire/renew started; undefined when I am not leading. */
  renewedAtMs: number | undefined;
  nowMs: number;
  leaseDurationMs: number;
  /** How long a leader keeps leading without a successful renew; below leaseDurationMs. */
  renewDeadlineMs: number;
}

/**
 * Decides this replica's next step. Worked example with leaseDurationMs 15000 and renewDeadlineMs
 * 10000: replica B first reads the Lease held by A (version "7") at t=1000 → follow until 16000;
 * it reads "7" again at t=16000 (A stopped renewing) → acquire. A, which last renewed successfully
 * at t=0 and failed since, decides at t=10000 → step-down, 6 s before B can take over.
 */
export function decideLeadership(input: LeadershipInput): LeadershipDecision {
  const { lease, identity, renewedAtMs, nowMs, leaseDurationMs, renewDeadlineMs } = input;
  if (renewedAtMs !== undefined && nowMs - renewedAtMs >= renewDeadlineMs) return { action: 'step-down' };
  if (lease === undefined) return { action: 'create' };
  if (lease.holder === undefined || lease.holder === '') return { action: 'acquire' };
  // My own name on a Lease I do not know I hold: this replica restarted under the same identity
  // (same pod name) and may carry on at once.
  if (lease.holder === identity) return renewedAtMs === undefined ? { action: 'acquire' } : { action: 'renew' };
  const expiresAtMs = lease.observedAtMs + leaseDurationMs;
  return nowMs >= expiresAtMs ? { action: 'acquire' } : { action: 'follow', holder: lease.holder, expiresAtMs };
}

/**
 * The observation after reading `lease` at `nowMs`: a version seen before keeps its first
 * sighting time, so an unrenewed Lease ages; a new version starts a new lease duration.
 */
export function observeLease(previous: LeaseObservation | undefined, lease: { holder: string | undefined; resourceVersion: string }, nowMs: number): LeaseObservation {
  if (previous !== undefined && previous.resourceVersion === lease.resourceVersion) return previous;
  return { holder: lease.holder, resourceVersion: lease.resourceVersion, observedAtMs: nowMs };
}

export interface LeaderElectorOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  /** Default `DEFAULT_LEASE_NAME`. */
  leaseName?: string;
  /** Unique per replica and stable across its restarts: the pod name. */
  identity: string;
  /**
   * How long a Lease stays its holder's without a renew, e.g. 15000: a leader that dies is
   * replaced after 15 s at most (plus one renew interval for a follower to look).
   */
  leaseDurationMs: number;
  /**
   * How long the leader keeps leading when its renews fail, e.g. 10000; below leaseDurationMs, the
   * difference being the margin for late timers. Default: two thirds of leaseDurationMs.
   */
  renewDeadlineMs?: number;
  /** How often the leader renews and followers look, e.g. 2000; below renewDeadlineMs. */
  renewIntervalMs: number;
  /** Milliseconds clock; default Date.now. */
  now?: () => number;
  /** Errors talking to the API server (each is retried at the next interval), and listeners' errors. */
  onError?: (err: unknown) => void;
}

/**
 * Runs the election loop until `close()`. Listeners hear each change of leadership; `close()`
 * releases a held Lease so a follower takes over at its next look instead of after a lease
 * duration. A leader whose renews fail (or hang) stops leading at its renew deadline, by a timer
 * of its own rather than at the next look.
 */
export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private readonly leaseName: string;
  private readonly renewDeadlineMs: number;
  private readonly now: () => number;
  private readonly listeners: Array<(leading: boolean) => void> = [];
  /** The Lease as last read or written; a leader renews from it without reading first. */
  private lease: V1Lease | undefined;
  private observation: LeaseObservation | undefined;
  private renewedAtMs: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly firstLook: Promise<void>;
  private lookedOnce: () => void = () => undefined;

  constructor(private readonly opts: LeaderElectorOptions) {
    this.renewDeadlineMs = opts.renewDeadlineMs ?? Math.floor((opts.leaseDurationMs * 2) / 3);
    if (!(opts.renewIntervalMs > 0 && opts.renewIntervalMs < this.renewDeadlineMs && this.renewDeadlineMs < opts.leaseDurationMs)) {
      throw new RangeError(`Leader election needs 0 < renewIntervalMs (${opts.renewIntervalMs}) < renewDeadlineMs (${this.renewDeadlineMs}) < leaseDurationMs (${opts.leaseDurationMs}).`);
    }
    this.api = opts.kubeConfig.makeApiClient(CoordinationV1Api);
    this.leaseName = opts.leaseName ?? DEFAULT_LEASE_NAME;
    this.now = opts.now ?? Date.now;
    this.firstLook = new Promise((resolve) => {
      this.lookedOnce = resolve;
    });
  }

  /** Starts the loop: the first look happens at once. */
  start(): this {
    this.schedule(0);
    return this;
  }

  /**
   * Resolves once the first look after `start()` is done (or `close()` came first): `isLeader()`
   * then tells whether this replica took a free (or its own) Lease at once.
   */
  looked(): Promise<void> {
    return this.firstLook;
  }

  /** Whether this replica leads now. */
  isLeader(): boolean {
    return this.renewedAtMs !== undefined;
  }

  /** Called with true when this replica becomes leader, false when it stops being leader. */
  onChange(listener: (leading: boolean) => void): void {
    this.listeners.push(listener);
  }

  /** Stops the loop and, when leading, releases the Lease. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.lookedOnce();
    await this.running;
    const lease = this.lease;
    if (this.renewedAtMs === undefined || lease === undefined) return;
    this.setLeading(undefined);
    try {
      const spec = { ...lease.spec };
      delete spec.holderIdentity;
      await this.api.replaceNamespacedLease({ name: this.leaseName, namespace: this.opts.namespace, body: { ...lease, spec } });
    } catch (err) {
      // Not released: the others take over once the lease duration has passed.
      this.opts.onError?.(err);
    }
  }

  private schedule(delayMs: number): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      this.running = this.step().finally(() => {
        this.lookedOnce();
        this.schedule(this.opts.renewIntervalMs);
      });
    }, delayMs);
  }

  private decide(nowMs: number): LeadershipDecision {
    return decideLeadership({
      lease: this.observation, identity: this.opts.identity, renewedAtMs: this.renewedAtMs, nowMs,
      leaseDurationMs: this.opts.leaseDurationMs, renewDeadlineMs: this.renewDeadlineMs,
    });
  }

  /** One look: read the Lease (followers only), decide, act. */
  private async step(): Promise<void> {
    const startedMs = this.now();
    try {
      if (this.renewedAtMs === undefined) await this.read(startedMs);
    } catch (err) {
      this.opts.onError?.(err);
      return;
    }
    const decision = this.decide(startedMs);
    if (decision.action === 'follow') return;
    if (decision.action === 'step-down') return this.stepDown();
    try {
      const written = await this.write(decision.action, startedMs);
      this.lease = written;
      this.observation = observeLease(undefined, toObservable(written), this.now());
      this.setLeading(startedMs);
    } catch (err) {
      if (err instanceof ApiException && (err.code === 409 || err.code === 404)) {
        // Someone else wrote the Lease first (or deleted it): not mine; read it afresh next time.
        this.stepDown();
        return;
      }
      // Anything else: still leader until the renew deadline (the timer steps down then).
      this.opts.onError?.(err);
    }
  }

  private stepDown(): void {
    this.lease = undefined;
    this.setLeading(undefined);
  }

  private async read(nowMs: number): Promise<void> {
    try {
      this.lease = await this.api.readNamespacedLease({ name: this.leaseName, namespace: this.opts.namespace });
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) {
        this.lease = undefined;
        this.observation = undefined;
        return;
      }
      throw err;
    }
    this.observation = observeLease(this.observation, toObservable(this.lease), nowMs);
  }

  private async write(action: 'create' | 'acquire' | 'renew', nowMs: number): Promise<V1Lease> {
    const now = new V1MicroTime(nowMs);
    const leaseDurationSeconds = Math.ceil(this.opts.leaseDurationMs / 1000);
    if (action === 'create' || this.lease === undefined) {
      return this.api.createNamespacedLease({
        namespace: this.opts.namespace,
        body: {
          apiVersion: 'coordination.k8s.io/v1', kind: 'Lease',
          metadata: { name: this.leaseName, namespace: this.opts.namespace, labels: { 'app.kubernetes.io/name': 'ferry', 'app.kubernetes.io/component': 'server' } },
          spec: { holderIdentity: this.opts.identity, leaseDurationSeconds, acquireTime: now, renewTime: now, leaseTransitions: 0 },
        },
      });
    }
    const spec = this.lease.spec ?? {};
    const taking = spec.holderIdentity !== this.opts.identity;
    return this.api.replaceNamespacedLease({
      name: this.leaseName,
      namespace: this.opts.namespace,
      // The resourceVersion read travels with the write: a 409 if anyone wrote since.
      body: {
        ...this.lease,
        spec: {
          ...spec,
          holderIdentity: this.opts.identity,
          leaseDurationSeconds,
          renewTime: now,
          ...(taking ? { acquireTime: now, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } : {}),
        },
      },
    });
  }

  /** Records a successful renew started at `renewedAtMs` (undefined: not leading) and arms the renew deadline. */
  private setLeading(renewedAtMs: number | undefined): void {
    const was = this.renewedAtMs !== undefined;
    this.renewedAtMs = renewedAtMs;
    clearTimeout(this.deadlineTimer);
    if (renewedAtMs !== undefined) {
      this.deadlineTimer = setTimeout(() => {
        if (this.decide(this.now()).action === 'step-down') this.stepDown();
      }, Math.max(0, renewedAtMs + this.renewDeadlineMs - this.now()));
    }
    const is = renewedAtMs !== undefined;
    if (was === is) return;
    for (const listener of this.listeners) {
      try {
        listener(is);
      } catch (err) {
        // A listener's failure must not stop the election loop (or the deadline timer).
        this.opts.onError?.(err);
      }
    }
  }
}

function toObservable(lease: V1Lease): { holder: string | undefined; resourceVersion: string } {
  return { holder: lease.spec?.holderIdentity, resourceVersion: lease.metadata?.resourceVersion ?? '' };
}
