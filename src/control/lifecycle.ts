/**
 * The endpoint lifecycle: the desired state of every endpoint and the writes that change it.
 *
 * - The API writes desired state (an endpoint's config, or a pending config) durably, then hands
 *   the pending config to the rollout runner (./rollout.ts), which converges on it in the
 *   background: the API answers at once with the endpoint and its pending config.
 * - On start, every stored endpoint is loaded; `restore` brings them back up (the serving config
 *   first, then an update that was in progress starts over from its first step: progress within a
 *   rollout is not persisted, so the old config serves until the new one has passed every step
 *   again).
 * - A delete stops the replicas and removes everything kept about the endpoint before its record,
 *   so a new endpoint of the same name finds nothing of the old one.
 */
import { randomUUID } from 'node:crypto';
import { FerryError, invalidParameter, notFound } from '../errors.js';
import { statsKey, type GatewayStats, type RoutingTable } from '../gateway/index.js';
import type { Registry } from '../registry/index.js';
import type { Runtime } from '../runtime/index.js';
import type { MetadataStore } from '../store/index.js';
import type { AiGatewaySettings } from '../api/index.js';
import { aiGatewayView, compileAiGateway } from './ai-gateway.js';
import { compileConfig, parseCreateBody, patchTags, type EndpointConfig } from './config.js';
import { endpointDeleted, type EndpointDeletedEvent } from './events.js';
import type { ReplicaSupervisor } from './replicas.js';
import type { RolloutRunner } from './rollout.js';
import { rateLimiterFor } from './routes.js';
import { EndpointState, type ControlLog, type EntityReplicas, type NewEntityReplicas, type StoredEndpoint } from './state.js';
import { tagList } from './views.js';

/** Throws when the caller may not serve one of these registered models. */
export type ModelCheck = (modelNames: string[]) => Promise<void>;

const noCheck: ModelCheck = async () => undefined;

export interface LifecycleOptions {
  store: MetadataStore;
  registry: Registry;
  runtime: Runtime;
  table: RoutingTable;
  stats: GatewayStats;
  supervisor: ReplicaSupervisor;
  rollouts: RolloutRunner;
  newEntityReplicas: NewEntityReplicas;
  maxBodyBytes: number;
  now: () => number;
  log: ControlLog;
}

export class EndpointLifecycle {
  private readonly endpoints = new Map<string, EndpointState>();
  /** Background convergence (rollouts, recoveries), awaited by `close`. */
  private readonly background = new Set<Promise<void>>();
  /** Endpoints loaded by `start`, until `restore` brings them up (those created since roll out on their own). */
  private readonly stored: EndpointState[] = [];

  constructor(private readonly opts: LifecycleOptions) {}

  /** Loads the stored endpoints, so the API shows them; `restore` brings them back up. */
  async start(): Promise<void> {
    for (const record of (await this.opts.store.listEndpoints()) as StoredEndpoint[]) {
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

  /** The endpoint's state; 404 naming it when there is none. */
  get(name: string): EndpointState {
    const st = this.endpoints.get(name);
    if (!st) throw notFound(`Serving endpoint '${name}'`);
    return st;
  }

  /** The endpoint's state, or undefined (no error: per-request lookups). */
  find(name: string): EndpointState | undefined {
    return this.endpoints.get(name);
  }

  /** Every endpoint, by name. */
  all(): EndpointState[] {
    return [...this.endpoints.values()].sort((a, b) => a.record.name.localeCompare(b.record.name));
  }

  /** Every endpoint, in the order they were loaded or created. */
  states(): Iterable<EndpointState> {
    return this.endpoints.values();
  }

  get size(): number {
    return this.endpoints.size;
  }

  /** The entities of every endpoint's serving config (what the scaling loop scales). */
  *serving(): Iterable<EntityReplicas> {
    for (const st of this.endpoints.values()) {
      if (st.deleted) continue;
      for (const d of st.current.values()) if (!d.stopped) yield d;
    }
  }

  /**
   * Creates an endpoint and starts rolling its config out. `mayServe` is asked, before anything is
   * written, whether the caller may serve the config's models (it throws when not).
   */
  async create(body: unknown, principal: string, mayServe: ModelCheck = noCheck): Promise<StoredEndpoint> {
    const b = parseCreateBody(body);
    if (this.endpoints.has(b.name)) throw new FerryError('RESOURCE_ALREADY_EXISTS', `Serving endpoint '${b.name}' already exists.`);
    const config = await compileConfig(b.config, 1, this.opts.registry, b.name);
    await mayServe(modelsOf(config));
    const now = this.opts.now();
    const record: StoredEndpoint = {
      name: b.name, id: randomUUID(), creator: principal, createdMs: now, updatedMs: now, description: b.description,
      tags: Object.fromEntries(b.tags.map((t) => [t.key, t.value])),
      config: undefined, pendingConfig: config, configUpdate: 'IN_PROGRESS', updateMessage: '',
      aiGateway: compileAiGateway(b.ai_gateway, { maxBodyBytes: this.opts.maxBodyBytes }),
    };
    await this.opts.store.createEndpoint(record);
    const st = new EndpointState(record);
    this.endpoints.set(b.name, st);
    this.track(this.opts.rollouts.run(st));
    return record;
  }

  /** Starts rolling out a new config; `mayServe` as in `create`. */
  async updateConfig(name: string, body: unknown, mayServe: ModelCheck = noCheck): Promise<StoredEndpoint> {
    const st = this.get(name);
    if (st.record.configUpdate === 'IN_PROGRESS') {
      throw new FerryError('RESOURCE_CONFLICT', `Serving endpoint '${name}' is already being updated (config version ${st.record.pendingConfig?.configVersion ?? '?'}); wait for it to finish.`);
    }
    const version = Math.max(st.record.config?.configVersion ?? 0, st.record.pendingConfig?.configVersion ?? 0) + 1;
    const config = await compileConfig(body, version, this.opts.registry, name, 'config');
    const current = st.record.config;
    if (current !== undefined && isFamilyConfig(current) !== isFamilyConfig(config)) {
      // Requests to a family name their model and others do not: no rollout can move between them.
      throw invalidParameter('config.served_entities', config.servedEntities.map((e) => e.name),
        `${isFamilyConfig(current) ? 'model families' : 'single model versions'}, as the endpoint serves now (an endpoint cannot switch between a model family and single versions; create another endpoint)`);
    }
    await mayServe(modelsOf(config));
    this.discardPending(st);
    st.record = { ...st.record, pendingConfig: config, configUpdate: 'IN_PROGRESS', updateMessage: '', updatedMs: this.opts.now() };
    await this.opts.store.putEndpoint(st.record);
    this.track(this.opts.rollouts.run(st));
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
    st.record = { ...st.record, configUpdate: 'UPDATE_CANCELED', updateMessage: `Update to config version ${st.record.pendingConfig?.configVersion ?? '?'} canceled${where}.`, updatedMs: this.opts.now() };
    await this.opts.store.putEndpoint(st.record);
    this.opts.log('info', 'endpoint update canceled', { endpoint: name });
    await run?.done;
  }

  /**
   * Replaces the endpoint's AI gateway settings; they apply to the live route at once. New rate
   * limits start with full buckets. Answers the settings in the API shape.
   */
  async setAiGateway(name: string, body: unknown): Promise<AiGatewaySettings> {
    const st = this.get(name);
    const aiGateway = compileAiGateway(body, { maxBodyBytes: this.opts.maxBodyBytes }, '');
    st.record = { ...st.record, aiGateway, updatedMs: this.opts.now() };
    await this.opts.store.putEndpoint(st.record);
    st.rateLimiter = rateLimiterFor(name, aiGateway);
    const route = this.opts.table.get(name);
    if (route) this.opts.table.set({ ...route, fallback: aiGateway.fallbackEnabled, rateLimiter: st.rateLimiter, maxBodyBytes: aiGateway.maxBodyBytes });
    return aiGatewayView(aiGateway);
  }

  /** Adds and deletes tags (Databricks `PATCH .../tags`); answers the endpoint's tags. */
  async patchTags(name: string, body: unknown): Promise<{ tags: Array<{ key: string; value: string }> }> {
    const st = this.get(name);
    const tags = patchTags(st.record.tags, body);
    st.record = { ...st.record, tags, updatedMs: this.opts.now() };
    await this.opts.store.putEndpoint(st.record);
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
    this.opts.table.delete(name);
    this.endpoints.delete(name);
    const entities = [...st.current.values(), ...st.pending.values()];
    await Promise.all(entities.map((d) => this.opts.supervisor.stop(d)));
    for (const d of entities) this.opts.stats.forget(statsKey(name, d.entity.name, d.entity.entityVersion));
    await this.opts.runtime.deleteLogs(name);
    if (endpointDeleted.hasSubscribers) endpointDeleted.publish({ endpoint: name, id: st.record.id } satisfies EndpointDeletedEvent);
    await this.opts.store.deleteEndpoint(name);
  }

  /**
   * Waits for background rollouts (tests and shutdown) and starts nothing more; the runtime then
   * stops every replica.
   */
  async close(): Promise<void> {
    for (const st of this.endpoints.values()) {
      st.deleted = true;
      st.run?.abort.abort(); // the record stays IN_PROGRESS: the next start rolls out again
    }
    await Promise.allSettled([...this.background]);
    for (const st of this.endpoints.values()) {
      for (const d of [...st.current.values(), ...st.pending.values()]) this.opts.supervisor.halt(d);
    }
  }

  /** A new config replaces a failed or canceled one: the replicas only it used stop. */
  private discardPending(st: EndpointState): void {
    const live = new Set(st.current.values());
    for (const d of st.pending.values()) if (!live.has(d)) void this.opts.supervisor.stop(d);
    st.pending = new Map();
  }

  private track(p: Promise<void>): void {
    const tracked = p.catch((err: unknown) => this.opts.log('error', 'endpoint reconcile failed', { error: err instanceof Error ? err.stack : String(err) }))
      .finally(() => this.background.delete(tracked));
    this.background.add(tracked);
  }

  /** After a restart: serve the stored config again, then resume an interrupted update. */
  private async recover(st: EndpointState): Promise<void> {
    const config = st.record.config;
    if (config) {
      const entities = new Map(config.servedEntities.map((e) => [e.name, this.opts.newEntityReplicas(st, e)]));
      st.current = entities;
      await Promise.allSettled([...entities.values()].map((d) => this.opts.supervisor.deploy(d)));
      if (st.deleted) return;
      this.opts.rollouts.publish(st, config, entities);
      // Entities that failed to come back keep retrying in the background.
      for (const d of entities.values()) if (d.readyReplicas === 0) this.opts.supervisor.scheduleRestart(d);
    }
    if (st.record.configUpdate === 'IN_PROGRESS' && st.record.pendingConfig) await this.opts.rollouts.run(st);
  }
}

function isFamilyConfig(c: EndpointConfig): boolean {
  return c.servedEntities.some((e) => e.family !== undefined);
}

/** The models a config serves by name (a family's members are checked per request instead). */
function modelsOf(c: EndpointConfig): string[] {
  return [...new Set(c.servedEntities.filter((e) => e.family === undefined).map((e) => e.entityName))];
}
