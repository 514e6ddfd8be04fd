/**
 * The scaling loop: once a second every serving entity's load is sampled and its autoscaler
 * (`decide` in src/autoscaler, a pure function of the entity's samples and the time) says how
 * many replicas it wants; the loop applies that through the replica supervisor (./replicas.ts).
 *
 * The split follows Knative's: its multiscaler keeps one scaler per revision, ticks each on a
 * timer and can be poked to decide at once (scale from zero); the per-revision autoscaler only
 * decides; the KPA reconciler applies the wanted scale. Here `ScalingLoop` is the multiscaler
 * (tick, poke, the other servers' load), `decide` the per-entity autoscaler, and `scaleTo` the
 * small reconciler: start the missing replicas, retire surplus ready ones.
 */
import { decide, record } from '../autoscaler/index.js';
import { autoscalerDecisions } from './events.js';
import { loadKey, type PeerLoad } from './load.js';
import type { ReplicaSupervisor } from './replicas.js';
import { HISTORY, type ControlLog, type EntityReplicas } from './state.js';

/** How often each served entity's load is sampled and its scale decided (the policy's sample bucket). */
export const AUTOSCALE_TICK_MS = 1000;

export interface ScalingLoopOptions {
  supervisor: ReplicaSupervisor;
  /** The entities of every endpoint's serving config (the loop scales nothing else). */
  serving: () => Iterable<EntityReplicas>;
  /** Whether the controller has any endpoint (a follower's controller has none until it leads). */
  hasEndpoints: () => boolean;
  /**
   * Several servers on one store (Kubernetes), or this server's gateway workers: the other
   * gateways' load, added to this process's own in every sample. Undefined with one gateway.
   */
  peers?: Pick<PeerLoad, 'demand' | 'refresh'> | undefined;
  now: () => number;
  log: ControlLog;
}

export class ScalingLoop {
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly opts: ScalingLoopOptions) {
    this.timer = setInterval(() => this.tick(), AUTOSCALE_TICK_MS);
    this.timer.unref();
  }

  /**
   * A request is waiting for capacity. At zero replicas that is a poke: decide at once instead of
   * at the next tick, so the first request after idle starts a replica immediately.
   */
  poke(d: EntityReplicas): void {
    if (d.stopped || d.replicas.size > 0) return;
    this.scaleEntity(d, this.opts.now());
  }

  close(): void {
    clearInterval(this.timer);
  }

  /**
   * Once a second: sample every serving entity's load and apply the policy's decision. With
   * peers, their reports are then read again for the next tick, and an entity at zero replicas
   * that they hold requests for is poked as soon as those are read.
   */
  private tick(): void {
    if (!this.opts.hasEndpoints()) return; // nothing to scale (a follower's controller has not started)
    const now = this.opts.now();
    const peers = this.opts.peers?.demand(now);
    for (const d of this.opts.serving()) this.scaleEntity(d, now, peers);
    this.opts.peers?.refresh(now).then(() => this.pokeFromPeers())
      .catch((err: unknown) => this.opts.log('error', 'autoscaling from the other servers\' load failed', { error: String(err) }));
  }

  private pokeFromPeers(): void {
    const now = this.opts.now();
    const peers = this.opts.peers?.demand(now);
    for (const d of this.opts.serving()) {
      if (d.replicas.size === 0 && (peers?.get(loadKey(d.endpoint, d.entity.name)) ?? 0) > 0) this.scaleEntity(d, now, peers);
    }
  }

  /** `peers`: the other servers' demand by `loadKey` (see ./load.ts); absent on one machine. */
  private scaleEntity(d: EntityReplicas, nowMs: number, peers = this.opts.peers?.demand(nowMs)): void {
    // A poke samples what is waiting right now; a tick, the average since the last tick.
    const own = d.replicas.size === 0 ? Math.max(d.traffic.inFlight, d.traffic.takeAverageConcurrency()) : d.traffic.takeAverageConcurrency();
    record(d.scaler, nowMs, own + (peers?.get(loadKey(d.endpoint, d.entity.name)) ?? 0));
    const decision = decide(d.entity.scaling, d.scaler, { readyReplicas: d.readyReplicas, startingReplicas: d.startingReplicas }, nowMs);
    if (!decision.valid || decision.desiredReplicas === d.desiredReplicas) return;
    d.decisions.push({ ...decision, timeMs: nowMs });
    if (d.decisions.length > HISTORY) d.decisions.shift();
    const event = { endpoint: d.endpoint, servedEntity: d.entity.name, from: d.desiredReplicas, to: decision.desiredReplicas, reason: decision.reason, ...decision.inputs };
    if (autoscalerDecisions.hasSubscribers) autoscalerDecisions.publish(event);
    this.opts.log('info', 'autoscaling decision', event);
    this.scaleTo(d, decision.desiredReplicas);
  }

  /**
   * Converges a serving entity on `desired` replicas: starts the missing ones (after the crash
   * backoff if starts have been failing), retires surplus ready ones (least busy first). A
   * replica that is still starting is never stopped: it is counted, and retired later if still
   * surplus once ready.
   */
  private scaleTo(d: EntityReplicas, desired: number): void {
    const { supervisor } = this.opts;
    d.desiredReplicas = desired;
    const missing = desired - d.replicas.size;
    if (missing > 0) {
      if (supervisor.holdsStarts(d)) return; // backing off after failures; the restart catches up
      for (let i = 0; i < missing; i++) supervisor.startMore(d);
      return;
    }
    const surplus = Math.min(d.readyReplicas, d.replicas.size - desired);
    const idlest = [...d.replicas.values()].filter((r) => r.backend !== undefined)
      .sort((a, b) => (a.backend?.outstanding ?? 0) - (b.backend?.outstanding ?? 0)).slice(0, surplus);
    for (const slot of idlest) void supervisor.retire(d, slot);
  }
}
