/**
 * Endpoint configuration: the Databricks serving-endpoint request shapes (snake_case, as clients
 * send them) → validated → compiled `EndpointConfig` (camelCase, versions resolved). Aliases are
 * resolved and recorded at config time, so moving `@champion` later does not silently change what
 * an endpoint serves.
 */
import { z } from 'zod';
import { READ_ONLY_CONFIG_FIELDS } from '../api/index.js';
import { configError, parseBytes } from '../config/index.js';
import { FerryError, invalidParameter } from '../errors.js';
import { WORKLOAD_TYPES, type FlavorName, type WorkloadType } from '../flavors/index.js';
import type { Registry } from '../registry/index.js';
import { scalingSpecFor, type ScalingSpec, type ScalingTunables } from '../autoscaler/index.js';
import { DEFAULT_BATCHING, type BatchingConfig } from '../replica/options.js';
import type { ModelVersionRecord } from '../store/index.js';
import type { FamilyConfig } from '../multi/index.js';
import { aiGatewaySchema } from './ai-gateway.js';

export const WORKLOAD_SIZES = ['Small', 'Medium', 'Large'] as const;
export type WorkloadSize = (typeof WORKLOAD_SIZES)[number];

/** At most this many served entities per endpoint (as Databricks). */
export const MAX_SERVED_ENTITIES = 10;
/** At most this many tags per endpoint (Databricks' limit). */
export const MAX_TAGS = 20;
/** Canary steps per rollout: more is a slow-motion rollout, not more safety. */
export const MAX_CANARY_STEPS = 10;
/**
 * A healthy model answers ~0% 5xx; 5% is clearly broken, yet tolerates one stray error in 20
 * requests of a lightly loaded step.
 */
export const DEFAULT_MAX_ERROR_RATE = 0.05;
/** New p99 over twice the old one is a regression users notice; less is within run-to-run noise. */
export const DEFAULT_MAX_P99_LATENCY_RATIO = 2;

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
const NAME_RULE = '1-63 letters, digits, "-" or "_", starting with a letter or digit';

/**
 * The read-only fields an endpoint view shows inside its `config` (see `READ_ONLY_CONFIG_FIELDS`):
 * accepted with any value and ignored, so a client can send a view's config back unchanged.
 * Any other unknown field is still refused, named.
 */
function readOnly<K extends string>(keys: readonly K[]): Record<K, z.ZodOptional<z.ZodUnknown>> {
  return Object.fromEntries(keys.map((k) => [k, z.unknown().optional()])) as Record<K, z.ZodOptional<z.ZodUnknown>>;
}

const servedEntitySchema = z.strictObject({
  name: z.string().regex(NAME_RE, `expected ${NAME_RULE}`).optional(),
  // Either one model version (entity_name + entity_version) or a family (model_family).
  entity_name: z.string().min(1).optional(),
  entity_version: z.union([z.string().min(1), z.number().int().positive()]).transform(String).optional(),
  /**
   * With a version number in `entity_version`: the alias it was resolved from, as the endpoint
   * view shows it. It must still point to that version (it is recorded, not followed).
   */
  entity_alias: z.string().min(1).optional(),
  /** Ferry extension: many registered models behind one served entity (docs/multi-model.md). */
  model_family: z.strictObject({
    name_prefix: z.string().min(1).max(128).optional(),
    /** "key=value": registered models carrying this tag. */
    tag: z.string().regex(/^[^=]+=.*$/, 'expected "key=value"').optional(),
    /** Bytes of models one replica keeps loaded, e.g. "64MiB". */
    cache_size: z.union([z.string(), z.number().int().positive()]).default('64MiB'),
    /** Models the compact evaluators cannot run get an onnxruntime session (charged its measured cost); false refuses them. */
    session_fallback: z.boolean().default(true),
  }).optional(),
  workload_size: z.enum(WORKLOAD_SIZES).default('Small'),
  workload_type: z.enum(WORKLOAD_TYPES).default('CPU'),
  scale_to_zero_enabled: z.boolean().default(false),
  min_provisioned_concurrency: z.number().int().min(0).optional(),
  max_provisioned_concurrency: z.number().int().min(1).optional(),
  /** Ferry extension: autoscaling tunables (see docs/api.md); defaults suit one machine. */
  autoscaling: z.strictObject({
    target_concurrency: z.number().optional(),
    stable_window_ms: z.number().int().optional(),
    panic_window_ms: z.number().int().optional(),
    panic_threshold: z.number().optional(),
    scale_down_delay_ms: z.number().int().optional(),
    scale_to_zero_grace_ms: z.number().int().optional(),
    max_scale_up_rate: z.number().optional(),
    ...readOnly(READ_ONLY_CONFIG_FIELDS.autoscaling),
  }).optional(),
  /** Ferry extension: dynamic batching in the replica (see docs/api.md). */
  batching: z.strictObject({
    enabled: z.boolean().default(true),
    max_batch_size: z.number().int().min(1).max(65_536).default(64),
    max_queue_delay_us: z.number().int().min(0).max(1_000_000).default(0),
    preferred_batch_sizes: z.array(z.number().int().min(1).max(65_536)).max(16).default([]),
  }).optional(),
  /**
   * Ferry extension: an MLflow scoring body sent to a new replica before it gets traffic, instead
   * of the version's input example (see docs/api.md).
   */
  validation_request: z.record(z.string(), z.unknown()).optional(),
  ...readOnly(READ_ONLY_CONFIG_FIELDS.servedEntity),
  /**
   * Ferry extension: with `entity_version` naming an alias, moving the alias rolls the endpoint
   * forward to the version it names, through the normal validated rollout (alias-follow.ts).
   */
  follow_alias: z.boolean().optional(),
});

/** Ferry extension: a canary rollout (see docs/api.md and ./rollout.ts). */
const rolloutSchema = z.strictObject({
  canary_steps: z.array(z.strictObject({
    traffic_percentage: z.number().int().min(1).max(100),
    duration_ms: z.number().int().min(0).max(3_600_000),
  })).min(1).max(MAX_CANARY_STEPS),
  max_error_rate: z.number().min(0).max(1).default(DEFAULT_MAX_ERROR_RATE),
  max_p99_latency_ratio: z.number().min(1).max(1000).default(DEFAULT_MAX_P99_LATENCY_RATIO),
});

const routeSchema = z.strictObject({
  served_model_name: z.string().optional(),
  served_entity_name: z.string().optional(),
  traffic_percentage: z.number().int().min(0).max(100),
});

/**
 * Databricks' legacy `served_models` entry (still accepted there, and sent by older clients): the
 * same entity as `served_entities`, with `model_name` / `model_version` for `entity_name` /
 * `entity_version`.
 */
const servedModelSchema = z.strictObject({
  name: z.string().regex(NAME_RE, `expected ${NAME_RULE}`).optional(),
  model_name: z.string().min(1),
  model_version: z.union([z.string().min(1), z.number().int().positive()]).transform(String),
  workload_size: z.enum(WORKLOAD_SIZES).default('Small'),
  workload_type: z.enum(WORKLOAD_TYPES).default('CPU'),
  scale_to_zero_enabled: z.boolean().default(false),
  min_provisioned_concurrency: z.number().int().min(0).optional(),
  max_provisioned_concurrency: z.number().int().min(1).optional(),
});

/** The body of `PUT /serving-endpoints/{name}/config`, and `config` of a create. */
export const endpointConfigSchema = z.strictObject({
  /**
   * The endpoint's name: Databricks SDKs ≥ 0.71 send it in every create (`EndpointCoreConfigInput`
   * requires it). When present it must be the endpoint's own name.
   */
  name: z.string().optional(),
  // Exactly one of the two (checked by compileConfig, which names the field).
  served_entities: z.array(servedEntitySchema).min(1).max(MAX_SERVED_ENTITIES).optional(),
  served_models: z.array(servedModelSchema).min(1).max(MAX_SERVED_ENTITIES).optional(),
  traffic_config: z.strictObject({
    routes: z.array(routeSchema).min(1),
    /** Ferry extension: mirror a share of the requests to an entity; its answers are discarded. */
    shadow_routes: z.array(z.strictObject({ served_entity_name: z.string(), mirror_percentage: z.number().int().min(1).max(100) })).max(MAX_SERVED_ENTITIES).optional(),
  }).optional(),
  /** Ferry extension: how long the gateway waits for a replica's answer (default: server setting). */
  request_timeout_ms: z.number().int().min(1).max(600_000).optional(),
  rollout: rolloutSchema.optional(),
  ...readOnly(READ_ONLY_CONFIG_FIELDS.config),
});


const tagSchema = z.strictObject({ key: z.string().min(1).max(255), value: z.string().max(1000).default('') });

export const createEndpointSchema = z.strictObject({
  name: z.string().regex(NAME_RE, `expected ${NAME_RULE}`),
  config: endpointConfigSchema,
  ai_gateway: aiGatewaySchema.optional(),
  description: z.string().max(1000).default(''),
  tags: z.array(tagSchema).default([]),
});

/** The body of `PATCH /serving-endpoints/{name}/tags`: tags to add (or overwrite) and keys to delete. */
export const patchTagsSchema = z.strictObject({
  add_tags: z.array(tagSchema).max(MAX_TAGS).default([]),
  delete_tags: z.array(z.string().min(1).max(255)).max(MAX_TAGS).default([]),
});

/**
 * Applies a tags patch to `tags`: deletions first, then additions (so a key in both ends up set,
 * as Databricks does). At most MAX_TAGS tags remain.
 */
export function patchTags(tags: Readonly<Record<string, string>>, body: unknown): Record<string, string> {
  const r = patchTagsSchema.safeParse(body);
  if (!r.success) throw configError(r.error, body);
  // A Map: a key such as "__proto__" is a tag like any other.
  const out = new Map(Object.entries(tags));
  for (const key of r.data.delete_tags) out.delete(key);
  for (const t of r.data.add_tags) out.set(t.key, t.value);
  if (out.size > MAX_TAGS) throw invalidParameter('add_tags', r.data.add_tags.map((t) => t.key), `at most ${MAX_TAGS} tags on an endpoint in all (it would have ${out.size})`);
  return Object.fromEntries(out);
}


export interface ServedEntityConfig {
  name: string;
  /** The registered model; for a family entity, a description of the family ("family ads-*"). */
  entityName: string;
  /** Resolved version number, as a string (Databricks shape). */
  entityVersion: string;
  /** The alias the user gave, when they gave one. */
  entityAlias: string | undefined;
  /** Whether moving `entityAlias` rolls the endpoint to the alias' new version (alias-follow.ts). */
  followAlias: boolean;
  workloadSize: WorkloadSize;
  workloadType: WorkloadType;
  scaleToZeroEnabled: boolean;
  minProvisionedConcurrency: number | undefined;
  maxProvisionedConcurrency: number | undefined;
  batching: BatchingConfig;
  /** Compiled scaling policy: bounds from the workload size (or provisioned concurrency) and tunables. */
  scaling: ScalingSpec;
  /** What the runtime needs to start a replica (copied from the version at config time). */
  artifactPath: string;
  /** The version's tree digest: a store that copies the artifact to this machine checks the copy against it. */
  artifactSha256: string;
  modelFile: string;
  flavor: FlavorName;
  /** The version's input example, a ready-to-send MLflow scoring body (copied at config time); undefined when it has none. */
  inputExample: unknown;
  /** Ferry extension: the scoring body to validate new replicas with instead of the input example. */
  validationRequest: Record<string, unknown> | undefined;
  /** Set for a family entity (then the version, artifact and flavor fields above are empty). */
  family: FamilyConfig | undefined;
}

export interface CanaryStep {
  /** Share of the old entities' traffic the new ones get during the step, 1-100. */
  trafficPercentage: number;
  durationMs: number;
}

/** How an update that replaces served entities moves traffic (Ferry extension). */
export interface RolloutConfig {
  canarySteps: CanaryStep[];
  /** A step fails when the new entities' 5xx share exceeds this (0-1). */
  maxErrorRate: number;
  /** A step fails when the new entities' p99 latency exceeds this × the old ones' (≥ 1). */
  maxP99LatencyRatio: number;
}

export interface TrafficRoute {
  servedEntityName: string;
  trafficPercentage: number;
}

export interface ShadowRoute {
  servedEntityName: string;
  mirrorPercentage: number;
}

export interface EndpointConfig {
  configVersion: number;
  servedEntities: ServedEntityConfig[];
  routes: TrafficRoute[];
  /** Entities that get a copy of a share of the requests; callers never wait for or see them. */
  shadows: ShadowRoute[];
  requestTimeoutMs: number | undefined;
  rollout: RolloutConfig | undefined;
}

/** Validates a create body; the config inside is compiled separately with `compileConfig`. */
export function parseCreateBody(body: unknown): z.output<typeof createEndpointSchema> {
  const r = createEndpointSchema.safeParse(body);
  if (!r.success) throw configError(r.error, body);
  return r.data;
}

/**
 * Validates a config body, resolves versions and aliases through the registry (each must be
 * READY) and checks the traffic split. Errors name the field, e.g.
 * `config.served_entities[1].entity_version`.
 */
export async function compileConfig(raw: unknown, configVersion: number, registry: Registry, endpointName: string, field = 'config'): Promise<EndpointConfig> {
  const r = endpointConfigSchema.safeParse(raw);
  if (!r.success) throw configError(r.error, raw, `${field}.`);
  const c = r.data;
  if (c.name !== undefined && c.name !== endpointName) throw invalidParameter(`${field}.name`, c.name, `the endpoint's own name '${endpointName}' (or no name)`);
  const { entities, listField, keys } = entityList(c, field);
  const servedEntities: ServedEntityConfig[] = [];
  for (const [i, e] of entities.entries()) {
    const where = `${listField}[${i}]`;
    if (e.model_family !== undefined) {
      const family = compileFamilyEntity(e, e.model_family, where);
      if (servedEntities.some((s) => s.name === family.name)) throw invalidParameter(`${where}.name`, family.name, 'a name no other served entity of this endpoint has');
      servedEntities.push(family);
      continue;
    }
    // Only from served_entities: served_models requires model_name and model_version.
    if (e.entity_name === undefined) throw invalidParameter(`${where}.entity_name`, undefined, 'a registered model name (or model_family instead of entity_name and entity_version)');
    if (e.entity_version === undefined) throw invalidParameter(`${where}.entity_version`, undefined, 'a version number or alias of the registered model');
    const version = await resolveVersion(registry, e.entity_name, e.entity_version, where, keys);
    if (!version.artifact || version.status !== 'READY') {
      throw invalidParameter(`${where}.${keys.version}`, e.entity_version, `a READY version (version ${version.version} of '${e.entity_name}' is ${version.status}${version.statusMessage ? `: ${version.statusMessage}` : ''})`);
    }
    const entityAlias = await aliasOf(registry, e, version, where, keys);
    if (e.follow_alias === true && entityAlias === undefined) throw invalidParameter(`${where}.follow_alias`, true, `false, or an alias in ${keys.version} (${JSON.stringify(e.entity_version)} is a version number)`);
    const name = e.name ?? defaultEntityName(e.entity_name, version.version);
    if (servedEntities.some((s) => s.name === name)) throw invalidParameter(`${where}.name`, name, 'a name no other served entity of this endpoint has');
    servedEntities.push({
      name,
      entityName: e.entity_name,
      entityVersion: String(version.version),
      entityAlias,
      followAlias: e.follow_alias === true,
      ...workloadOf(e, where),
      artifactPath: version.artifact.path,
      artifactSha256: version.artifact.sha256,
      modelFile: version.artifact.modelFile,
      flavor: version.artifact.flavor,
      inputExample: version.artifact.inputExample,
      validationRequest: e.validation_request,
      family: undefined,
    });
  }
  const familyEntities = servedEntities.filter((e) => e.family !== undefined);
  if (familyEntities.length > 0 && familyEntities.length < servedEntities.length) {
    throw invalidParameter(`${field}.served_entities`, servedEntities.map((e) => e.name), 'either model families only or single model versions only (a request to a family names its model; one to a single version does not)');
  }
  const members = (e: ServedEntityConfig): string => JSON.stringify([e.family?.namePrefix, e.family?.tag]);
  const odd = familyEntities.find((e) => members(e) !== members(familyEntities[0] as ServedEntityConfig));
  if (odd !== undefined) {
    // A request names one model; every entity it may be sent to must have that model.
    throw invalidParameter(`${field}.served_entities`, odd.name, `family entities with the same name_prefix and tag (a split between them differs only in cache size, fallback and workload)`);
  }
  if (familyEntities.length > 0 && (c.traffic_config?.shadow_routes ?? []).length > 0) {
    throw invalidParameter(`${field}.traffic_config.shadow_routes`, c.traffic_config?.shadow_routes, 'no shadow routes on a family endpoint');
  }
  return {
    configVersion, servedEntities, routes: compileRoutes(c.traffic_config?.routes, servedEntities, field),
    shadows: compileShadows(c.traffic_config?.shadow_routes ?? [], servedEntities, `${field}.traffic_config.shadow_routes`),
    requestTimeoutMs: c.request_timeout_ms,
    rollout: compileRollout(c.rollout, `${field}.rollout`),
  };
}

/** The field names of an entity's model and version: `entity_*`, or `model_*` in the legacy `served_models`. */
interface EntityKeys {
  name: 'entity_name' | 'model_name';
  version: 'entity_version' | 'model_version';
}

/**
 * The config's served entities, from `served_entities` or the legacy `served_models` (mapped
 * field by field), with the list's field name and its model and version keys for error messages.
 */
function entityList(c: z.output<typeof endpointConfigSchema>, field: string): { entities: Array<z.output<typeof servedEntitySchema>>; listField: string; keys: EntityKeys } {
  if (c.served_entities !== undefined && c.served_models !== undefined) {
    throw invalidParameter(`${field}.served_models`, c.served_models.map((m) => m.model_name), 'no served_models next to served_entities (served_models is the legacy name of served_entities)');
  }
  if (c.served_entities !== undefined) return { entities: c.served_entities, listField: `${field}.served_entities`, keys: { name: 'entity_name', version: 'entity_version' } };
  if (c.served_models === undefined) throw invalidParameter(`${field}.served_entities`, undefined, `a list of 1-${MAX_SERVED_ENTITIES} served entities`);
  const entities = c.served_models.map(({ model_name, model_version, ...rest }) => ({ ...rest, entity_name: model_name, entity_version: model_version }));
  return { entities, listField: `${field}.served_models`, keys: { name: 'model_name', version: 'model_version' } };
}

/** What runs the entity, whatever it serves: workload, scaling bounds and tunables, batching. */
function workloadOf(e: z.output<typeof servedEntitySchema>, where: string): Pick<ServedEntityConfig,
  'workloadSize' | 'workloadType' | 'scaleToZeroEnabled' | 'minProvisionedConcurrency' | 'maxProvisionedConcurrency' | 'batching' | 'scaling'> {
  return {
    workloadSize: e.workload_size,
    workloadType: e.workload_type,
    scaleToZeroEnabled: e.scale_to_zero_enabled,
    minProvisionedConcurrency: e.min_provisioned_concurrency,
    maxProvisionedConcurrency: e.max_provisioned_concurrency,
    batching: compileBatching(e),
    scaling: compileScaling(e, where),
  };
}

function compileBatching(e: z.output<typeof servedEntitySchema>): BatchingConfig {
  return e.batching === undefined ? DEFAULT_BATCHING : {
    enabled: e.batching.enabled,
    maxBatchSize: e.batching.max_batch_size,
    maxQueueDelayUs: e.batching.max_queue_delay_us,
    preferredBatchSizes: e.batching.preferred_batch_sizes,
  };
}

/**
 * A family entity: no version is resolved at config time (each request names its model), so
 * the registry is not consulted; an empty family is allowed (models may be registered later).
 * Example: `{"name": "ads", "model_family": {"name_prefix": "ads-", "cache_size": "64MiB"}}`.
 */
function compileFamilyEntity(e: z.output<typeof servedEntitySchema>, f: NonNullable<z.output<typeof servedEntitySchema>['model_family']>, where: string): ServedEntityConfig {
  if (e.entity_name !== undefined || e.entity_version !== undefined || e.entity_alias !== undefined) {
    throw invalidParameter(`${where}.entity_name`, e.entity_name ?? e.entity_version ?? e.entity_alias, 'nothing next to model_family (a family entity serves many models; each request names one)');
  }
  if (f.name_prefix === undefined && f.tag === undefined) throw invalidParameter(`${where}.model_family`, f, 'a name_prefix, a tag ("key=value") or both');
  if (e.name === undefined) throw invalidParameter(`${where}.name`, undefined, `a name for the family entity (${NAME_RULE})`);
  if (e.validation_request !== undefined) throw invalidParameter(`${where}.validation_request`, e.validation_request, 'nothing on a family entity (its replicas load models on demand)');
  if (e.follow_alias === true) throw invalidParameter(`${where}.follow_alias`, true, 'false on a family entity (each request names its model, and a version or alias, itself)');
  const cacheBytes = parseBytes(f.cache_size);
  if (cacheBytes === undefined || cacheBytes < 1024 * 1024) throw invalidParameter(`${where}.model_family.cache_size`, f.cache_size, 'a size of at least 1MiB, such as "64MiB"');
  const tag = f.tag === undefined ? undefined : { key: f.tag.slice(0, f.tag.indexOf('=')), value: f.tag.slice(f.tag.indexOf('=') + 1) };
  return {
    name: e.name,
    entityName: `family ${[f.name_prefix === undefined ? '' : `${f.name_prefix}*`, tag === undefined ? '' : `tag ${f.tag}`].filter((x) => x !== '').join(' ')}`,
    entityVersion: '',
    entityAlias: undefined,
    followAlias: false,
    ...workloadOf(e, where),
    artifactPath: '',
    artifactSha256: '',
    modelFile: '',
    flavor: 'onnx',
    inputExample: undefined,
    validationRequest: undefined,
    family: { namePrefix: f.name_prefix, tag, cacheBytes, sessionFallback: f.session_fallback },
  };
}

/** Each shadow names a served entity once. Example: a candidate at 0% traffic mirrored at 20%. */
function compileShadows(shadows: Array<{ served_entity_name: string; mirror_percentage: number }>, entities: ServedEntityConfig[], field: string): ShadowRoute[] {
  const out: ShadowRoute[] = [];
  for (const [i, s] of shadows.entries()) {
    if (!entities.some((e) => e.name === s.served_entity_name)) {
      throw invalidParameter(`${field}[${i}].served_entity_name`, s.served_entity_name, `one of ${entities.map((e) => `'${e.name}'`).join(', ')}`);
    }
    if (out.some((o) => o.servedEntityName === s.served_entity_name)) throw invalidParameter(`${field}[${i}].served_entity_name`, s.served_entity_name, 'each served entity in one shadow route only');
    out.push({ servedEntityName: s.served_entity_name, mirrorPercentage: s.mirror_percentage });
  }
  return out;
}


/** Steps must raise the new entities' share: 10 → 50 → 100, never 50 → 10. */
function compileRollout(r: z.output<typeof rolloutSchema> | undefined, field: string): RolloutConfig | undefined {
  if (r === undefined) return undefined;
  const steps = r.canary_steps.map((s) => ({ trafficPercentage: s.traffic_percentage, durationMs: s.duration_ms }));
  for (const [i, s] of steps.entries()) {
    const prev = steps[i - 1];
    if (prev !== undefined && s.trafficPercentage <= prev.trafficPercentage) {
      throw invalidParameter(`${field}.canary_steps[${i}].traffic_percentage`, s.trafficPercentage, `more than the previous step's ${prev.trafficPercentage}`);
    }
  }
  return { canarySteps: steps, maxErrorRate: r.max_error_rate, maxP99LatencyRatio: r.max_p99_latency_ratio };
}

/** The served-entity fields that decide its scaling, in API shape (what `scalingConfigOf` reads). */
const scalingFieldsSchema = servedEntitySchema.pick({
  workload_size: true, workload_type: true, scale_to_zero_enabled: true, min_provisioned_concurrency: true, max_provisioned_concurrency: true, autoscaling: true,
});

/** A served entity's scaling fields in API shape (snake_case), as `PUT .../config` takes them. */
export type ScalingFields = z.input<typeof scalingFieldsSchema>;

/**
 * Compiles just the scaling fields of a served entity (workload size and type, scale to zero,
 * provisioned concurrency, `autoscaling` tunables) as a config update would, for callers that
 * judge a candidate config without applying it (the simulator). Errors are 400s naming
 * `where.<field>`.
 */
export function scalingConfigOf(raw: unknown, where: string): { spec: ScalingSpec; workloadSize: WorkloadSize; workloadType: WorkloadType } {
  const r = scalingFieldsSchema.safeParse(raw);
  if (!r.success) throw configError(r.error, raw, `${where}.`);
  return { spec: compileScaling(r.data, where), workloadSize: r.data.workload_size, workloadType: r.data.workload_type };
}

/** API field names of the tunables, for error messages. */
const TUNABLE_FIELDS: Record<keyof ScalingTunables, string> = {
  targetConcurrency: 'target_concurrency', stableWindowMs: 'stable_window_ms', panicWindowMs: 'panic_window_ms',
  panicThreshold: 'panic_threshold', scaleDownDelayMs: 'scale_down_delay_ms', scaleToZeroGraceMs: 'scale_to_zero_grace_ms',
  maxScaleUpRate: 'max_scale_up_rate',
};

/** The entity's scaling spec; an invalid tunable or bound is a 400 naming the API field. */
function compileScaling(e: z.output<typeof servedEntitySchema>, where: string): ScalingSpec {
  const a = e.autoscaling ?? {};
  try {
    return scalingSpecFor(
      { workloadSize: e.workload_size, scaleToZeroEnabled: e.scale_to_zero_enabled, minProvisionedConcurrency: e.min_provisioned_concurrency, maxProvisionedConcurrency: e.max_provisioned_concurrency },
      {
        targetConcurrency: a.target_concurrency, stableWindowMs: a.stable_window_ms, panicWindowMs: a.panic_window_ms, panicThreshold: a.panic_threshold,
        scaleDownDelayMs: a.scale_down_delay_ms, scaleToZeroGraceMs: a.scale_to_zero_grace_ms, maxScaleUpRate: a.max_scale_up_rate,
      },
    );
  } catch (err) {
    if (!(err instanceof FerryError)) throw err;
    const message = err.message.replace(/'(\w+)'/, (_m, key: string) => {
      const api = TUNABLE_FIELDS[key as keyof ScalingTunables];
      return `'${where}.${api === undefined ? key : `autoscaling.${api}`}'`;
    });
    throw new FerryError(err.code, message);
  }
}

async function resolveVersion(registry: Registry, name: string, version: string, where: string, keys: EntityKeys): Promise<ModelVersionRecord> {
  try {
    await registry.getModel(name);
    return /^\d+$/.test(version) ? await registry.getVersion(name, Number(version)) : await registry.getVersionByAlias(name, version);
  } catch (err) {
    if (err instanceof FerryError && err.code === 'RESOURCE_DOES_NOT_EXIST') {
      throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value for '${where}': ${err.message.replace(/\.$/, '')} (${keys.name} ${JSON.stringify(name)}, ${keys.version} ${JSON.stringify(version)}).`);
    }
    throw err;
  }
}

/**
 * The alias an entity records: the one `entity_version` named, or `entity_alias` next to a
 * version number (a view sent back), which must still point to that version. Example: `champion`
 * → 3 and `{"entity_version": "3", "entity_alias": "champion"}` → "champion"; after the alias
 * moved to 4, that body is refused naming `entity_alias`.
 */
async function aliasOf(registry: Registry, e: z.output<typeof servedEntitySchema>, version: ModelVersionRecord, where: string, keys: EntityKeys): Promise<string | undefined> {
  const named = e.entity_version === undefined || /^\d+$/.test(e.entity_version) ? undefined : e.entity_version;
  if (e.entity_alias === undefined) return named;
  if (named !== undefined) throw invalidParameter(`${where}.entity_alias`, e.entity_alias, `nothing next to an alias in ${keys.version} (${JSON.stringify(named)})`);
  const current = await registry.getVersionByAlias(version.name, e.entity_alias).catch((err: unknown) => {
    if (err instanceof FerryError && err.code === 'RESOURCE_DOES_NOT_EXIST') return undefined;
    throw err;
  });
  if (current?.version !== version.version) {
    const now = current === undefined ? 'it is not set' : `it points to version ${current.version}`;
    throw invalidParameter(`${where}.entity_alias`, e.entity_alias, `an alias of version ${version.version}, or no entity_alias (${now}; send the alias as ${keys.version} to serve what it points to)`);
  }
  return e.entity_alias;
}

/** "iris" version 3 → "iris-3" (Databricks' default served-entity name). */
export function defaultEntityName(model: string, version: number): string {
  return `${model.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 50)}-${version}`;
}

/**
 * Routes must name each served entity exactly once and add up to 100. Without a traffic_config,
 * one entity gets 100% and several split evenly (the remainder goes to the first).
 */
function compileRoutes(routes: Array<z.output<typeof routeSchema>> | undefined, entities: ServedEntityConfig[], field: string): TrafficRoute[] {
  if (routes === undefined) {
    const share = Math.floor(100 / entities.length);
    return entities.map((e, i) => ({ servedEntityName: e.name, trafficPercentage: share + (i === 0 ? 100 - share * entities.length : 0) }));
  }
  const out: TrafficRoute[] = [];
  for (const [i, r] of routes.entries()) {
    const where = `${field}.traffic_config.routes[${i}]`;
    const name = r.served_entity_name ?? r.served_model_name;
    if (name === undefined) throw invalidParameter(`${where}.served_entity_name`, undefined, 'the name of a served entity');
    if (!entities.some((e) => e.name === name)) throw invalidParameter(`${where}.served_entity_name`, name, `one of ${entities.map((e) => `'${e.name}'`).join(', ')}`);
    if (out.some((o) => o.servedEntityName === name)) throw invalidParameter(`${where}.served_entity_name`, name, 'each served entity in one route only');
    out.push({ servedEntityName: name, trafficPercentage: r.traffic_percentage });
  }
  const total = out.reduce((a, r) => a + r.trafficPercentage, 0);
  if (total !== 100) throw invalidParameter(`${field}.traffic_config.routes`, out.map((r) => r.trafficPercentage), `traffic percentages that add up to 100 (they add up to ${total})`);
  const missing = entities.find((e) => !out.some((o) => o.servedEntityName === e.name));
  if (missing) throw invalidParameter(`${field}.traffic_config.routes`, out.map((r) => r.servedEntityName), `a route for every served entity ('${missing.name}' has none; give it traffic_percentage 0 to keep it warm without traffic)`);
  return out;
}
