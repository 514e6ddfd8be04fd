/**
 * The endpoint controller: desired state in, running replicas and routes out.
 *
 * - The API writes desired state (an endpoint's config, or a pending config) durably, then the
 *   controller converges: it starts the pending config's replicas, waits for them to be ready,
 *   swaps the endpoint's route in one step, and drains and stops replicas no longer used.
 * - A served entity that is unchanged between configs (same model version, same workload) keeps
 *   its replicas, so a traffic-only change restarts nothing.
 * - Before traffic moves, each new served entity scores its validation request (or its version's
 *   input example) on one of its replicas; with a `rollout` config, traffic then shifts to the new
 *   entities in canary steps judged from gateway stats (./rollout.ts has the pieces).
 * - A failed rollout (a replica that does not start, a refused validation request, a canary step
 *   over its limits) leaves the serving config serving (routed back if a canary had shifted
 *   traffic) and marks the update UPDATE_FAILED with the reason; a cancel does the same and marks
 *   it UPDATE_CANCELED.
 * - A replica that dies is replaced with exponential backoff (1 s, 2 s, ... 30 s); the entity is
 *   RECOVERING while it has no ready replica and FAILED after 5 failed starts in a row.
 * - Quarantine: a served entity whose replicas break the runtime's control protocol (they were
 *   killed for it: a hostile or broken model) 3 times within 10 minutes is not restarted any more;
 *   it is DEPLOYMENT_FAILED with a message starting "quarantined:" until the next config update
 *   (which starts a fresh deployment). Other entities and endpoints are untouched.
 * - On start, every stored endpoint is brought back up; an update that was in progress starts
 *   over from its first step (progress within a rollout is not persisted: the old config serves
 *   until the new one has passed every step again).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import diagnostics_channel from 'node:diagnostics_channel';
import type { ArtifactStore } from '../artifacts/index.js';
import { decide, newScalerState, record, type Decision, type ScalerState } from '../autoscaler/index.js';
import { FerryError, invalidParameter, notFound } from '../errors.js';
import { FramedChannel, framePayloadLimit } from '../channel/index.js';
import { EntityTraffic, GatewayStats, RateLimiter, statsKey, type Backend, type EndpointRoute, type RoutingTable, type TrafficOptions } from '../gateway/index.js';
import { FamilyResolver, type FamilyConfig, type ModelCacheStats } from '../multi/index.js';
import type { Authorizer } from '../auth/index.js';
import type { Registry } from '../registry/index.js';
import { endpointOpenApi } from '../protocols/index.js';
import type { Signature } from '../tensor/index.js';
import { ReplicaProtocolError, type ReplicaExit, type ReplicaHandle, type ReplicaSpec, type Runtime } from '../runtime/index.js';
import type { EndpointRecord, MetadataStore } from '../store/index.js';
import { aiGatewayView, compileAiGateway, compileConfig, parseCreateBody, patchTags, type AiGatewayConfig, type EndpointConfig, type ServedEntityConfig } from './config.js';
import {
  blendRoutes, describeStep, judgeCanaryStep, RolloutAborted, RolloutFailure, scoreValidation, sleepUnlessAborted, untilAborted,
  validationRequestOf, type Weighted,
} from './rollout.js';
import { aiGatewayOf, buildEndpointRoute, creatorReads, inferenceTableSettings, rateLimiterFor } from './routes.js';
import { loadKey, type PeerLoad } from './load.js';
import { endpointDeleted, replicaExit, replicaReady, type EndpointDeletedEvent, type ReplicaExitEvent, type ReplicaReadyEvent } from './events.js';

export type DeploymentState = 'DEPLOYMENT_CREATING' | 'DEPLOYMENT_READY' | 'DEPLOYMENT_RECOVERING' | 'DEPLOYMENT_FAILED' | 'DEPLOYMENT_ABORTED';

type Record_ = EndpointRecord<EndpointConfig>;

export interface ControllerOptions {
  store: MetadataStore;
  /** Who may read which registered model: a family serves only models its endpoint's creator can read. */
  authz: Pick<Authorizer, 'require'>;
  registry: Registry;
  artifacts: ArtifactStore;
  runtime: Runtime;
  table: RoutingTable;
  defaultRequestTimeoutMs: number;
  replicaMemoryLimitBytes: number;
  maxBodyBytes: number;
  /** Request shape limits each replica enforces (`ServerConfig`'s keys of the same names). */
  inputLimits: Pick<ReplicaSpec, 'maxRowsPerRequest' | 'maxJsonDepth' | 'maxJsonElements'>;
  /** How long a stopped config's replicas may take to finish their in-flight requests. */
  drainTimeoutMs: number;
  /** Per-entity capacity and wait-buffer settings of the gateway. */
  traffic: Omit<TrafficOptions, 'name' | 'onDemand'>;
  /**
   * Several servers on one store (Kubernetes): the other servers' gateway load, added to this
   * server's own in every autoscale sample. Undefined on one machine.
   */
  peers?: PeerLoad | undefined;
  now: () => number;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/** Consecutive failed starts after which a served entity is DEPLOYMENT_FAILED (it keeps retrying). */
const MAX_FAILED_STARTS = 5;
const MAX_RESTART_DELAY_MS = 30_000;
/**
 * A replica that dies sooner than this after turning ready counts as a failed start (crash loop:
 * the restart delay doubles); one that lived longer resets the count (restart after 1 s).
 */
const STABLE_AFTER_MS = 10_000;
/**
 * Protocol violations (see `Deployment.quarantined`) within `QUARANTINE_WINDOW_MS` that quarantine
 * a served entity. One can be a fluke of a model's bug; three in 10 minutes (with the restart
 * backoff of 1 s, 2 s, 4 s that is the first three starts) is a model that keeps doing it.
 */
const QUARANTINE_VIOLATIONS = 3;
const QUARANTINE_WINDOW_MS = 10 * 60_000;
/** How often each served entity's load is sampled and its scale decided (the policy's sample bucket). */
const AUTOSCALE_TICK_MS = 1000;
/** Decisions and cold starts kept per entity for the endpoint view. */
const HISTORY = 10;
const VALIDATION_SKIPPED = 'Validation skipped: the model version has no input example and the served entity no validation_request.';
/** Every decision that changes a desired count, with its inputs (CONVENTIONS 10). */
const decisionChannel = diagnostics_channel.channel('ferry:autoscaler:decision');

interface ReplicaSlot {
  id: string;
  handle: ReplicaHandle | undefined;
  backend: Backend | undefined;
  readyAtMs: number;
}

/** The running replicas of one served entity. */
class Deployment {
  readonly traffic: EntityTraffic;
  readonly replicas = new Map<string, ReplicaSlot>();
  state: DeploymentState = 'DEPLOYMENT_CREATING';
  message = '';
  desiredReplicas: number;
  readonly scaler: ScalerState;
  /** The last decisions that changed the desired count, newest last (for the endpoint view). */
  readonly decisions: Array<Decision & { timeMs: number }> = [];
  /** Durations of the last starts from zero ready replicas, ms (cold starts). */
  readonly coldStartsMs: number[] = [];
  /**
   * How the entity was validated before it got traffic, shown while `message` (the last problem)
   * is empty. Entities that cannot be validated say so from the start, also after a restart.
   */
  validationNote: string;
  failedStarts = 0;
  restartTimer: NodeJS.Timeout | undefined;
  stopped = false;
  /** When its replicas broke the runtime's control protocol, within the quarantine window. */
  readonly violationsMs: number[] = [];
  /** Set once quarantined: nothing starts it again (a config update makes a new deployment). */
  quarantined = false;

  /** A family entity's member lookup (the gateway's, shared by its replicas' staging requests). */
  readonly family: FamilyResolver | undefined;

  constructor(
    readonly endpoint: string, readonly entity: ServedEntityConfig, traffic: Omit<TrafficOptions, 'name' | 'onDemand'>, onDemand: (d: Deployment) => void,
    store: MetadataStore, ownerReads: (model: string) => Promise<boolean>,
  ) {
    this.traffic = new EntityTraffic({ ...traffic, name: `${endpoint}/${entity.name}`, onDemand: () => onDemand(this) });
    this.family = entity.family === undefined ? undefined : new FamilyResolver(entity.family, store, ownerReads);
    this.desiredReplicas = Math.max(entity.scaling.minReplicas, 1);
    this.scaler = newScalerState(entity.scaling);
    this.validationNote = validationRequestOf(entity) === undefined ? VALIDATION_SKIPPED : '';
  }

  /** Replicas asked for and not ready yet. */
  get startingReplicas(): number {
    return this.replicas.size - this.traffic.backends.length;
  }

  get readyReplicas(): number {
    return this.traffic.backends.length;
  }

  /** Same model version and workload: replicas can be kept across configs. */
  sameAs(entity: ServedEntityConfig): boolean {
    const a = this.entity;
    return a.name === entity.name && a.entityName === entity.entityName && a.entityVersion === entity.entityVersion
      && a.workloadType === entity.workloadType && a.workloadSize === entity.workloadSize && a.artifactPath === entity.artifactPath
      && JSON.stringify(a.batching) === JSON.stringify(entity.batching) && JSON.stringify(a.scaling) === JSON.stringify(entity.scaling)
      && JSON.stringify(a.family) === JSON.stringify(entity.family);
  }
}

/** One update in progress: the config it rolls out and what it started. */
interface RolloutRun {
  target: EndpointConfig;
  /** Deployments this update started (kept ones are not here): they go if it fails. */
  started: Deployment[];
  /** Aborted by a cancel, a delete, or the server closing. */
  abort: AbortController;
  /** A canary step has published a route with old and new deployments side by side. */
  shifted: boolean;
  /** Settles once the rollout has finished or unwound. */
  done: Promise<void>;
}

class EndpointState {
  /** Deployments of the serving config, by served-entity name. */
  current = new Map<string, Deployment>();
  /** Deployments of the pending config while it rolls out (or after it failed). */
  pending = new Map<string, Deployment>();
  /** The update rolling out now. */
  run: RolloutRun | undefined;
  deleted = false;
  /**
   * The endpoint's rate-limit buckets, kept across route swaps (a config update must not refill
   * them); replaced when the AI gateway settings change. Undefined when it has no limits.
   */
  rateLimiter: RateLimiter | undefined;
  constructor(public record: Record_) {
    this.rateLimiter = rateLimiterFor(record.name, aiGatewayOf(record));
  }
}

export class EndpointController {
  private readonly endpoints = new Map<string, EndpointState>();
  private readonly byReplica = new Map<string, Deployment>();
  private readonly rollouts = new Set<Promise<void>>();
  private readonly autoscaleTimer: NodeJS.Timeout;
  /** Per-entity answers as the gateway saw them; the gateway records into it (see GatewayStats). */
  readonly stats: GatewayStats;

  /** Endpoints loaded by `start`, until `restore` brings them up (those created since roll out on their own). */
  private readonly stored: EndpointState[] = [];

  constructor(private readonly o: ControllerOptions) {
    this.stats = new GatewayStats({ now: o.now });
    o.runtime.onExit((exit) => this.onReplicaExit(exit));
    this.autoscaleTimer = setInterval(() => this.autoscale(), AUTOSCALE_TICK_MS);
    this.autoscaleTimer.unref();
  }

  /** Loads the stored endpoints, so the API shows them; `restore` brings them back up. */
  async start(): Promise<void> {
    for (const record of (await this.o.store.listEndpoints()) as Record_[]) {
      const st = new EndpointState(record);
      this.endpoints.set(record.name, st);
      this.stored.push(st);
    }
  }

  /**
   * Brings the loaded endpoints back up (returns at once; they converge in the background). The
   * server calls it once it listens, so that an endpoint whose replicas misbehave can never keep
   * the API from answering. Only the first call does anything.
   */
  restore(): void {
    for (const st of this.stored.splice(0)) if (!st.deleted) this.track(this.recover(st));
  }

  /**
   * Creates an endpoint and starts rolling its config out. `mayServe` is asked, before anything is
   * written, whether the caller may serve the config's models (it throws when not).
   */
  async create(body: unknown, principal: string, mayServe: ModelCheck = noCheck): Promise<Record_> {
    const b = parseCreateBody(body);
    if (this.endpoints.has(b.name)) throw new FerryError('RESOURCE_ALREADY_EXISTS', `Serving endpoint '${b.name}' already exists.`);
    const config = await compileConfig(b.config, 1, this.o.registry, b.name);
    await mayServe(modelsOf(config));
    const now = this.o.now();
    const record: Record_ = {
      name: b.name, id: randomUUID(), creator: principal, createdMs: now, updatedMs: now, description: b.description,
      tags: Object.fromEntries(b.tags.map((t) => [t.key, t.value])),
      config: undefined, pendingConfig: config, configUpdate: 'IN_PROGRESS', updateMessage: '',
      aiGateway: compileAiGateway(b.ai_gateway, { maxBodyBytes: this.o.maxBodyBytes }),
    };
    await this.o.store.createEndpoint(record);
    const st = new EndpointState(record);
    this.endpoints.set(b.name, st);
    this.track(this.rollout(st));
    return record;
  }

  /** Starts rolling out a new config; `mayServe` as in `create`. */
  async updateConfig(name: string, body: unknown, mayServe: ModelCheck = noCheck): Promise<Record_> {
    const st = this.get(name);
    if (st.record.configUpdate === 'IN_PROGRESS') {
      throw new FerryError('RESOURCE_CONFLICT', `Serving endpoint '${name}' is already being updated (config version ${st.record.pendingConfig?.configVersion ?? '?'}); wait for it to finish.`);
    }
    const version = Math.max(st.record.config?.configVersion ?? 0, st.record.pendingConfig?.configVersion ?? 0) + 1;
    const config = await compileConfig(body, version, this.o.registry, name, 'config');
    const current = st.record.config;
    if (current !== undefined && isFamilyConfig(current) !== isFamilyConfig(config)) {
      // Requests to a family name their model and others do not: no rollout can move between them.
      throw invalidParameter('config.served_entities', config.servedEntities.map((e) => e.name),
        `${isFamilyConfig(current) ? 'model families' : 'single model versions'}, as the endpoint serves now (an endpoint cannot switch between a model family and single versions; create another endpoint)`);
    }
    await mayServe(modelsOf(config));
    this.discard(st.pending, st);
    st.record = { ...st.record, pendingConfig: config, configUpdate: 'IN_PROGRESS', updateMessage: '', updatedMs: this.o.now() };
    await this.o.store.putEndpoint(st.record);
    this.track(this.rollout(st));
    return st.record;
  }

  /**
   * Stops the update in progress: a canary's traffic goes back to the serving config, the new
   * replicas stop, the update is UPDATE_CANCELED. Resolves once that is done. 409 when no update
   * is in progress.
   */
  async cancelUpdate(name: string): Promise<void> {
    const st = this.get(name);
    if (st.record.configUpdate !== 'IN_PROGRESS') {
      throw new FerryError('RESOURCE_CONFLICT', `Serving endpoint '${name}' has no config update in progress (config_update is ${st.record.configUpdate}).`);
    }
    const run = st.run;
    // Abort first, synchronously, so the rollout cannot swap routes between here and the write.
    run?.abort.abort();
    const where = st.record.updateMessage ? ` during "${st.record.updateMessage}"` : '';
    st.record = { ...st.record, configUpdate: 'UPDATE_CANCELED', updateMessage: `Update to config version ${st.record.pendingConfig?.configVersion ?? '?'} canceled${where}.`, updatedMs: this.o.now() };
    await this.o.store.putEndpoint(st.record);
    this.o.log('info', 'endpoint update canceled', { endpoint: name });
    await run?.done;
  }

  /**
   * Replaces the endpoint's AI gateway settings; they apply to the live route at once. New rate
   * limits start with full buckets. Answers the settings in the API shape.
   */
  async setAiGateway(name: string, body: unknown): Promise<Record<string, unknown>> {
    const st = this.get(name);
    const aiGateway = compileAiGateway(body, { maxBodyBytes: this.o.maxBodyBytes }, '');
    st.record = { ...st.record, aiGateway, updatedMs: this.o.now() };
    await this.o.store.putEndpoint(st.record);
    st.rateLimiter = rateLimiterFor(name, aiGateway);
    const route = this.o.table.get(name);
    if (route) this.o.table.set({ ...route, ...gatewayPolicies(st, aiGateway) });
    return aiGatewayView(aiGateway);
  }

  /** Adds and deletes tags (Databricks `PATCH .../tags`); answers the endpoint's tags. */
  async patchTags(name: string, body: unknown): Promise<{ tags: Array<{ key: string; value: string }> }> {
    const st = this.get(name);
    const tags = patchTags(st.record.tags, body);
    st.record = { ...st.record, tags, updatedMs: this.o.now() };
    await this.o.store.putEndpoint(st.record);
    return { tags: tagList(tags) };
  }

  /**
   * Removes the endpoint: no more traffic, replicas drain and stop, then everything kept about it
   * (replica logs, gateway stats, and through `ferry:endpoint:deleted` its metrics and series)
   * goes, and only then the record: the name is free only once nothing of the old endpoint is
   * left for a new one of the same name (perhaps someone else's) to read. Its inference table
   * rows are kept until their retention, keyed by the endpoint's id, which no new endpoint gets.
   */
  async delete(name: string): Promise<void> {
    const st = this.get(name);
    st.deleted = true;
    st.run?.abort.abort();
    this.o.table.delete(name);
    this.endpoints.delete(name);
    const deployments = [...st.current.values(), ...st.pending.values()];
    await Promise.all(deployments.map((d) => this.stopDeployment(d)));
    for (const d of deployments) this.stats.forget(statsKey(name, d.entity.name, d.entity.entityVersion));
    await this.o.runtime.deleteLogs(name);
    if (endpointDeleted.hasSubscribers) endpointDeleted.publish({ endpoint: name, id: st.record.id } satisfies EndpointDeletedEvent);
    await this.o.store.deleteEndpoint(name);
  }

  /**
   * The endpoint's id and inference table settings (undefined: no such endpoint). The inference
   * table reads it per request (a Map lookup), so a change applies from the next request.
   */
  inferenceTableOf(name: string): { endpointId: string; enabled: boolean; sampleFraction: number } | undefined {
    const r = this.endpoints.get(name)?.record;
    return r === undefined ? undefined : inferenceTableSettings(r);
  }

  list(): EndpointView[] {
    return [...this.endpoints.values()].sort((a, b) => a.record.name.localeCompare(b.record.name)).map((st) => this.view(st));
  }

  /**
   * Replica counts and gateway load of every served entity (serving and rolling out), for
   * metrics. An entity kept across configs is counted once; a name that both configs use for
   * different deployments (a new version under the same name) adds up.
   */
  entityGauges(): EntityGauges[] {
    const out = new Map<string, EntityGauges>();
    for (const st of this.endpoints.values()) {
      for (const d of new Set([...st.current.values(), ...st.pending.values()])) {
        const key = `${d.endpoint}\0${d.entity.name}`;
        const g = out.get(key) ?? { endpoint: d.endpoint, servedEntity: d.entity.name, ready: 0, starting: 0, desired: 0, inFlight: 0, queued: 0 };
        g.ready += d.readyReplicas;
        g.starting += d.startingReplicas;
        g.desired += d.stopped ? 0 : d.desiredReplicas;
        g.inFlight += d.traffic.inFlight;
        g.queued += d.traffic.queued;
        out.set(key, g);
      }
    }
    return [...out.values()];
  }

  describe(name: string, families?: ReadonlyMap<string, FamilyView>): EndpointView {
    return this.view(this.get(name), families);
  }

  /**
   * A served entity of an endpoint's serving config (`servedEntity` or the first) with its
   * measured cold starts (ms, newest last), for the simulator. Undefined when there is no such
   * entity; 404 when there is no such endpoint.
   */
  servedEntity(name: string, servedEntity?: string): { config: ServedEntityConfig; coldStartsMs: readonly number[] } | undefined {
    const st = this.get(name);
    const entity = st.record.config?.servedEntities.find((e) => servedEntity === undefined || e.name === servedEntity);
    if (entity === undefined) return undefined;
    return { config: entity, coldStartsMs: [...(st.current.get(entity.name)?.coldStartsMs ?? [])] };
  }

  /**
   * The model caches of an endpoint's family entities, read from their ready replicas (each
   * answers `GET /metrics` with its cache counters; one that does not answer within 1 s is left
   * out): per entity, models and bytes per replica and the counters summed.
   */
  async familyViews(name: string): Promise<Map<string, FamilyView>> {
    const out = new Map<string, FamilyView>();
    await Promise.all([...this.get(name).current.values()].filter((d) => d.entity.family !== undefined).map(async (d) => {
      const replicas = await Promise.all([...d.replicas.values()].map(async (slot) => {
        if (slot.backend === undefined) return undefined;
        try {
          const res = await slot.backend.channel.request({ method: 'GET', path: '/metrics', body: undefined, meta: undefined, signal: undefined }, FAMILY_STATS_TIMEOUT_MS);
          const stats = (JSON.parse(res.body.toString('utf8')) as { family?: ModelCacheStats }).family;
          return stats === undefined ? undefined : { replica: slot.id, stats };
        } catch {
          return undefined;
        }
      }));
      out.set(d.entity.name, familyView(replicas.filter((r) => r !== undefined)));
    }));
    return out;
  }

  async logs(name: string, servedEntity: string): Promise<string> {
    const st = this.get(name);
    const known = [...st.current.keys(), ...st.pending.keys()];
    if (!known.includes(servedEntity)) throw notFound(`Served entity '${servedEntity}' of serving endpoint '${name}'`);
    return this.o.runtime.logs(name, servedEntity, 64 * 1024);
  }

  /**
   * Databricks' build logs (`GET .../served-models/{served}/build-logs`): the build log of the
   * entity's environment (a python model's virtualenv) when one was built, from the current or
   * the pending config (a failed update's entity included). Ferry builds no container image: for
   * any other entity the log says what it runs (a replica runs Ferry's own code with the version's
   * artifact, checked when the config was accepted).
   */
  async buildLogs(name: string, servedEntity: string): Promise<string> {
    const r = this.get(name).record;
    const e = [...(r.pendingConfig?.servedEntities ?? []), ...(r.config?.servedEntities ?? [])].find((x) => x.name === servedEntity);
    if (e === undefined) throw notFound(`Served entity '${servedEntity}' of serving endpoint '${name}'`);
    const { runtime, artifacts } = this.o;
    if (runtime.buildLogs !== undefined && e.family === undefined && runtime.fetchesArtifacts !== true) {
      const log = await runtime.buildLogs(await artifacts.localDir(e.artifactPath, e.artifactSha256), e.flavor, 64 * 1024);
      if (log !== '') return log;
    }
    const what = e.family === undefined
      ? `${describeEntity(e)} (flavor ${e.flavor}, model file ${e.modelFile}, artifact sha256 ${e.artifactSha256})`
      : `${describeEntity(e)} (models loaded on demand)`;
    return `No image build: served entity '${e.name}' runs ${what} in Ferry replicas (${e.workloadType}, workload size ${e.workloadSize}).\n`;
  }

  /**
   * The endpoint's query schema as OpenAPI 3.1 (Databricks `GET .../openapi`), from the
   * signatures of the versions its serving config (else its pending one) serves.
   */
  async openApi(name: string): Promise<Record<string, unknown>> {
    const r = this.get(name).record;
    const entities = (r.config ?? r.pendingConfig)?.servedEntities ?? [];
    if (entities.some((e) => e.family !== undefined)) {
      throw new FerryError('INVALID_PARAMETER_VALUE', `Serving endpoint '${name}' serves a model family: each model has its own signature (GET /v2/models/${name}/versions/{model} describes one).`);
    }
    const bySignature = new Map<string, { entities: string[]; signature: Signature }>();
    for (const e of entities) {
      const version = await this.o.registry.getVersion(e.entityName, Number(e.entityVersion));
      // A served version was READY when the config was written, so it has its artifact.
      if (version.artifact === undefined) throw notFound(`The artifact of ${describeEntity(e)}`);
      const signature = version.artifact.signature;
      const key = JSON.stringify(signature);
      const group = bySignature.get(key);
      if (group === undefined) bySignature.set(key, { entities: [e.name], signature });
      else group.entities.push(e.name);
    }
    return endpointOpenApi(name, [...bySignature.values()]);
  }

  /** Waits for background rollouts (tests and shutdown), then stops every replica. */
  async close(): Promise<void> {
    clearInterval(this.autoscaleTimer);
    for (const st of this.endpoints.values()) {
      st.deleted = true;
      st.run?.abort.abort(); // the record stays IN_PROGRESS: the next start rolls out again
    }
    await Promise.allSettled([...this.rollouts]);
    for (const st of this.endpoints.values()) {
      for (const d of [...st.current.values(), ...st.pending.values()]) {
        d.stopped = true;
        clearTimeout(d.restartTimer);
      }
    }
    await this.o.runtime.close();
  }

  private newDeployment(st: EndpointState, entity: ServedEntityConfig): Deployment {
    return new Deployment(st.record.name, entity, this.o.traffic, (d) => this.onDemand(d), this.o.store, creatorReads(this.o.store, this.o.authz, st.record.creator));
  }

  /**
   * A request is waiting for capacity. At zero replicas that is a poke: decide at once instead of
   * at the next tick, so the first request after idle starts a replica immediately.
   */
  private onDemand(d: Deployment): void {
    if (d.stopped || d.replicas.size > 0) return;
    this.scaleEntity(d, this.o.now());
  }

  // ---- autoscaling -------------------------------------------------------------------------

  /**
   * Once a second: sample every serving entity's load and apply the policy's decision. With
   * peers, their reports are then read again for the next tick, and an entity at zero replicas
   * that they hold requests for is poked as soon as those are read.
   */
  private autoscale(): void {
    if (this.endpoints.size === 0) return; // nothing to scale (a follower's controller has not started)
    const now = this.o.now();
    const peers = this.o.peers?.demand(now);
    for (const d of this.serving()) this.scaleEntity(d, now, peers);
    this.o.peers?.refresh(now).then(() => this.pokeFromPeers())
      .catch((err: unknown) => this.o.log('error', 'autoscaling from the other servers\' load failed', { error: String(err) }));
  }

  /** The deployments of every endpoint's serving config. */
  private *serving(): Iterable<Deployment> {
    for (const st of this.endpoints.values()) {
      if (st.deleted) continue;
      for (const d of st.current.values()) if (!d.stopped) yield d;
    }
  }

  private pokeFromPeers(): void {
    const now = this.o.now();
    const peers = this.o.peers?.demand(now);
    for (const d of this.serving()) {
      if (d.replicas.size === 0 && (peers?.get(loadKey(d.endpoint, d.entity.name)) ?? 0) > 0) this.scaleEntity(d, now, peers);
    }
  }

  /** `peers`: the other servers' demand by `loadKey` (see ./load.ts); absent on one machine. */
  private scaleEntity(d: Deployment, nowMs: number, peers = this.o.peers?.demand(nowMs)): void {
    // A poke samples what is waiting right now; a tick, the average since the last tick.
    const own = d.replicas.size === 0 ? Math.max(d.traffic.inFlight, d.traffic.takeAverageConcurrency()) : d.traffic.takeAverageConcurrency();
    record(d.scaler, nowMs, own + (peers?.get(loadKey(d.endpoint, d.entity.name)) ?? 0));
    const decision = decide(d.entity.scaling, d.scaler, { readyReplicas: d.readyReplicas, startingReplicas: d.startingReplicas }, nowMs);
    if (!decision.valid || decision.desiredReplicas === d.desiredReplicas) return;
    d.decisions.push({ ...decision, timeMs: nowMs });
    if (d.decisions.length > HISTORY) d.decisions.shift();
    const event = { endpoint: d.endpoint, servedEntity: d.entity.name, from: d.desiredReplicas, to: decision.desiredReplicas, reason: decision.reason, ...decision.inputs };
    if (decisionChannel.hasSubscribers) decisionChannel.publish(event);
    this.o.log('info', 'autoscaling decision', event);
    this.scaleTo(d, decision.desiredReplicas);
  }

  /**
   * Converges a serving deployment on `desired` replicas: starts the missing ones (after the
   * crash backoff if starts have been failing), retires surplus ready ones (least busy first).
   * A replica that is still starting is never stopped: it is counted, and retired later if still
   * surplus once ready.
   */
  private scaleTo(d: Deployment, desired: number): void {
    d.desiredReplicas = desired;
    const missing = desired - d.replicas.size;
    if (missing > 0) {
      if (d.restartTimer !== undefined || d.quarantined) return; // backing off after failures; the restart catches up

      for (let i = 0; i < missing; i++) this.startMore(d);
      return;
    }
    const surplus = Math.min(d.readyReplicas, d.replicas.size - desired);
    const idlest = [...d.replicas.values()].filter((r) => r.backend !== undefined)
      .sort((a, b) => (a.backend?.outstanding ?? 0) - (b.backend?.outstanding ?? 0)).slice(0, surplus);
    for (const slot of idlest) void this.retire(d, slot);
  }

  /** Starts one more replica of a serving deployment; a failure falls back to the restart backoff. */
  private startMore(d: Deployment): void {
    const fromZero = d.readyReplicas === 0;
    const t0 = this.o.now();
    this.startReplica(d).then(() => {
      if (!fromZero) return;
      d.coldStartsMs.push(this.o.now() - t0);
      if (d.coldStartsMs.length > HISTORY) d.coldStartsMs.shift();
    }, (err: unknown) => this.startFailed(d, err));
  }

  /** A replica of a serving deployment did not start: back off, or quarantine (see `noteViolation`). */
  private startFailed(d: Deployment, err: unknown): void {
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
  private noteViolation(d: Deployment, what: string): void {
    const nowMs = this.o.now();
    d.violationsMs.push(nowMs);
    while ((d.violationsMs[0] ?? nowMs) < nowMs - QUARANTINE_WINDOW_MS) d.violationsMs.shift();
    if (d.quarantined || d.violationsMs.length < QUARANTINE_VIOLATIONS) return;
    d.quarantined = true;
    clearTimeout(d.restartTimer);
    d.restartTimer = undefined;
    d.state = 'DEPLOYMENT_FAILED';
    d.message = `quarantined: its replicas broke the runtime's control protocol ${d.violationsMs.length} times within ${QUARANTINE_WINDOW_MS / 60_000} minutes `
      + `and were killed (last: ${what}); it is not restarted until the endpoint's config is updated.`;
    this.o.log('warn', 'served entity quarantined', { endpoint: d.endpoint, servedEntity: d.entity.name, violations: d.violationsMs.length, last: what });
  }

  /** Takes one ready replica out of rotation, lets its requests finish, then stops it. */
  private async retire(d: Deployment, slot: ReplicaSlot): Promise<void> {
    if (!slot.backend) return;
    const backend = slot.backend;
    d.traffic.removeBackend(backend);
    d.replicas.delete(slot.id);
    this.byReplica.delete(slot.id);
    const deadline = this.o.now() + this.o.drainTimeoutMs;
    while (backend.outstanding > 0 && this.o.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    backend.channel.close();
    await this.o.runtime.stopReplica(slot.id);
  }

  private get(name: string): EndpointState {
    const st = this.endpoints.get(name);
    if (!st) throw notFound(`Serving endpoint '${name}'`);
    return st;
  }

  private track(p: Promise<void>): void {
    const tracked = p.catch((err: unknown) => this.o.log('error', 'endpoint reconcile failed', { error: err instanceof Error ? err.stack : String(err) }))
      .finally(() => this.rollouts.delete(tracked));
    this.rollouts.add(tracked);
  }

  // ---- convergence -------------------------------------------------------------------------

  /** After a restart: serve the stored config again, then resume an interrupted update. */
  private async recover(st: EndpointState): Promise<void> {
    const config = st.record.config;
    if (config) {
      const deployments = new Map(config.servedEntities.map((e) => [e.name, this.newDeployment(st, e)]));
      st.current = deployments;
      await Promise.allSettled([...deployments.values()].map((d) => this.deploy(d)));
      if (st.deleted) return;
      this.publish(st, config, deployments);
      // Entities that failed to come back keep retrying in the background.
      for (const d of deployments.values()) if (d.readyReplicas === 0) this.scheduleRestart(d);
    }
    if (st.record.configUpdate === 'IN_PROGRESS' && st.record.pendingConfig) await this.rollout(st);
  }

  /**
   * Rolls out the pending config as a sequence of steps: start the new entities' replicas,
   * validate them, shift traffic in canary steps (when configured), then swap. A failure or an
   * abort at any step unwinds to the serving config.
   */
  private rollout(st: EndpointState): Promise<void> {
    const target = st.record.pendingConfig;
    if (!target) return Promise.resolve();
    const next = new Map<string, Deployment>();
    const started: Deployment[] = [];
    for (const e of target.servedEntities) {
      const existing = st.current.get(e.name);
      if (existing?.sameAs(e) && existing.state !== 'DEPLOYMENT_FAILED') {
        next.set(e.name, existing);
      } else {
        const d = this.newDeployment(st, e);
        next.set(e.name, d);
        started.push(d);
      }
    }
    st.pending = next;
    const run: RolloutRun = { target, started, abort: new AbortController(), shifted: false, done: Promise.resolve() };
    st.run = run;
    run.done = this.runSteps(st, run).finally(() => {
      if (st.run === run) st.run = undefined;
    });
    return run.done;
  }

  private async runSteps(st: EndpointState, run: RolloutRun): Promise<void> {
    try {
      await this.startStep(st, run);
      await this.validateStep(st, run);
      await this.canarySteps(st, run);
    } catch (err) {
      await this.unwind(st, run, err);
      return;
    }
    await this.activate(st, run);
  }

  /** Step 1: start the new entities' replicas and wait until they are all ready. */
  private async startStep(st: EndpointState, run: RolloutRun): Promise<void> {
    if (run.started.length === 0) return;
    this.progress(st, `starting ${run.started.map((d) => `'${d.entity.name}'`).join(', ')}`);
    const results = await untilAborted(run.abort.signal, Promise.allSettled(run.started.map((d) => this.deploy(d))));
    const failed = run.started.filter((_, i) => results[i]?.status === 'rejected');
    if (failed.length > 0) {
      throw new RolloutFailure(failed.map((d) => `served entity '${d.entity.name}' (${describeEntity(d.entity)}) failed to start: ${d.message}`).join('; '));
    }
  }

  /**
   * Step 2: each new entity scores its validation request (or input example) on one of its
   * replicas; anything but a 200 fails the update with the replica's answer.
   */
  private async validateStep(st: EndpointState, run: RolloutRun): Promise<void> {
    const timeoutMs = run.target.requestTimeoutMs ?? this.o.defaultRequestTimeoutMs;
    const failures: string[] = [];
    for (const d of run.started) {
      const request = validationRequestOf(d.entity);
      if (request === undefined) continue; // its validationNote says so
      const backend = d.traffic.backends[0];
      if (backend === undefined) throw new RolloutFailure(`served entity '${d.entity.name}' lost its replicas before validation: ${d.message}`);
      this.progress(st, `validating '${d.entity.name}' with its ${request.source}`);
      const outcome = await untilAborted(run.abort.signal, scoreValidation(backend, request, timeoutMs));
      if (outcome.ok) {
        d.validationNote = `Validated: ${outcome.detail}.`;
      } else {
        d.message = `Validation failed: ${outcome.detail}.`;
        d.state = 'DEPLOYMENT_FAILED';
        failures.push(`served entity '${d.entity.name}' (${describeEntity(d.entity)}) failed validation: ${outcome.detail}`);
      }
    }
    if (failures.length > 0) throw new RolloutFailure(failures.join('; '));
  }

  /**
   * Step 3 (with `rollout.canary_steps`, when the update replaces served entities of a serving
   * config): the new entities get each step's share of the traffic for its duration, then their
   * 5xx rate and p99 latency over the step are compared with the old entities'.
   */
  private async canarySteps(st: EndpointState, run: RolloutRun): Promise<void> {
    const spec = run.target.rollout;
    const old = st.record.config;
    if (spec === undefined || old === undefined || run.started.length === 0) return;
    const from = old.routes.map((r) => ({ target: st.current.get(r.servedEntityName) as Deployment, trafficPercentage: r.trafficPercentage }));
    const to = run.target.routes.map((r) => ({ target: st.pending.get(r.servedEntityName) as Deployment, trafficPercentage: r.trafficPercentage }));
    const keyOf = (d: Deployment): string => statsKey(st.record.name, d.entity.name, d.entity.entityVersion);
    const candidates = run.started.map(keyOf);
    const baseline = from.filter((w) => w.trafficPercentage > 0 && !run.started.includes(w.target)).map((w) => keyOf(w.target));
    // Same name and version, another workload: the gateway's stats cannot tell old from new.
    const blind = candidates.some((k) => baseline.includes(k));
    if (blind) this.o.log('warn', 'canary analysis off: old and new entities share a stats key', { endpoint: st.record.name, keys: candidates });
    for (const [i, step] of spec.canarySteps.entries()) {
      this.progress(st, describeStep(i, spec));
      this.publishWeighted(st, old, blendRoutes(from, to, step.trafficPercentage));
      run.shifted = true;
      const sinceMs = this.o.now();
      await sleepUnlessAborted(run.abort.signal, step.durationMs);
      if (blind) continue;
      const verdict = judgeCanaryStep(spec, this.stats.summary(candidates, sinceMs), this.stats.summary(baseline, sinceMs));
      if (verdict !== undefined) {
        for (const d of run.started) d.message = `Rolled back: canary step ${i + 1} (${step.trafficPercentage}%): ${verdict}.`;
        throw new RolloutFailure(`canary step ${i + 1} (${step.trafficPercentage}%): ${verdict}; traffic is back on config version ${old.configVersion}`);
      }
    }
  }

  /** Last step: switch traffic to the new config in one step, then retire what it does not use. */
  private async activate(st: EndpointState, run: RolloutRun): Promise<void> {
    if (run.abort.signal.aborted) {
      await this.unwind(st, run, new RolloutAborted());
      return;
    }
    const target = run.target;
    const previous = st.current;
    const next = st.pending;
    this.publish(st, target, next);
    st.current = next;
    st.pending = new Map();
    st.record = { ...st.record, config: target, pendingConfig: undefined, configUpdate: 'NOT_UPDATING', updateMessage: '', updatedMs: this.o.now() };
    await this.o.store.putEndpoint(st.record);
    this.o.log('info', 'endpoint config active', { endpoint: st.record.name, configVersion: target.configVersion });
    const retired = [...previous.values()].filter((d) => ![...next.values()].includes(d));
    await Promise.all(retired.map((d) => this.stopDeployment(d)));
  }

  /**
   * Undoes a rollout: traffic back on the serving config (if a canary moved some), the new
   * replicas stopped. A failure is recorded as UPDATE_FAILED; an abort writes nothing (a cancel
   * has written UPDATE_CANCELED; a delete or a close leaves nothing, or IN_PROGRESS, to write).
   */
  private async unwind(st: EndpointState, run: RolloutRun, err: unknown): Promise<void> {
    if (run.shifted && !st.deleted && st.record.config) this.publish(st, st.record.config, st.current);
    await Promise.all(run.started.map((d) => this.stopDeployment(d, d.state === 'DEPLOYMENT_FAILED' ? 'DEPLOYMENT_FAILED' : 'DEPLOYMENT_ABORTED')));
    if (err instanceof RolloutAborted || st.deleted) return;
    const reason = err instanceof RolloutFailure ? err.message : `internal error: ${err instanceof Error ? err.message : String(err)}`;
    if (!(err instanceof RolloutFailure)) this.o.log('error', 'endpoint rollout crashed', { endpoint: st.record.name, error: err instanceof Error ? err.stack : String(err) });
    st.record = { ...st.record, configUpdate: 'UPDATE_FAILED', updateMessage: reason, updatedMs: this.o.now() };
    await this.o.store.putEndpoint(st.record);
    this.o.log('warn', 'endpoint update failed', { endpoint: st.record.name, configVersion: run.target.configVersion, reason });
  }

  /** Shows where a rollout is (`config_update_message` while IN_PROGRESS); not persisted. */
  private progress(st: EndpointState, message: string): void {
    st.record = { ...st.record, updateMessage: message };
  }

  private publish(st: EndpointState, config: EndpointConfig, deployments: Map<string, Deployment>): void {
    this.publishWeighted(st, config, config.routes.map((r) => ({ target: deployments.get(r.servedEntityName) as Deployment, trafficPercentage: r.trafficPercentage })));
  }

  /** Swaps the endpoint's route in one step; `config` gives the request timeout and the shadows. */
  private publishWeighted(st: EndpointState, config: EndpointConfig, weighted: Array<Weighted<Deployment>>): void {
    const entities = weighted.map(({ target: d, trafficPercentage }) => ({ endpoint: d.endpoint, entity: d.entity, trafficPercentage, traffic: d.traffic, family: d.family }));
    this.o.table.set(buildEndpointRoute(st.record.name, config, entities, this.o.defaultRequestTimeoutMs, aiGatewayOf(st.record), st.rateLimiter));
  }

  /** Starts a deployment's replicas; resolves when they are all ready, rejects on the first failure. */
  private async deploy(d: Deployment): Promise<void> {
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

  private async startReplica(d: Deployment): Promise<void> {
    const e = d.entity;
    const id = `${d.endpoint}.${e.name}.${randomBytes(3).toString('hex')}`;
    const askedMs = this.o.now();
    const fromZero = d.readyReplicas === 0;
    const slot: ReplicaSlot = { id, handle: undefined, backend: undefined, readyAtMs: 0 };
    d.replicas.set(id, slot);
    this.byReplica.set(id, d);
    let handle: ReplicaHandle;
    try {
      handle = await this.o.runtime.startReplica({
        id, endpoint: d.endpoint, servedEntity: e.name,
        artifactDir: e.family !== undefined || this.o.runtime.fetchesArtifacts === true ? '' : await this.o.artifacts.localDir(e.artifactPath, e.artifactSha256),
        modelFile: e.modelFile, flavor: e.flavor,
        artifactKey: e.artifactPath, artifactSha256: e.artifactSha256,
        workloadType: e.workloadType, modelName: d.endpoint, modelVersion: e.entityVersion,
        memoryLimitBytes: this.o.replicaMemoryLimitBytes, maxBodyBytes: this.o.maxBodyBytes, ...this.o.inputLimits,
        batching: e.batching,
        ...(e.family === undefined || d.family === undefined ? {} : { family: familySpec(e.family, d.family, this.o.artifacts) }),
      });
    } catch (err) {
      d.replicas.delete(id);
      this.byReplica.delete(id);
      throw err;
    }
    if (d.stopped) {
      d.replicas.delete(id);
      this.byReplica.delete(id);
      await this.o.runtime.stopReplica(id);
      return;
    }
    slot.handle = handle;
    slot.readyAtMs = this.o.now();
    slot.backend = { id, channel: new FramedChannel(handle.address, { maxPayloadBytes: framePayloadLimit(this.o.maxBodyBytes) }), outstanding: 0 };
    d.traffic.addBackend(slot.backend);
    d.state = 'DEPLOYMENT_READY';
    d.message = '';
    if (replicaReady.hasSubscribers) {
      replicaReady.publish({ endpoint: d.endpoint, servedEntity: e.name, replica: id, durationMs: slot.readyAtMs - askedMs, fromZero } satisfies ReplicaReadyEvent);
    }
  }

  /** Takes a deployment out of service: no new requests, in-flight ones finish, replicas stop. */
  private async stopDeployment(d: Deployment, finalState: DeploymentState = 'DEPLOYMENT_ABORTED'): Promise<void> {
    d.stopped = true;
    clearTimeout(d.restartTimer);
    const backends = d.traffic.backends.splice(0);
    d.traffic.rejectWaiting(new FerryError('TEMPORARILY_UNAVAILABLE', `Served entity '${d.entity.name}' is shutting down; retry shortly.`, { retryAfterS: 1 }));
    const deadline = this.o.now() + this.o.drainTimeoutMs;
    while (backends.some((b) => b.outstanding > 0) && this.o.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const b of backends) b.channel.close();
    await Promise.all([...d.replicas.keys()].map(async (id) => {
      this.byReplica.delete(id);
      await this.o.runtime.stopReplica(id);
    }));
    d.replicas.clear();
    if (d.state !== 'DEPLOYMENT_FAILED') d.state = finalState;
  }

  private discard(deployments: Map<string, Deployment>, st: EndpointState): void {
    const live = new Set(st.current.values());
    for (const d of deployments.values()) if (!live.has(d)) void this.stopDeployment(d);
    st.pending = new Map();
  }

  // ---- failures ----------------------------------------------------------------------------

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
    if (slot && this.o.now() - slot.readyAtMs >= STABLE_AFTER_MS) d.failedStarts = 0;
    else d.failedStarts++;
    const how = exit.reason === 'oom' ? 'was killed for exceeding its memory limit'
      : exit.reason === 'protocol' ? 'was killed for breaking the runtime\'s control protocol' : `exited (${exit.signal ?? `code ${exit.code ?? '?'}`})`;
    d.message = `Replica ${exit.id} ${how}. Last log lines:\n${exit.lastLogLines}`;
    if (d.readyReplicas === 0) d.state = 'DEPLOYMENT_RECOVERING';
    this.o.log('warn', 'replica exited', { endpoint: d.endpoint, servedEntity: d.entity.name, replica: exit.id, reason: exit.reason, code: exit.code });
    if (exit.reason === 'protocol') this.noteViolation(d, `replica ${exit.id} ${how}`);
    this.scheduleRestart(d);
  }

  /** Starts a replacement replica after 1 s, 2 s, 4 s, ... up to 30 s between failed tries. */
  private scheduleRestart(d: Deployment): void {
    if (d.stopped || d.quarantined || d.restartTimer !== undefined) return;
    const delayMs = Math.min(1000 * 2 ** d.failedStarts, MAX_RESTART_DELAY_MS);
    d.restartTimer = setTimeout(() => {
      d.restartTimer = undefined;
      if (d.stopped || d.replicas.size >= d.desiredReplicas) return;
      this.startReplica(d).then(() => this.scheduleMissing(d), (err: unknown) => this.startFailed(d, err));
    }, delayMs);
    d.restartTimer.unref();
  }

  private scheduleMissing(d: Deployment): void {
    if (d.replicas.size < d.desiredReplicas) this.scheduleRestart(d);
  }

  // ---- views -------------------------------------------------------------------------------

  private view(st: EndpointState, families?: ReadonlyMap<string, FamilyView>): EndpointView {
    const r = st.record;
    const entityView = (e: ServedEntityConfig, deployments: Map<string, Deployment>): Record<string, unknown> => {
      const d = deployments.get(e.name);
      const family = families?.get(e.name);
      return {
        name: e.name,
        ...(e.family === undefined ? { entity_name: e.entityName, entity_version: e.entityVersion } : {
          model_family: {
            ...(e.family.namePrefix === undefined ? {} : { name_prefix: e.family.namePrefix }),
            ...(e.family.tag === undefined ? {} : { tag: `${e.family.tag.key}=${e.family.tag.value}` }),
            cache_size: e.family.cacheBytes, session_fallback: e.family.sessionFallback,
          },
        }),
        ...(e.entityAlias === undefined ? {} : { entity_alias: e.entityAlias, follow_alias: e.followAlias === true }),
        workload_size: e.workloadSize,
        workload_type: e.workloadType,
        scale_to_zero_enabled: e.scaleToZeroEnabled,
        ...(e.minProvisionedConcurrency === undefined ? {} : { min_provisioned_concurrency: e.minProvisionedConcurrency }),
        ...(e.maxProvisionedConcurrency === undefined ? {} : { max_provisioned_concurrency: e.maxProvisionedConcurrency }),
        batching: {
          enabled: e.batching.enabled, max_batch_size: e.batching.maxBatchSize,
          max_queue_delay_us: e.batching.maxQueueDelayUs, preferred_batch_sizes: e.batching.preferredBatchSizes,
        },
        ...(e.validationRequest === undefined ? {} : { validation_request: e.validationRequest }),
        autoscaling: d === undefined ? undefined : {
          target_concurrency: e.scaling.targetConcurrency,
          // The tunables in effect (set or default), so a client can send the config back unchanged.
          stable_window_ms: e.scaling.stableWindowMs,
          panic_window_ms: e.scaling.panicWindowMs,
          panic_threshold: e.scaling.panicThreshold,
          scale_down_delay_ms: e.scaling.scaleDownDelayMs,
          scale_to_zero_grace_ms: e.scaling.scaleToZeroGraceMs,
          max_scale_up_rate: e.scaling.maxScaleUpRate,
          min_replicas: e.scaling.minReplicas,
          max_replicas: e.scaling.maxReplicas,
          desired_replicas: d.desiredReplicas,
          ready_replicas: d.readyReplicas,
          starting_replicas: d.startingReplicas,
          in_flight_requests: d.traffic.inFlight,
          queued_requests: d.traffic.queued,
          cold_starts_ms: d.coldStartsMs,
          last_decisions: d.decisions.map((x) => ({
            timestamp: x.timeMs, desired_replicas: x.desiredReplicas, panic: x.panic, reason: x.reason,
            stable_concurrency: x.inputs.stableConcurrency, panic_concurrency: x.inputs.panicConcurrency,
            ready_replicas: x.inputs.readyReplicas, starting_replicas: x.inputs.startingReplicas,
          })),
        },
        state: {
          deployment: d?.state ?? 'DEPLOYMENT_CREATING',
          deployment_state_message: d === undefined ? '' : d.message || d.validationNote,
          replicas: { ready: d?.readyReplicas ?? 0, total: d?.replicas.size ?? 0, desired: d?.desiredReplicas ?? 0 },
          ...(family === undefined ? {} : { family }),
        },
      };
    };
    const configView = (c: EndpointConfig, deployments: Map<string, Deployment>): Record<string, unknown> => ({
      config_version: c.configVersion,
      served_entities: c.servedEntities.map((e) => entityView(e, deployments)),
      traffic_config: {
        routes: c.routes.map((x) => ({ served_entity_name: x.servedEntityName, served_model_name: x.servedEntityName, traffic_percentage: x.trafficPercentage })),
        ...((c.shadows ?? []).length ? { shadow_routes: c.shadows.map((x) => ({ served_entity_name: x.servedEntityName, mirror_percentage: x.mirrorPercentage })) } : {}),
      },
      ...(c.requestTimeoutMs === undefined ? {} : { request_timeout_ms: c.requestTimeoutMs }),
      ...(c.rollout === undefined ? {} : {
        rollout: {
          canary_steps: c.rollout.canarySteps.map((x) => ({ traffic_percentage: x.trafficPercentage, duration_ms: x.durationMs })),
          max_error_rate: c.rollout.maxErrorRate, max_p99_latency_ratio: c.rollout.maxP99LatencyRatio,
        },
      }),
    });
    const route = this.o.table.get(r.name);
    const ready = route !== undefined && route.entities.some((e) => e.trafficPercentage > 0 && e.traffic.backends.length > 0);
    return {
      name: r.name,
      id: r.id,
      creator: r.creator,
      creation_timestamp: r.createdMs,
      last_updated_timestamp: r.updatedMs,
      ...(r.description ? { description: r.description } : {}),
      tags: tagList(r.tags),
      ai_gateway: aiGatewayView(aiGatewayOf(r)),
      state: {
        ready: ready ? 'READY' : 'NOT_READY',
        config_update: r.configUpdate,
        ...(r.updateMessage ? { config_update_message: r.updateMessage } : {}),
      },
      ...(r.config ? { config: configView(r.config, st.current) } : {}),
      ...(r.pendingConfig ? { pending_config: { ...configView(r.pendingConfig, st.pending), start_time: r.updatedMs } } : {}),
    };
  }
}

function tagList(tags: Readonly<Record<string, string>>): Array<{ key: string; value: string }> {
  return Object.entries(tags).map(([key, value]) => ({ key, value }));
}

/** The route fields that come from the AI gateway settings. */
function gatewayPolicies(st: EndpointState, a: AiGatewayConfig): Pick<EndpointRoute, 'fallback' | 'rateLimiter' | 'maxBodyBytes'> {
  return { fallback: a.fallbackEnabled, rateLimiter: st.rateLimiter, maxBodyBytes: a.maxBodyBytes };
}

/** One served entity's replica counts and gateway load (see `EndpointController.entityGauges`). */
export interface EntityGauges {
  endpoint: string;
  servedEntity: string;
  ready: number;
  starting: number;
  desired: number;
  inFlight: number;
  queued: number;
}

export type EndpointView = Record<string, unknown> & { name: string; state: { ready: 'READY' | 'NOT_READY'; config_update: string } };

/** Throws when the caller may not serve one of these registered models. */
export type ModelCheck = (modelNames: string[]) => Promise<void>;

const noCheck: ModelCheck = async () => undefined;

function isFamilyConfig(c: EndpointConfig): boolean {
  return c.servedEntities.some((e) => e.family !== undefined);
}

/** "iris version 3", or "family ads-*" for a family entity. */
function describeEntity(e: ServedEntityConfig): string {
  return e.family === undefined ? `${e.entityName} version ${e.entityVersion}` : e.entityName;
}

/** The models a config serves by name (a family's members are checked per request instead). */
function modelsOf(c: EndpointConfig): string[] {
  return [...new Set(c.servedEntities.filter((e) => e.family === undefined).map((e) => e.entityName))];
}

/** How long the endpoint view waits for a family replica's cache counters. */
const FAMILY_STATS_TIMEOUT_MS = 1000;

/** A family entity's model caches in the endpoint view (`state.family`). */
export interface FamilyView {
  replicas: Array<{ replica: string; models_loaded: number; bytes: number; budget_bytes: number }>;
  hits: number;
  misses: number;
  /** hits / (hits + misses); null before the first request. */
  hit_rate: number | null;
  loads: number;
  load_failures: number;
  evictions: number;
  load_seconds_avg: number | null;
  load_seconds_max: number;
}

function familyView(replicas: Array<{ replica: string; stats: ModelCacheStats }>): FamilyView {
  const sum = (k: 'hits' | 'misses' | 'loads' | 'loadFailures' | 'evictions' | 'loadSecondsSum'): number => replicas.reduce((a, r) => a + r.stats[k], 0);
  const hits = sum('hits');
  const misses = sum('misses');
  const loads = sum('loads');
  return {
    replicas: replicas.map((r) => ({ replica: r.replica, models_loaded: r.stats.models, bytes: r.stats.bytes, budget_bytes: r.stats.budgetBytes })),
    hits, misses, hit_rate: hits + misses === 0 ? null : hits / (hits + misses),
    loads, load_failures: sum('loadFailures'), evictions: sum('evictions'),
    load_seconds_avg: loads === 0 ? null : sum('loadSecondsSum') / loads,
    load_seconds_max: replicas.reduce((a, r) => Math.max(a, r.stats.loadSecondsMax), 0),
  };
}

/**
 * What a family entity's replicas are told: their cache budget and how the runtime stages a
 * member for them. The member is looked up again (a replica asks only by name and version, and
 * gets nothing outside its family), then copied to this machine and checked against its digest.
 */
function familySpec(f: FamilyConfig, resolver: FamilyResolver, artifacts: ArtifactStore): NonNullable<ReplicaSpec['family']> {
  return {
    cacheBytes: f.cacheBytes,
    sessionFallback: f.sessionFallback,
    stage: async (name, version) => {
      const member = await resolver.resolve(`${name}/${version}`, 'model');
      return { artifactDir: await artifacts.localDir(member.artifactPath, member.artifactSha256), modelFile: member.modelFile };
    },
  };
}
