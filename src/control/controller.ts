/**
 * The endpoint controller: desired state in, running replicas and routes out. A facade over the
 * parts that do the work, each with one job:
 *
 * - `EndpointLifecycle` (./lifecycle.ts): the endpoints' desired state; create, config updates,
 *   cancel, AI gateway settings, tags, delete; recovery at start.
 * - `RolloutRunner` (./rollout.ts): rolls a pending config out step by step (start, validate,
 *   canary steps, swap, drain) and unwinds a failed or canceled one.
 * - `ReplicaSupervisor` (./replicas.ts): starts and stops replicas, restarts dead ones with
 *   backoff, quarantines entities whose replicas break the control protocol.
 * - `ScalingLoop` (./scaling.ts): the per-entity autoscaler ticks, pokes from waiting requests,
 *   and the resulting starts and retirements.
 * - views (./views.ts): the API's JSON of an endpoint, in `src/api`'s shapes.
 *
 * The parts share `EndpointState` / `EntityReplicas` objects (./state.ts). The facade wires them
 * and answers the read-only questions the API and the other planes ask.
 */
import type { ArtifactStore } from '../artifacts/index.js';
import type { AiGatewaySettings, FamilyCacheView, ServingEndpoint, Tag } from '../api/index.js';
import type { Authorizer } from '../auth/index.js';
import { FerryError, notFound } from '../errors.js';
import { GatewayStats, type RoutingTable, type TrafficOptions } from '../gateway/index.js';
import { endpointOpenApi } from '../protocols/index.js';
import type { Registry } from '../registry/index.js';
import type { ReplicaSpec, Runtime } from '../runtime/index.js';
import type { MetadataStore } from '../store/index.js';
import type { Signature } from '../tensor/index.js';
import type { ServedEntityConfig } from './config.js';
import { EndpointLifecycle, type ModelCheck } from './lifecycle.js';
import type { PeerLoad } from './load.js';
import { ReplicaSupervisor } from './replicas.js';
import { RolloutRunner } from './rollout.js';
import { creatorReads, inferenceTableSettings } from './routes.js';
import { ScalingLoop } from './scaling.js';
import { describeEntity, EntityReplicas, type ControlLog, type NewEntityReplicas, type StoredEndpoint, type WorkerLoad } from './state.js';
import { endpointView, entityGauges, readFamilyViews, type EntityGauges } from './views.js';

export type { ModelCheck } from './lifecycle.js';
export type { DeploymentState } from './state.js';
export type { EntityGauges } from './views.js';

/** An endpoint as the API shows it. */
export type EndpointView = ServingEndpoint;

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
   * Several servers on one store (Kubernetes), or this server's gateway workers: the other
   * gateways' load, added to this process's own in every autoscale sample. Undefined with one
   * gateway.
   */
  peers?: Pick<PeerLoad, 'demand' | 'refresh'> | undefined;
  /** Gateway workers' in-flight and queued requests per served entity (see `WorkerLoad`). */
  workerLoad?: WorkerLoad | undefined;
  now: () => number;
  log: ControlLog;
}

/** Bytes of a replica's log the logs route answers (its tail). */
const LOG_TAIL_BYTES = 64 * 1024;

export class EndpointController {
  /** Per-entity answers as the gateway saw them; the gateway records into it (see GatewayStats). */
  readonly stats: GatewayStats;
  private readonly lifecycle: EndpointLifecycle;
  private readonly scaling: ScalingLoop;

  constructor(private readonly opts: ControllerOptions) {
    const { store, now, log } = opts;
    this.stats = new GatewayStats({ now });
    const supervisor = new ReplicaSupervisor({
      runtime: opts.runtime, artifacts: opts.artifacts, replicaMemoryLimitBytes: opts.replicaMemoryLimitBytes, maxBodyBytes: opts.maxBodyBytes,
      inputLimits: opts.inputLimits, drainTimeoutMs: opts.drainTimeoutMs, now, log,
    });
    const newEntityReplicas: NewEntityReplicas = (st, entity) => new EntityReplicas(
      st.record.name, entity, opts.traffic, (d) => this.scaling.poke(d), store, creatorReads(store, opts.authz, st.record.creator), opts.workerLoad,
    );
    const rollouts = new RolloutRunner({
      supervisor, newEntityReplicas, store, table: opts.table, stats: this.stats, defaultRequestTimeoutMs: opts.defaultRequestTimeoutMs, now, log,
    });
    this.lifecycle = new EndpointLifecycle({
      store, registry: opts.registry, runtime: opts.runtime, table: opts.table, stats: this.stats, supervisor, rollouts, newEntityReplicas,
      maxBodyBytes: opts.maxBodyBytes, now, log,
    });
    this.scaling = new ScalingLoop({
      supervisor, serving: () => this.lifecycle.serving(), hasEndpoints: () => this.lifecycle.size > 0, peers: opts.peers, now, log,
    });
  }

  /** Loads the stored endpoints, so the API shows them; `restore` brings them back up. */
  start(): Promise<void> {
    return this.lifecycle.start();
  }

  /** Brings the loaded endpoints back up in the background (see `EndpointLifecycle.restore`). */
  restore(): void {
    this.lifecycle.restore();
  }

  /** Creates an endpoint and starts rolling its config out (see `EndpointLifecycle.create`). */
  create(body: unknown, principal: string, mayServe?: ModelCheck): Promise<StoredEndpoint> {
    return this.lifecycle.create(body, principal, mayServe);
  }

  updateConfig(name: string, body: unknown, mayServe?: ModelCheck): Promise<StoredEndpoint> {
    return this.lifecycle.updateConfig(name, body, mayServe);
  }

  cancelUpdate(name: string): Promise<void> {
    return this.lifecycle.cancelUpdate(name);
  }

  setAiGateway(name: string, body: unknown): Promise<AiGatewaySettings> {
    return this.lifecycle.setAiGateway(name, body);
  }

  patchTags(name: string, body: unknown): Promise<{ tags: Tag[] }> {
    return this.lifecycle.patchTags(name, body);
  }

  delete(name: string): Promise<void> {
    return this.lifecycle.delete(name);
  }

  /** Stops the scaling loop, waits for background rollouts (tests and shutdown), then stops every replica. */
  async close(): Promise<void> {
    this.scaling.close();
    await this.lifecycle.close();
    await this.opts.runtime.close();
  }

  /**
   * The endpoint's id and inference table settings (undefined: no such endpoint). The inference
   * table reads it per request (a Map lookup), so a change applies from the next request.
   */
  inferenceTableOf(name: string): { endpointId: string; enabled: boolean; sampleFraction: number } | undefined {
    const r = this.lifecycle.find(name)?.record;
    return r === undefined ? undefined : inferenceTableSettings(r);
  }

  list(): EndpointView[] {
    return this.lifecycle.all().map((st) => endpointView(st, this.opts.table.get(st.record.name)));
  }

  describe(name: string, families?: ReadonlyMap<string, FamilyCacheView>): EndpointView {
    return endpointView(this.lifecycle.get(name), this.opts.table.get(name), families);
  }

  /** Replica counts and gateway load of every served entity, for metrics (see `entityGauges`). */
  entityGauges(): EntityGauges[] {
    return entityGauges(this.lifecycle.states());
  }

  /** The model caches of an endpoint's family entities (see `readFamilyViews`). */
  familyViews(name: string): Promise<Map<string, FamilyCacheView>> {
    return readFamilyViews(this.lifecycle.get(name));
  }

  /**
   * A served entity of an endpoint's serving config (`servedEntity` or the first) with its
   * measured cold starts (ms, newest last), for the simulator. Undefined when there is no such
   * entity; 404 when there is no such endpoint.
   */
  servedEntity(name: string, servedEntity?: string): { config: ServedEntityConfig; coldStartsMs: readonly number[] } | undefined {
    const st = this.lifecycle.get(name);
    const entity = st.record.config?.servedEntities.find((e) => servedEntity === undefined || e.name === servedEntity);
    if (entity === undefined) return undefined;
    return { config: entity, coldStartsMs: [...(st.current.get(entity.name)?.coldStartsMs ?? [])] };
  }

  async logs(name: string, servedEntity: string): Promise<string> {
    const st = this.lifecycle.get(name);
    const known = [...st.current.keys(), ...st.pending.keys()];
    if (!known.includes(servedEntity)) throw notFound(`Served entity '${servedEntity}' of serving endpoint '${name}'`);
    return this.opts.runtime.logs(name, servedEntity, LOG_TAIL_BYTES);
  }

  /**
   * Databricks' build logs (`GET .../served-models/{served}/build-logs`): the build log of the
   * entity's environment (a python model's virtualenv) when one was built, from the current or
   * the pending config (a failed update's entity included). Ferry builds no container image: for
   * any other entity the log says what it runs (a replica runs Ferry's own code with the version's
   * artifact, checked when the config was accepted).
   */
  async buildLogs(name: string, servedEntity: string): Promise<string> {
    const r = this.lifecycle.get(name).record;
    const e = [...(r.pendingConfig?.servedEntities ?? []), ...(r.config?.servedEntities ?? [])].find((x) => x.name === servedEntity);
    if (e === undefined) throw notFound(`Served entity '${servedEntity}' of serving endpoint '${name}'`);
    const { runtime, artifacts } = this.opts;
    if (runtime.buildLogs !== undefined && e.family === undefined && runtime.fetchesArtifacts !== true) {
      const log = await runtime.buildLogs(await artifacts.localDir(e.artifactPath, e.artifactSha256), e.flavor, LOG_TAIL_BYTES);
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
    const r = this.lifecycle.get(name).record;
    const entities = (r.config ?? r.pendingConfig)?.servedEntities ?? [];
    if (entities.some((e) => e.family !== undefined)) {
      throw new FerryError('INVALID_PARAMETER_VALUE', `Serving endpoint '${name}' serves a model family: each model has its own signature (GET /v2/models/${name}/versions/{model} describes one).`);
    }
    const bySignature = new Map<string, { entities: string[]; signature: Signature }>();
    for (const e of entities) {
      const version = await this.opts.registry.getVersion(e.entityName, Number(e.entityVersion));
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
}
