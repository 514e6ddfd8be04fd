/**
 * The replica supervisor: starts a served entity's replicas through the runtime, adds each one to
 * the gateway once ready, replaces replicas that die, and stops them.
 *
 * - A replica that dies is replaced with exponential backoff (1 s, 2 s, ... 30 s); the entity is
 *   RECOVERING while it has no ready replica and FAILED after 5 failed starts in a row.
 * - Quarantine: a served entity whose replicas break the runtime's control protocol (they were
 *   killed for it: a hostile or broken model) 3 times within 10 minutes is not restarted any more;
 *   it is DEPLOYMENT_FAILED with a message starting "quarantined:" until the next config update
 *   (which makes a fresh `EntityReplicas`). Other entities and endpoints are untouched.
 * - Stopping drains: the gateway sends a stopping replica no new requests, its in-flight ones get
 *   `drainTimeoutMs` to finish, then the runtime stops it.
 *
 * It decides neither how many replicas an entity has (./scaling.ts) nor which entities exist
 * (./lifecycle.ts, ./rollout.ts).
 */
import { randomBytes } from 'node:crypto';
import type { ArtifactStore } from '../artifacts/index.js';
import { backoffDelayMs, type Backoff } from '../backoff.js';
import { FramedChannel, framePayloadLimit } from '../channel/index.js';
import { FerryError } from '../errors.js';
import { drainAndClose } from '../gateway/index.js';
import { insideArtifact } from '../flavors/inspection.js';
import { tooLarge, type FamilyConfig, type FamilyResolver } from '../multi/index.js';
import { ReplicaProtocolError, type ReplicaExit, type ReplicaHandle, type ReplicaSpec, type Runtime } from '../runtime/index.js';
import { replicaExit, replicaReady, type ReplicaExitEvent, type ReplicaReadyEvent } from './events.js';
import { HISTORY, type ControlLog, type DeploymentState, type EntityReplicas, type ReplicaSlot } from './state.js';

/** Consecutive failed starts after which a served entity is DEPLOYMENT_FAILED (it keeps retrying). */
const MAX_FAILED_STARTS = 5;
/** A replacement replica starts after 1 s, 2 s, 4 s, … up to 30 s between failed tries. */
const RESTART_BACKOFF: Backoff = { baseMs: 1000, maxMs: 30_000 };
/**
 * A replica that dies sooner than this after turning ready counts as a failed start (crash loop:
 * the restart delay doubles); one that lived longer resets the count (restart after 1 s).
 */
const STABLE_AFTER_MS = 10_000;
/**
 * Protocol violations (see `EntityReplicas.quarantined`) within `QUARANTINE_WINDOW_MS` that
 * quarantine a served entity. One can be a fluke of a model's bug; three in 10 minutes (with the
 * restart backoff of 1 s, 2 s, 4 s that is the first three starts) is a model that keeps doing it.
 */
const QUARANTINE_VIOLATIONS = 3;
const QUARANTINE_WINDOW_MS = 10 * 60_000;

export interface SupervisorOptions {
  runtime: Runtime;
  artifacts: ArtifactStore;
  replicaMemoryLimitBytes: number;
  maxBodyBytes: number;
  /** Request shape limits each replica enforces (`ServerConfig`'s keys of the same names). */
  inputLimits: Pick<ReplicaSpec, 'maxRowsPerRequest' | 'maxJsonDepth' | 'maxJsonElements'>;
  /** How long a stopping replica may take to finish its in-flight requests. */
  drainTimeoutMs: number;
  now: () => number;
  log: ControlLog;
}

export class ReplicaSupervisor {
  /** Which entity each replica the runtime runs for us belongs to (for its exit reports). */
  private readonly byReplica = new Map<string, EntityReplicas>();

  constructor(private readonly opts: SupervisorOptions) {
    opts.runtime.onExit((exit) => this.onReplicaExit(exit));
  }

  /** Starts an entity's replicas; resolves when they are all ready, rejects on the first failure. */
  async deploy(d: EntityReplicas): Promise<void> {
    d.state = 'DEPLOYMENT_CREATING';
    try {
      await Promise.all(Array.from({ length: d.desiredReplicas }, () => this.startReplica(d)));
    } catch (err) {
      if (!d.stopped) { // a start cut short by a cancel or a delete is not the model's failure
        d.state = 'DEPLOYMENT_FAILED';
        d.message = err instanceof Error ? err.message : String(err);
        if (err instanceof ReplicaProtocolError) this.noteViolation(d, err.message);
      }
      throw err;
    }
  }

  /**
   * Starts one more replica of a serving entity (a scale-up); a failure falls back to the restart
   * backoff. A start from zero ready replicas is recorded as a cold start.
   */
  startMore(d: EntityReplicas): void {
    const fromZero = d.readyReplicas === 0;
    const t0 = this.opts.now();
    this.startReplica(d).then(() => {
      if (!fromZero) return;
      d.coldStartsMs.push(this.opts.now() - t0);
      if (d.coldStartsMs.length > HISTORY) d.coldStartsMs.shift();
    }, (err: unknown) => this.startFailed(d, err));
  }

  /** Whether new replicas of `d` must wait: it is backing off after failures, or quarantined. */
  holdsStarts(d: EntityReplicas): boolean {
    return d.restartTimer !== undefined || d.quarantined;
  }

  /** Starts a replacement replica after 1 s, 2 s, 4 s, ... up to 30 s between failed tries. */
  scheduleRestart(d: EntityReplicas): void {
    if (d.stopped || d.quarantined || d.restartTimer !== undefined) return;
    const delayMs = backoffDelayMs(d.failedStarts + 1, RESTART_BACKOFF);
    d.restartTimer = setTimeout(() => {
      d.restartTimer = undefined;
      if (d.stopped || d.replicas.size >= d.desiredReplicas) return;
      this.startReplica(d).then(() => this.scheduleMissing(d), (err: unknown) => this.startFailed(d, err));
    }, delayMs);
    d.restartTimer.unref();
  }

  /** Takes an entity out of service: no new requests, in-flight ones finish, replicas stop. */
  async stop(d: EntityReplicas, finalState: DeploymentState = 'DEPLOYMENT_ABORTED'): Promise<void> {
    this.halt(d);
    const backends = d.traffic.backends.splice(0);
    d.traffic.rejectWaiting(new FerryError('TEMPORARILY_UNAVAILABLE', `Served entity '${d.entity.name}' is shutting down; retry shortly.`, { retryAfterS: 1 }));
    await drainAndClose(backends, this.opts.drainTimeoutMs, () => this.opts.now());
    await Promise.all([...d.replicas.keys()].map(async (id) => {
      this.byReplica.delete(id);
      await this.opts.runtime.stopReplica(id);
    }));
    d.replicas.clear();
    if (d.state !== 'DEPLOYMENT_FAILED') d.state = finalState;
  }

  /** Starts nothing more for `d` (the server is closing; the runtime stops its replicas). */
  halt(d: EntityReplicas): void {
    d.stopped = true;
    clearTimeout(d.restartTimer);
  }

  /** Takes one ready replica out of rotation, lets its requests finish, then stops it (a scale-down). */
  async retire(d: EntityReplicas, slot: ReplicaSlot): Promise<void> {
    if (!slot.backend) return;
    const backend = slot.backend;
    d.traffic.removeBackend(backend);
    d.replicas.delete(slot.id);
    this.byReplica.delete(slot.id);
    await drainAndClose([backend], this.opts.drainTimeoutMs, () => this.opts.now());
    await this.opts.runtime.stopReplica(slot.id);
  }

  private async startReplica(d: EntityReplicas): Promise<void> {
    const e = d.entity;
    const { runtime, artifacts } = this.opts;
    const id = `${d.endpoint}.${e.name}.${randomBytes(3).toString('hex')}`;
    const askedMs = this.opts.now();
    const fromZero = d.readyReplicas === 0;
    const slot: ReplicaSlot = { id, handle: undefined, backend: undefined, readyAtMs: 0 };
    d.replicas.set(id, slot);
    this.byReplica.set(id, d);
    let handle: ReplicaHandle;
    try {
      handle = await runtime.startReplica({
        id, endpoint: d.endpoint, servedEntity: e.name,
        artifactDir: e.family !== undefined || runtime.fetchesArtifacts === true ? '' : await artifacts.localDir(e.artifactPath, e.artifactSha256),
        modelFile: e.modelFile, flavor: e.flavor,
        artifactKey: e.artifactPath, artifactSha256: e.artifactSha256,
        workloadType: e.workloadType, modelName: d.endpoint, modelVersion: e.entityVersion,
        memoryLimitBytes: this.opts.replicaMemoryLimitBytes, maxBodyBytes: this.opts.maxBodyBytes, ...this.opts.inputLimits,
        batching: e.batching,
        ...(e.family === undefined || d.family === undefined ? {} : { family: familySpec(e.family, d.family, artifacts) }),
      });
    } catch (err) {
      d.replicas.delete(id);
      this.byReplica.delete(id);
      throw err;
    }
    if (d.stopped) {
      d.replicas.delete(id);
      this.byReplica.delete(id);
      await runtime.stopReplica(id);
      return;
    }
    slot.handle = handle;
    slot.readyAtMs = this.opts.now();
    slot.backend = { id, channel: new FramedChannel(handle.address, { maxPayloadBytes: framePayloadLimit(this.opts.maxBodyBytes) }), outstanding: 0 };
    d.traffic.addBackend(slot.backend);
    d.state = 'DEPLOYMENT_READY';
    d.message = '';
    if (replicaReady.hasSubscribers) {
      replicaReady.publish({ endpoint: d.endpoint, servedEntity: e.name, replica: id, durationMs: slot.readyAtMs - askedMs, fromZero } satisfies ReplicaReadyEvent);
    }
  }

  private onReplicaExit(exit: ReplicaExit): void {
    const d = this.byReplica.get(exit.id);
    if (!d) return;
    this.byReplica.delete(exit.id);
    const slot = d.replicas.get(exit.id);
    d.replicas.delete(exit.id);
    if (slot?.backend) {
      d.traffic.removeBackend(slot.backend);
      slot.backend.channel.close();
    }
    if (replicaExit.hasSubscribers) {
      replicaExit.publish({ endpoint: d.endpoint, servedEntity: d.entity.name, replica: exit.id, reason: exit.reason, code: exit.code, signal: exit.signal } satisfies ReplicaExitEvent);
    }
    if (d.stopped) return;
    // A replica that dies soon after starting counts as a failed start, so crash loops back off.
    if (slot && this.opts.now() - slot.readyAtMs >= STABLE_AFTER_MS) d.failedStarts = 0;
    else d.failedStarts++;
    const how = exit.reason === 'oom' ? 'was killed for exceeding its memory limit'
      : exit.reason === 'processes' ? 'was killed: its sandbox reached its process limit'
      : exit.reason === 'protocol' ? 'was killed for breaking the runtime\'s control protocol' : `exited (${exit.signal ?? `code ${exit.code ?? '?'}`})`;
    d.message = `Replica ${exit.id} ${how}. Last log lines:\n${exit.lastLogLines}`;
    if (d.readyReplicas === 0) d.state = 'DEPLOYMENT_RECOVERING';
    this.opts.log('warn', 'replica exited', { endpoint: d.endpoint, servedEntity: d.entity.name, replica: exit.id, reason: exit.reason, code: exit.code });
    if (exit.reason === 'protocol') this.noteViolation(d, `replica ${exit.id} ${how}`);
    this.scheduleRestart(d);
  }

  private scheduleMissing(d: EntityReplicas): void {
    if (d.replicas.size < d.desiredReplicas) this.scheduleRestart(d);
  }

  /** A replica of a serving entity did not start: back off, or quarantine (see `noteViolation`). */
  private startFailed(d: EntityReplicas, err: unknown): void {
    d.failedStarts++;
    d.message = err instanceof Error ? err.message : String(err);
    if (d.failedStarts >= MAX_FAILED_STARTS && d.readyReplicas === 0) d.state = 'DEPLOYMENT_FAILED';
    if (err instanceof ReplicaProtocolError) this.noteViolation(d, err.message);
    this.scheduleRestart(d);
  }

  /**
   * A replica of `d` broke the runtime's control protocol (`what` says how). The third time
   * within the window quarantines `d`: its restarts stop, the rest of its replicas keep serving
   * until a config update replaces it, and its state says why.
   */
  private noteViolation(d: EntityReplicas, what: string): void {
    const nowMs = this.opts.now();
    d.violationsMs.push(nowMs);
    while ((d.violationsMs[0] ?? nowMs) < nowMs - QUARANTINE_WINDOW_MS) d.violationsMs.shift();
    if (d.quarantined || d.violationsMs.length < QUARANTINE_VIOLATIONS) return;
    d.quarantined = true;
    clearTimeout(d.restartTimer);
    d.restartTimer = undefined;
    d.state = 'DEPLOYMENT_FAILED';
    d.message = `quarantined: its replicas broke the runtime's control protocol ${d.violationsMs.length} times within ${QUARANTINE_WINDOW_MS / 60_000} minutes `
      + `and were killed (last: ${what}); it is not restarted until the endpoint's config is updated.`;
    this.opts.log('warn', 'served entity quarantined', { endpoint: d.endpoint, servedEntity: d.entity.name, violations: d.violationsMs.length, last: what });
  }
}

/**
 * What a family entity's replicas are told: their cache budget and how the runtime stages a
 * member for them. The member is looked up again (a replica asks only by name and version, and
 * gets nothing outside its family), then its model file is read into memory from the artifact
 * store (a bulk-registered member: its byte range of the call's pack), its tree checked against
 * the version's digest.
 */
function familySpec(f: FamilyConfig, resolver: FamilyResolver, artifacts: ArtifactStore): NonNullable<ReplicaSpec['family']> {
  return {
    cacheBytes: f.cacheBytes,
    sessionFallback: f.sessionFallback,
    stage: async (name, version) => {
      const member = await resolver.resolve(`${name}/${version}`, 'model');
      const bytes = await artifacts.readVerifiedFile(member.artifactPath, member.artifactSha256, insideArtifact(member.modelFile, 'The model file'), f.cacheBytes,
        (total) => tooLarge(`${name}/${version}`, total, f.cacheBytes));
      return { modelFile: member.modelFile, bytes };
    },
  };
}
