/**
 * MLflow's tracking REST API 2.0 under `/api/2.0/mlflow/` (experiments, runs, params, metrics,
 * tags, dataset inputs, logged-model records), in MLflow's shapes and error codes, so
 * `mlflow.start_run()`, `mlflow.log_*` and `MlflowClient` work unchanged. Run artifacts live in
 * Ferry's artifact store under `experiments/<id>/<run>/artifacts`, reached through the
 * `mlflow-artifacts` proxy: a run's `artifact_uri` is `mlflow-artifacts:/_experiments/<id>/<run>/artifacts`,
 * which the client resolves against its tracking URI.
 *
 * Access: experiments carry grants (CAN_READ < CAN_EDIT < CAN_MANAGE; the creator manages; the
 * Default experiment "0" is CAN_EDIT for every user, as MLflow's is open). A run's routes check
 * the run's experiment. Reading needs CAN_READ, logging and changing runs CAN_EDIT, deleting or
 * restoring an experiment CAN_MANAGE.
 */
import { randomInt, randomUUID } from 'node:crypto';
import { z } from 'zod';
import type {
  CreateExperimentRequest, CreateExperimentResponse, CreateRunRequest, EmptyResponse, Experiment, ExperimentResponse, LogBatchRequest, Metric, MetricHistoryResponse,
  LogInputsRequest, Run, RunInfo, RunResponse, SearchExperimentsResponse, SearchRunsResponse, Tag, UpdateRunRequest, UpdateRunResponse,
} from '../api/index.js';
import { access, identityOf, type Authorizer, type NameOf, type ServerRouter } from '../auth/index.js';
import type { SchemasFit } from '../config/index.js';
import { FerryError, invalidParameter, notFound } from '../errors.js';
import type { Context, JsonLimits } from '../http/index.js';
import { experimentArtifactUri, requestInput, requestParams, runArtifactUri } from '../registry/index.js';
import type { ExperimentRecord, LifecycleStage, MetadataStore, MetricPoint, RunRecord, TrackingStore } from '../store/index.js';
import { comparator, matches, parseOrderBy, parseSearchFilter, type Entity, type Lookup } from './search.js';

export interface TrackingApiOptions {
  maxBodyBytes: number;
  jsonLimits: JsonLimits;
  now: () => number;
}

/** MLflow's limits (mlflow/utils/validation.py): key length, values, entities per batch, search pages. */
export const TRACKING_LIMITS = {
  keyChars: 250,
  paramValueChars: 6000,
  tagValueChars: 5000,
  metricsPerBatch: 1000,
  paramsTagsPerBatch: 100,
  entitiesPerBatch: 1000,
  searchDefault: 1000,
  searchMax: 50_000,
} as const;

/** protobuf's JSON renders int64 as a string; accept both. */
const int64 = z.union([z.string().regex(/^-?\d{1,16}$/, 'expected an integer'), z.number().int()]).transform(Number);
const key = z.string().min(1).max(TRACKING_LIMITS.keyChars).regex(/^[\w./\- ]+$/, 'expected letters, digits, "_", "-", ".", " " or "/"');
const id = z.string().min(1);
/** NaN and infinities cannot be stored the same way in both stores nor written as JSON: refused. */
const metricValue = z.union([z.number(), z.string()]).transform(Number).pipe(z.number().finite('expected a finite number (Ferry stores no NaN or infinity)'));
const tag = z.object({ key, value: z.string().max(TRACKING_LIMITS.tagValueChars) });
const param = z.object({ key, value: z.string().max(TRACKING_LIMITS.paramValueChars) });
const metric = z.object({ key, value: metricValue, timestamp: int64, step: int64.default(0) });
const viewType = z.enum(['ACTIVE_ONLY', 'DELETED_ONLY', 'ALL']).default('ACTIVE_ONLY');
const maxResults = z.union([z.string().regex(/^\d+$/), z.number().int()]).transform(Number).pipe(z.number().int().min(1).max(TRACKING_LIMITS.searchMax)).default(TRACKING_LIMITS.searchDefault);
const list = (item: z.ZodType<string>) => z.union([item, z.array(item)]).transform((v) => [v].flat()).default([]);

const schemas = {
  createExperiment: z.object({ name: z.string().min(1).max(500), artifact_location: z.string().default(''), tags: z.array(tag).default([]) }),
  experimentId: z.object({ experiment_id: id }),
  experimentName: z.object({ experiment_name: z.string().min(1) }),
  updateExperiment: z.object({ experiment_id: id, new_name: z.string().min(1).max(500) }),
  experimentTag: z.object({ experiment_id: id, key, value: z.string().max(TRACKING_LIMITS.tagValueChars) }),
  searchExperiments: z.object({ filter: z.string().optional(), max_results: maxResults, order_by: list(z.string()), page_token: z.string().optional(), view_type: viewType }),
  createRun: z.object({ experiment_id: id.default('0'), run_name: z.string().max(250).default(''), start_time: int64.optional(), tags: z.array(tag).default([]) }),
  runId: z.object({ run_id: id }),
  updateRun: z.object({
    run_id: id, status: z.enum(['RUNNING', 'SCHEDULED', 'FINISHED', 'FAILED', 'KILLED']).optional(), end_time: int64.optional(), run_name: z.string().max(250).optional(),
  }),
  logBatch: z.object({
    run_id: id, metrics: z.array(metric).max(TRACKING_LIMITS.metricsPerBatch).default([]),
    params: z.array(param).max(TRACKING_LIMITS.paramsTagsPerBatch).default([]), tags: z.array(tag).max(TRACKING_LIMITS.paramsTagsPerBatch).default([]),
  }),
  logMetric: z.object({ run_id: id, key, value: metricValue, timestamp: int64, step: int64.default(0) }),
  logParam: z.object({ run_id: id, key, value: z.string().max(TRACKING_LIMITS.paramValueChars) }),
  setTag: z.object({ run_id: id, key, value: z.string().max(TRACKING_LIMITS.tagValueChars) }),
  deleteTag: z.object({ run_id: id, key: z.string().min(1) }),
  logInputs: z.object({
    run_id: id,
    datasets: z.array(z.object({ dataset: z.record(z.string(), z.unknown()), tags: z.array(z.object({ key: z.string(), value: z.string() })).default([]) })).max(TRACKING_LIMITS.entitiesPerBatch).default([]),
  }),
  logModel: z.object({ run_id: id, model_json: z.string().min(2).max(1 << 20) }),
  searchRuns: z.object({
    experiment_ids: list(id), filter: z.string().optional(), run_view_type: viewType, max_results: maxResults,
    order_by: list(z.string()), page_token: z.string().optional(),
  }),
  metricHistory: z.object({ run_id: id, metric_key: key }),
};

/** `src/api`'s request bodies and these schemas' inputs agree (checked by tsc when either changes). */
const requestsFit: SchemasFit<{
  createExperiment: CreateExperimentRequest;
  createRun: CreateRunRequest;
  updateRun: UpdateRunRequest;
  logBatch: LogBatchRequest;
  logInputs: LogInputsRequest;
}, typeof schemas> = { createExperiment: true, createRun: true, updateRun: true, logBatch: true, logInputs: true };
void requestsFit;

const RUN_ATTRIBUTES = ['run_id', 'run_name', 'status', 'user_id', 'start_time', 'end_time', 'artifact_uri', 'lifecycle_stage', 'created'];
const RUN_NUMERIC = ['start_time', 'end_time', 'created'];
const EXPERIMENT_ATTRIBUTES = ['name', 'experiment_id', 'creation_time', 'last_update_time', 'lifecycle_stage'];
const EXPERIMENT_NUMERIC = ['creation_time', 'last_update_time'];
/** The tag `runs/log-model` appends each logged model's MLmodel (as JSON) to, as MLflow's server does. */
const LOGGED_MODELS_TAG = 'mlflow.log-model.history';

export function trackingRoutes(router: ServerRouter, store: MetadataStore, authz: Authorizer, opts: TrackingApiOptions): void {
  const base = '/api/2.0/mlflow';
  const tracking: TrackingStore = store.tracking;
  const params = (ctx: Context): Promise<Record<string, unknown>> => requestParams(ctx, opts.maxBodyBytes, opts.jsonLimits);
  const input = <S extends z.ZodType>(ctx: Context, schema: S): Promise<z.output<S>> => requestInput(ctx, schema, opts.maxBodyBytes, opts.jsonLimits);
  /** The experiment a call names by `experiment_id` (Default when absent, as in runs/create). */
  const experimentOf: NameOf = async (ctx) => {
    const v = (await params(ctx)).experiment_id ?? '0';
    if (typeof v !== 'string' || v === '') throw invalidParameter('experiment_id', v, 'an experiment id');
    return v;
  };
  /**
   * The experiment of the run a call names by `run_id`; 404 for no such run (run ids are 128
   * random bits: saying one does not exist reveals nothing about anyone's runs).
   */
  const experimentOfRun: NameOf = async (ctx) => {
    const runId = (await params(ctx)).run_id;
    if (typeof runId !== 'string' || runId === '') throw invalidParameter('run_id', runId, 'a run id');
    return (await requireRun(tracking, runId)).experimentId;
  };
  const experiment = (level: 'CAN_READ' | 'CAN_EDIT' | 'CAN_MANAGE') => access.experiment(level, experimentOf);
  const run = (level: 'CAN_READ' | 'CAN_EDIT') => access.experiment(level, experimentOfRun);
  const logData = async (runId: string, data: Parameters<TrackingStore['logRunData']>[1]): Promise<{ body: EmptyResponse }> => {
    await requireActiveRun(tracking, runId);
    await tracking.logRunData(runId, data);
    return { body: {} };
  };
  const setExperimentStage = (stage: LifecycleStage) => async (ctx: Context): Promise<{ body: EmptyResponse }> => {
    const b = await input(ctx, schemas.experimentId);
    const e = await requireExperiment(tracking, b.experiment_id);
    if (e.id === '0' && stage === 'deleted') throw new FerryError('INVALID_PARAMETER_VALUE', "The Default experiment (id '0') cannot be deleted.");
    await tracking.updateExperiment(e.id, { lifecycleStage: stage }, opts.now());
    return { body: {} };
  };
  const setRunStage = (stage: LifecycleStage) => async (ctx: Context): Promise<{ body: EmptyResponse }> => {
    await tracking.updateRun((await input(ctx, schemas.runId)).run_id, { lifecycleStage: stage });
    return { body: {} };
  };
  const searchExperiments = async (ctx: Context): Promise<{ body: SearchExperimentsResponse }> => {
    const b = await input(ctx, schemas.searchExperiments);
    const clauses = parseSearchFilter(b.filter, EXPERIMENT_ATTRIBUTES, EXPERIMENT_NUMERIC);
    const order = parseOrderBy(b.order_by, EXPERIMENT_ATTRIBUTES);
    const canRead = await authz.visible(identityOf(ctx), 'experiment');
    const found = (await tracking.listExperiments())
      .filter((e) => canRead(e.id) && inView(e.lifecycleStage, b.view_type) && matches(clauses, experimentLookup(e)))
      .sort(comparator(order.length > 0 ? order : [{ entity: 'attribute', key: 'creation_time', descending: true }], experimentLookup, (x, y) => Number(x.id) - Number(y.id)));
    const page = pageOf(found, b.max_results, b.page_token);
    return { body: { experiments: page.items.map(experimentJson), ...page.next } };
  };
  const searchRuns = async (ctx: Context): Promise<{ body: SearchRunsResponse }> => {
    const b = await input(ctx, schemas.searchRuns);
    for (const e of b.experiment_ids) await authz.require(identityOf(ctx), 'experiment', e, 'CAN_READ');
    const clauses = parseSearchFilter(b.filter, RUN_ATTRIBUTES, RUN_NUMERIC);
    const order = parseOrderBy(b.order_by, RUN_ATTRIBUTES);
    const found = (await tracking.listRuns(b.experiment_ids))
      .filter((r) => inView(r.lifecycleStage, b.run_view_type) && matches(clauses, runLookup(r)))
      .sort(comparator([...order, { entity: 'attribute', key: 'start_time', descending: true }], runLookup, (x, y) => (x.id < y.id ? -1 : 1)));
    const page = pageOf(found, b.max_results, b.page_token);
    return { body: { runs: page.items.map(runJson), ...page.next } };
  };

  router
    .add('POST', `${base}/experiments/create`, async (ctx) => {
      const b = await input(ctx, schemas.createExperiment);
      // Run artifacts always go to Ferry's artifact store, behind its permissions.
      if (b.artifact_location !== '') throw invalidParameter('artifact_location', b.artifact_location, "no artifact_location (Ferry keeps every experiment's artifacts in its own store, under mlflow-artifacts:/_experiments/<id>)");
      const e = await tracking.createExperiment({ name: b.name, tags: Object.fromEntries(b.tags.map((t) => [t.key, t.value])), creator: identityOf(ctx).principal }, opts.now());
      return { body: { experiment_id: e.id } satisfies CreateExperimentResponse };
    }, access.user)
    .add('GET', `${base}/experiments/get`, async (ctx) => {
      return { body: { experiment: experimentJson(await requireExperiment(tracking, (await input(ctx, schemas.experimentId)).experiment_id)) } satisfies ExperimentResponse };
    }, experiment('CAN_READ'))
    // By name, so the access check is here: an unknown name is a 404 (mlflow.set_experiment
    // creates the experiment on it), a known one the caller cannot read a 403.
    .add('GET', `${base}/experiments/get-by-name`, async (ctx) => {
      const name = (await input(ctx, schemas.experimentName)).experiment_name;
      const e = await tracking.getExperimentByName(name) ?? missingExperiment(`name '${name}'`);
      await authz.require(identityOf(ctx), 'experiment', e.id, 'CAN_READ');
      return { body: { experiment: experimentJson(e) } satisfies ExperimentResponse };
    }, access.user)
    .add('GET', `${base}/experiments/search`, searchExperiments, access.user)
    .add('POST', `${base}/experiments/search`, searchExperiments, access.user)
    .add('POST', `${base}/experiments/update`, async (ctx) => {
      const b = await input(ctx, schemas.updateExperiment);
      await tracking.updateExperiment(b.experiment_id, { name: b.new_name }, opts.now());
      return { body: {} };
    }, experiment('CAN_EDIT'))
    .add('POST', `${base}/experiments/delete`, setExperimentStage('deleted'), experiment('CAN_MANAGE'))
    .add('POST', `${base}/experiments/restore`, setExperimentStage('active'), experiment('CAN_MANAGE'))
    .add('POST', `${base}/experiments/set-experiment-tag`, async (ctx) => {
      const b = await input(ctx, schemas.experimentTag);
      await tracking.setExperimentTag(b.experiment_id, b.key, b.value, opts.now());
      return { body: {} };
    }, experiment('CAN_EDIT'))
    .add('POST', `${base}/runs/create`, async (ctx) => {
      const b = await input(ctx, schemas.createRun);
      const r = await tracking.createRun({
        id: randomUUID().replace(/-/g, ''), experimentId: b.experiment_id, name: b.run_name || runName(),
        // The run belongs to the authenticated caller, whatever user_id the client sends.
        userId: identityOf(ctx).principal, startMs: b.start_time ?? opts.now(), tags: Object.fromEntries(b.tags.map((t) => [t.key, t.value])),
      });
      return { body: { run: runJson(r) } satisfies RunResponse };
    }, experiment('CAN_EDIT'))
    .add('GET', `${base}/runs/get`, async (ctx) => ({ body: { run: runJson(await requireRun(tracking, (await input(ctx, schemas.runId)).run_id)) } satisfies RunResponse }), run('CAN_READ'))
    .add('POST', `${base}/runs/update`, async (ctx) => {
      const b = await input(ctx, schemas.updateRun);
      const r = await tracking.updateRun(b.run_id, {
        ...(b.status === undefined ? {} : { status: b.status }), ...(b.end_time === undefined ? {} : { endMs: b.end_time }), ...(b.run_name === undefined ? {} : { name: b.run_name }),
      });
      return { body: { run_info: runInfoJson(r) } satisfies UpdateRunResponse };
    }, run('CAN_EDIT'))
    .add('POST', `${base}/runs/delete`, setRunStage('deleted'), run('CAN_EDIT'))
    .add('POST', `${base}/runs/restore`, setRunStage('active'), run('CAN_EDIT'))
    .add('POST', `${base}/runs/search`, searchRuns, access.user)
    .add('GET', `${base}/runs/search`, searchRuns, access.user)
    .add('POST', `${base}/runs/log-batch`, async (ctx) => {
      const b = await input(ctx, schemas.logBatch);
      const total = b.metrics.length + b.params.length + b.tags.length;
      if (total > TRACKING_LIMITS.entitiesPerBatch) throw invalidParameter('metrics + params + tags', total, `at most ${TRACKING_LIMITS.entitiesPerBatch} entities in one batch`);
      return logData(b.run_id, { metrics: b.metrics.map(toPoint), params: b.params, tags: b.tags });
    }, run('CAN_EDIT'))
    .add('POST', `${base}/runs/log-metric`, async (ctx) => {
      const b = await input(ctx, schemas.logMetric);
      return logData(b.run_id, { metrics: [toPoint(b)], params: [], tags: [] });
    }, run('CAN_EDIT'))
    .add('POST', `${base}/runs/log-parameter`, async (ctx) => {
      const b = await input(ctx, schemas.logParam);
      return logData(b.run_id, { metrics: [], params: [{ key: b.key, value: b.value }], tags: [] });
    }, run('CAN_EDIT'))
    .add('POST', `${base}/runs/set-tag`, async (ctx) => {
      const b = await input(ctx, schemas.setTag);
      return logData(b.run_id, { metrics: [], params: [], tags: [{ key: b.key, value: b.value }] });
    }, run('CAN_EDIT'))
    .add('POST', `${base}/runs/delete-tag`, async (ctx) => {
      const b = await input(ctx, schemas.deleteTag);
      await requireActiveRun(tracking, b.run_id);
      await tracking.deleteRunTag(b.run_id, b.key);
      return { body: {} };
    }, run('CAN_EDIT'))
    .add('POST', `${base}/runs/log-inputs`, async (ctx) => {
      const b = await input(ctx, schemas.logInputs);
      await requireActiveRun(tracking, b.run_id);
      await tracking.logRunInputs(b.run_id, b.datasets);
      return { body: {} };
    }, run('CAN_EDIT'))
    .add('POST', `${base}/runs/log-model`, async (ctx) => {
      const b = await input(ctx, schemas.logModel);
      let model: unknown;
      try {
        model = JSON.parse(b.model_json);
      } catch {
        throw invalidParameter('model_json', b.model_json, 'the logged model\'s MLmodel as a JSON object');
      }
      const r = await requireActiveRun(tracking, b.run_id);
      const history = parseHistory(r.tags[LOGGED_MODELS_TAG]);
      return logData(b.run_id, { metrics: [], params: [], tags: [{ key: LOGGED_MODELS_TAG, value: JSON.stringify([...history, model]) }] });
    }, run('CAN_EDIT'))
    .add('GET', `${base}/metrics/get-history`, async (ctx) => {
      const b = await input(ctx, schemas.metricHistory);
      return { body: { metrics: (await tracking.metricHistory(b.run_id, b.metric_key)).map(metricJson) } satisfies MetricHistoryResponse };
    }, run('CAN_READ'));
}

async function requireExperiment(tracking: TrackingStore, id: string): Promise<ExperimentRecord> {
  return (await tracking.getExperiment(id)) ?? missingExperiment(`id '${id}'`);
}

function missingExperiment(what: string): never {
  throw notFound(`Experiment with ${what}`);
}

async function requireRun(tracking: TrackingStore, id: string): Promise<RunRecord> {
  const r = await tracking.getRun(id);
  if (r === undefined) throw notFound(`Run with id=${id}`);
  return r;
}

/** Logging to a deleted run is refused, as MLflow does. */
async function requireActiveRun(tracking: TrackingStore, id: string): Promise<RunRecord> {
  const r = await requireRun(tracking, id);
  if (r.lifecycleStage !== 'active') throw new FerryError('INVALID_PARAMETER_VALUE', `The run ${id} must be in the 'active' state. Current state is ${r.lifecycleStage}.`);
  return r;
}

function parseHistory(value: string | undefined): unknown[] {
  if (value === undefined) return [];
  try {
    const v: unknown = JSON.parse(value);
    return Array.isArray(v) ? v : [];
  } catch {
    return [];
  }
}

function inView(stage: LifecycleStage, view: 'ACTIVE_ONLY' | 'DELETED_ONLY' | 'ALL'): boolean {
  return view === 'ALL' || (view === 'ACTIVE_ONLY') === (stage === 'active');
}

const NAME_ADJECTIVES = ['amber', 'brisk', 'calm', 'deft', 'eager', 'fleet', 'glad', 'keen', 'lucid', 'merry'];
const NAME_NOUNS = ['otter', 'heron', 'lynx', 'finch', 'badger', 'crane', 'wren', 'stoat', 'ibis', 'vole'];

/** A run name like MLflow's generated ones ("<adjective>-<noun>-<number>", e.g. "brisk-heron-417"), when the client gives none. */
function runName(): string {
  return `${NAME_ADJECTIVES[randomInt(NAME_ADJECTIVES.length)] ?? ''}-${NAME_NOUNS[randomInt(NAME_NOUNS.length)] ?? ''}-${randomInt(1000)}`;
}

function toPoint(m: { key: string; value: number; timestamp: number; step: number }): MetricPoint {
  return { key: m.key, value: m.value, timestampMs: m.timestamp, step: m.step };
}

/** A page of `items` at the offset `token` encodes (base64url of "offset:N"), with the next token when more remain. */
function pageOf<T>(items: T[], maxResults: number, token: string | undefined): { items: T[]; next: { next_page_token?: string } } {
  let offset = 0;
  if (token !== undefined && token !== '') {
    const m = /^offset:(\d{1,15})$/.exec(Buffer.from(token, 'base64url').toString('utf8'));
    if (!m) throw invalidParameter('page_token', token, 'the next_page_token of a previous response');
    offset = Number(m[1]);
  }
  const end = offset + maxResults;
  return { items: items.slice(offset, end), next: end < items.length ? { next_page_token: Buffer.from(`offset:${end}`, 'utf8').toString('base64url') } : {} };
}

function experimentLookup(e: ExperimentRecord): Lookup {
  return (entity: Entity, k: string) => {
    if (entity === 'tag') return e.tags[k];
    if (entity !== 'attribute') return undefined;
    switch (k) {
      case 'name': return e.name;
      case 'experiment_id': return e.id;
      case 'creation_time': return e.createdMs;
      case 'last_update_time': return e.updatedMs;
      case 'lifecycle_stage': return e.lifecycleStage;
      default: return undefined;
    }
  };
}

function runLookup(r: RunRecord): Lookup {
  return (entity: Entity, k: string) => {
    switch (entity) {
      case 'metric': return r.metrics.find((m) => m.key === k)?.value;
      case 'param': return Object.hasOwn(r.params, k) ? r.params[k] : undefined;
      case 'tag': return Object.hasOwn(r.tags, k) ? r.tags[k] : undefined;
      case 'dataset': {
        const values = r.inputs.map((i) => i.dataset[k]).filter((v) => typeof v === 'string');
        return values[0];
      }
      default:
        switch (k) {
          case 'run_id': return r.id;
          case 'run_name': return r.name;
          case 'status': return r.status;
          case 'user_id': return r.userId;
          case 'start_time': case 'created': return r.startMs;
          case 'end_time': return r.endMs;
          case 'artifact_uri': return runArtifactUri(r.experimentId, r.id);
          case 'lifecycle_stage': return r.lifecycleStage;
          default: return undefined;
        }
    }
  };
}

function tagsJson(tags: Record<string, string>): Tag[] {
  return Object.entries(tags).map(([k, value]) => ({ key: k, value }));
}

export function experimentJson(e: ExperimentRecord): Experiment {
  return {
    experiment_id: e.id, name: e.name, artifact_location: experimentArtifactUri(e.id), lifecycle_stage: e.lifecycleStage,
    creation_time: e.createdMs, last_update_time: e.updatedMs, tags: tagsJson(e.tags),
  };
}

function metricJson(m: MetricPoint): Metric {
  return { key: m.key, value: m.value, timestamp: m.timestampMs, step: m.step };
}

function runInfoJson(r: RunRecord): RunInfo {
  return {
    run_id: r.id, run_uuid: r.id, run_name: r.name, experiment_id: r.experimentId, user_id: r.userId, status: r.status,
    start_time: r.startMs, ...(r.endMs === undefined ? {} : { end_time: r.endMs }),
    artifact_uri: runArtifactUri(r.experimentId, r.id), lifecycle_stage: r.lifecycleStage,
  };
}

export function runJson(r: RunRecord): Run {
  return {
    info: runInfoJson(r),
    data: { metrics: r.metrics.map(metricJson), params: tagsJson(r.params), tags: tagsJson(r.tags) },
    inputs: { dataset_inputs: r.inputs },
  };
}
