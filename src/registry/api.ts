/**
 * The MLflow-compatible registry REST API under `/api/2.0/mlflow/` and MLflow's artifact proxy
 * under `/api/2.0/mlflow-artifacts/artifacts/`. Shapes follow MLflow so its clients work as they
 * are; Ferry adds `flavor`, `signature`, `input_example`, `artifact_sha256` and
 * `artifact_size_bytes` to model versions.
 */
import { z } from 'zod';
import type {
  BulkCreateRequest, BulkCreateResponse, CreateModelVersionRequest, CreateRegisteredModelRequest, DownloadUriResponse, LatestVersionsResponse,
  ListArtifactsResponse, ModelVersion, ModelVersionResponse, RegisteredModel, RegisteredModelResponse, SearchModelVersionsResponse,
  SearchRegisteredModelsResponse, SetAliasRequest, Tag, VersionEnvironment,
} from '../api/index.js';
import { validateKey } from '../artifacts/index.js';
import { access, identityOf, USERS_GROUP, type Authorizer, type ModelLevel, type NameOf, type ServerRouter } from '../auth/index.js';
import { configError, type SchemasFit } from '../config/index.js';
import { FerryError, invalidParameter } from '../errors.js';
import { readJsonObject, type Context, type JsonLimits } from '../http/index.js';
import type { ModelOrder, ModelVersionRecord, ModelVersionStage, RegisteredModelRecord } from '../store/index.js';
import { BULK_TAR_TYPE, readBulkTar } from './bulk-tar.js';
import { versionEnvironment } from './environment.js';
import { parseFilter } from './filter.js';
import { MAX_BULK_MODELS, parseSource, PROXY_EXPERIMENTS, PROXY_MODELS, STAGES, UPLOADS_PREFIX, versionDownloadUri, type BulkModel, type BulkResult, type Registry } from './registry.js';

export interface RegistryApiOptions {
  maxBodyBytes: number;
  maxUploadBytes: number;
  /** The endpoints whose configs serve a registered model (a rename is refused while there are any). */
  servedBy: (model: string) => Promise<string[]>;
  /** Shape limits for JSON bodies (the server's maxJsonDepth, maxJsonElements). */
  jsonLimits: JsonLimits;
}

const tagList = z.array(z.object({ key: z.string().min(1).max(250), value: z.string().max(5000) })).default([]);
const version = z.union([z.string().regex(/^\d+$/, 'expected a version number'), z.number().int().positive()]).transform(Number);
/** MLflow's page sizes: registered models up to 1,000 (default 100), versions up to 200,000 (default 10,000; the client sends 10,000). */
const maxResults = (max: number) => z.union([z.string().regex(/^\d+$/), z.number().int()]).transform(Number).pipe(z.number().int().min(1).max(max));
const search = (max: number, byDefault: number) => z.object({
  filter: z.string().optional(),
  max_results: maxResults(max).default(byDefault),
  page_token: z.string().optional(),
  order_by: z.union([z.string(), z.array(z.string())]).transform((o) => [o].flat()).default([]),
});

const schemas = {
  createModel: z.object({ name: z.string(), description: z.string().default(''), tags: tagList }),
  name: z.object({ name: z.string().min(1) }),
  updateModel: z.object({ name: z.string().min(1), description: z.string() }),
  searchModels: search(1000, 100),
  searchVersions: search(200_000, 10_000),
  rename: z.object({ name: z.string().min(1), new_name: z.string().min(1) }),
  latest: z.object({ name: z.string().min(1), stages: z.union([z.string(), z.array(z.string())]).transform((o) => [o].flat()).default([]) }),
  transition: z.object({
    name: z.string().min(1), version, stage: z.string().transform((v) => STAGES.find((st) => st.toLowerCase() === v.toLowerCase()) ?? v).pipe(z.enum(STAGES as [ModelVersionStage, ...ModelVersionStage[]])),
    archive_existing_versions: z.union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')]).default(false),
  }),
  modelTag: z.object({ name: z.string().min(1), key: z.string().min(1).max(250), value: z.string().max(5000) }),
  modelTagKey: z.object({ name: z.string().min(1), key: z.string().min(1) }),
  alias: z.object({ name: z.string().min(1), alias: z.string().min(1), version }),
  aliasKey: z.object({ name: z.string().min(1), alias: z.string().min(1) }),
  createVersion: z.object({
    name: z.string().min(1),
    source: z.string(),
    run_id: z.string().default(''),
    description: z.string().default(''),
    tags: tagList,
  }),
  bulkCreate: z.object({
    models: z.array(z.object({
      name: z.string(),
      file: z.string().min(1).default('model.onnx'),
      content_base64: z.string().min(1),
    })).min(1).max(MAX_BULK_MODELS),
  }),
  versionKey: z.object({ name: z.string().min(1), version }),
  updateVersion: z.object({ name: z.string().min(1), version, description: z.string() }),
  versionTag: z.object({ name: z.string().min(1), version, key: z.string().min(1).max(250), value: z.string().max(5000) }),
  versionTagKey: z.object({ name: z.string().min(1), version, key: z.string().min(1) }),
};

/** `src/api`'s request bodies and these schemas' inputs agree (checked by tsc when either changes). */
const requestsFit: SchemasFit<{
  createModel: CreateRegisteredModelRequest;
  createVersion: CreateModelVersionRequest;
  alias: SetAliasRequest;
  bulkCreate: BulkCreateRequest;
}, typeof schemas> = { createModel: true, createVersion: true, alias: true, bulkCreate: true };
void requestsFit;

/**
 * Access: any principal may create a model (and then holds CAN_MANAGE on it) and search (seeing
 * only models it can read); reading needs CAN_READ, changing CAN_EDIT, deleting CAN_MANAGE.
 * Registering from a path on the server's disk is for admins (it reads files as the server);
 * everyone else uploads through the artifact proxy, where each principal has its own namespace.
 */
export function registryRoutes(router: ServerRouter, registry: Registry, authz: Authorizer, opts: RegistryApiOptions): void {
  const base = '/api/2.0/mlflow';
  /** The model a call is about: its `name` parameter (query or body). */
  const modelName: NameOf = async (ctx) => {
    const name = (await requestParams(ctx, opts.maxBodyBytes, opts.jsonLimits)).name;
    if (typeof name !== 'string' || name === '') throw invalidParameter('name', name, 'a registered model name');
    return name;
  };
  const model = (level: ModelLevel) => access.model(level, modelName);
  const visible = (ctx: Context): Promise<(name: string) => boolean> => authz.visible(identityOf(ctx), 'registered-model');
  const input = <S extends z.ZodType>(ctx: Context, schema: S): Promise<z.output<S>> => requestInput(ctx, schema, opts.maxBodyBytes, opts.jsonLimits);
  const modelOut = async (ctx: Context, m: RegisteredModelRecord): Promise<RegisteredModel> => {
    const latest = await registry.store.latestModelVersion(m.name);
    return modelJson(m, latest ? [versionJson(latest, m, ctx.principal)] : []);
  };
  const versionOut = async (ctx: Context, v: ModelVersionRecord): Promise<ModelVersion> => versionJson(v, await registry.getModel(v.name), ctx.principal);
  /**
   * The source a version is registered from, as stored: an upload resolves in the caller's
   * namespace (`mlflow-artifacts:/p` → `mlflow-artifacts:/<principal>/p`); a run's artifact
   * (`runs:/<run>/<path>` or `mlflow-artifacts:/_experiments/<id>/...`) needs CAN_READ on its
   * experiment; a path on the server needs an admin.
   */
  const ownSource = async (ctx: Context, source: string): Promise<string> => {
    const s = parseSource(source);
    if (s.kind === 'local') {
      if (ctx.admin !== true) throw new FerryError('PERMISSION_DENIED', `Only admins may register a model from a path on the server (${JSON.stringify(source)}); upload it through the artifact proxy and use an mlflow-artifacts:/ source.`);
      return source;
    }
    if (s.kind === 'run') {
      const run = await registry.store.tracking.getRun(s.runId);
      if (run === undefined) throw invalidParameter('source', source, 'a runs:/<run_id>/<path> URI of an existing run');
      await authz.require(identityOf(ctx), 'experiment', run.experimentId, 'CAN_READ');
      return source;
    }
    if (s.key.startsWith('experiments/')) {
      await authz.require(identityOf(ctx), 'experiment', s.key.split('/')[1] ?? '', 'CAN_READ');
      return source;
    }
    return `mlflow-artifacts:/${ctx.principal ?? ''}/${s.key.slice(UPLOADS_PREFIX.length + 1)}`;
  };

  router
    .add('POST', `${base}/registered-models/create`, async (ctx) => {
      const b = await input(ctx, schemas.createModel);
      const m = await registry.createModel(b.name, b.description, tagsObject(b.tags), ctx.principal);
      return { body: { registered_model: await modelOut(ctx, m) } satisfies RegisteredModelResponse };
    }, access.user)
    .add('GET', `${base}/registered-models/get`, async (ctx) => {
      const b = await input(ctx, schemas.name);
      return { body: { registered_model: await modelOut(ctx, await registry.getModel(b.name)) } satisfies RegisteredModelResponse };
    }, model('CAN_READ'))
    .add('PATCH', `${base}/registered-models/update`, async (ctx) => {
      const b = await input(ctx, schemas.updateModel);
      const m = await registry.store.updateRegisteredModel(b.name, { description: b.description }, Date.now());
      return { body: { registered_model: await modelOut(ctx, m) } satisfies RegisteredModelResponse };
    }, model('CAN_EDIT'))
    .add('DELETE', `${base}/registered-models/delete`, async (ctx) => {
      await registry.deleteModel((await input(ctx, schemas.name)).name);
      return { body: {} };
    }, model('CAN_MANAGE'))
    .add('GET', `${base}/registered-models/search`, async (ctx) => {
      const b = await input(ctx, schemas.searchModels);
      const order = parseModelOrder(b.order_by);
      const filter = parseFilter(b.filter);
      // As in MLflow, run_id filters model versions; registered models have none.
      if (filter.runId !== undefined) throw invalidParameter('filter', b.filter, "a filter on name and tags (run_id applies to model-versions/search)");
      const page = await registry.store.searchRegisteredModels(filter, order, { maxResults: b.max_results, pageToken: b.page_token });
      // Models the caller cannot read are left out (a page may then hold fewer than max_results).
      const canRead = await visible(ctx);
      return { body: { registered_models: await Promise.all(page.items.filter((m) => canRead(m.name)).map((m) => modelOut(ctx, m))), ...nextPage(page.nextPageToken) } satisfies SearchRegisteredModelsResponse };
    }, access.user)
    // MLflow's deprecated stage API: the latest version in each stage asked for (every stage when none is).
    .add('POST', `${base}/registered-models/get-latest-versions`, async (ctx) => {
      const b = await input(ctx, schemas.latest);
      const m = await registry.getModel(b.name);
      const stages = b.stages.map((st, i) => STAGES.find((x) => x.toLowerCase() === st.toLowerCase()) ?? badStage(`stages[${i}]`, st));
      const versions = (await registry.store.searchModelVersions({ name: { op: '=', value: m.name } }, { maxResults: 200_000, pageToken: undefined })).items;
      const latest = (stages.length === 0 ? STAGES : stages).flatMap((st) => versions.filter((v) => v.stage === st).sort((x, y) => y.version - x.version).slice(0, 1));
      return { body: { model_versions: latest.sort((x, y) => x.version - y.version).map((v) => versionJson(v, m, ctx.principal)) } satisfies LatestVersionsResponse };
    }, model('CAN_READ'))
    .add('POST', `${base}/registered-models/rename`, async (ctx) => {
      const b = await input(ctx, schemas.rename);
      const m = await registry.renameModel(b.name, b.new_name, await opts.servedBy(b.name));
      return { body: { registered_model: await modelOut(ctx, m) } satisfies RegisteredModelResponse };
    }, model('CAN_MANAGE'))
    .add('POST', `${base}/model-versions/transition-stage`, async (ctx) => {
      const b = await input(ctx, schemas.transition);
      const v = await registry.transitionStage(b.name, b.version, b.stage, b.archive_existing_versions);
      return { body: { model_version: await versionOut(ctx, v) } satisfies ModelVersionResponse };
    }, model('CAN_EDIT'))
    .add('POST', `${base}/registered-models/set-tag`, async (ctx) => {
      const b = await input(ctx, schemas.modelTag);
      await registry.store.setRegisteredModelTag(b.name, b.key, b.value, Date.now());
      return { body: {} };
    }, model('CAN_EDIT'))
    .add('DELETE', `${base}/registered-models/delete-tag`, async (ctx) => {
      const b = await input(ctx, schemas.modelTagKey);
      await registry.store.deleteRegisteredModelTag(b.name, b.key, Date.now());
      return { body: {} };
    }, model('CAN_EDIT'))
    .add('POST', `${base}/registered-models/alias`, async (ctx) => {
      const b = await input(ctx, schemas.alias);
      await registry.setAlias(b.name, b.alias, b.version);
      return { body: {} };
    }, model('CAN_EDIT'))
    .add('DELETE', `${base}/registered-models/alias`, async (ctx) => {
      const b = await input(ctx, schemas.aliasKey);
      await registry.deleteAlias(b.name, b.alias);
      return { body: {} };
    }, model('CAN_EDIT'))
    .add('GET', `${base}/registered-models/alias`, async (ctx) => {
      const b = await input(ctx, schemas.aliasKey);
      return { body: { model_version: await versionOut(ctx, await registry.getVersionByAlias(b.name, b.alias)) } satisfies ModelVersionResponse };
    }, model('CAN_READ'))
    .add('POST', `${base}/model-versions/create`, async (ctx) => {
      const b = await input(ctx, schemas.createVersion);
      const source = await ownSource(ctx, b.source);
      const parsed = parseSource(source);
      const v = await registry.createVersion({ name: b.name, source, runId: b.run_id || (parsed.kind === 'run' ? parsed.runId : runOfKey(parsed)), description: b.description, tags: tagsObject(b.tags) });
      return { body: { model_version: await versionOut(ctx, v) } satisfies ModelVersionResponse };
    }, model('CAN_EDIT'))
    // Ferry extension (docs/multi-model.md): many single-file models in one call and one
    // transaction. Per model, an existing model needs CAN_EDIT; a new one is created for the caller.
    // The body is JSON (base64 contents) or, with Content-Type application/x-tar, a tar of
    // <name>/<file> entries (./bulk-tar.ts).
    .add('POST', `${base}/model-versions/bulk-create`, async (ctx) => {
      const models: BulkModel[] = isBulkTar(ctx)
        ? await readBulkTar(ctx.req, { maxBodyBytes: opts.maxBodyBytes, maxFileBytes: opts.maxUploadBytes })
        : (await input(ctx, schemas.bulkCreate)).models.map((m) => ({ name: m.name, file: m.file, content: Buffer.from(m.content_base64, 'base64') }));
      const who = identityOf(ctx);
      const denied = new Map<string, FerryError>();
      if (ctx.admin !== true) {
        for (const name of new Set(models.map((m) => m.name))) {
          if (!(await registry.store.getRegisteredModel(name))) continue;
          await authz.require(who, 'registered-model', name, 'CAN_EDIT').catch((err: unknown) => denied.set(name, err instanceof FerryError ? err : new FerryError('PERMISSION_DENIED', String(err))));
        }
      }
      const allowed: Array<{ index: number; model: BulkModel }> = [];
      const results: BulkResult[] = models.map((model, index) => {
        const err = denied.get(model.name);
        if (err === undefined) allowed.push({ index, model });
        return { name: model.name, status: 'FAILED_REGISTRATION', errorCode: err?.code ?? '', message: err?.message ?? '' };
      });
      const registered = await registry.createVersionsBulk(allowed.map((a) => a.model), ctx.principal, ctx.admin === true ? undefined : [who.principal, USERS_GROUP]);
      registered.forEach((r, j) => (results[allowed[j]?.index ?? 0] = r));
      return {
        body: {
          registered: results.filter((r) => r.status === 'READY').length,
          failed: results.filter((r) => r.status !== 'READY').length,
          results: results.map((r) => (r.status === 'READY'
            ? { name: r.name, status: r.status, version: String(r.version) }
            : { name: r.name, status: r.status, error_code: r.errorCode, message: r.message })),
        } satisfies BulkCreateResponse,
      };
    }, access.user)
    .add('GET', `${base}/model-versions/get`, async (ctx) => {
      const b = await input(ctx, schemas.versionKey);
      return { body: { model_version: await versionOut(ctx, await registry.getVersion(b.name, b.version)) } satisfies ModelVersionResponse };
    }, model('CAN_READ'))
    // Ferry's: the environment files of a version's artifact (./environment.ts).
    .add('GET', `${base}/model-versions/get-environment`, async (ctx) => {
      const b = await input(ctx, schemas.versionKey);
      return { body: await versionEnvironment(registry.artifacts, await registry.getVersion(b.name, b.version)) satisfies VersionEnvironment };
    }, model('CAN_READ'))
    .add('PATCH', `${base}/model-versions/update`, async (ctx) => {
      const b = await input(ctx, schemas.updateVersion);
      await registry.getVersion(b.name, b.version);
      const v = await registry.store.updateModelVersion(b.name, b.version, { description: b.description }, Date.now());
      return { body: { model_version: await versionOut(ctx, v) } satisfies ModelVersionResponse };
    }, model('CAN_EDIT'))
    .add('DELETE', `${base}/model-versions/delete`, async (ctx) => {
      const b = await input(ctx, schemas.versionKey);
      await registry.deleteVersion(b.name, b.version);
      return { body: {} };
    }, model('CAN_MANAGE'))
    .add('GET', `${base}/model-versions/search`, async (ctx) => {
      const b = await input(ctx, schemas.searchVersions);
      const page = await registry.store.searchModelVersions(parseFilter(b.filter), { maxResults: b.max_results, pageToken: b.page_token });
      const canRead = await visible(ctx);
      return { body: { model_versions: await Promise.all(page.items.filter((v) => canRead(v.name)).map((v) => versionOut(ctx, v))), ...nextPage(page.nextPageToken) } satisfies SearchModelVersionsResponse };
    }, access.user)
    .add('GET', `${base}/model-versions/get-download-uri`, async (ctx) => {
      const b = await input(ctx, schemas.versionKey);
      const v = await registry.getVersion(b.name, b.version);
      if (!v.artifact) throw new FerryError('RESOURCE_CONFLICT', `Model version '${v.name}' version ${v.version} has no artifact (status ${v.status}).`);
      return { body: { artifact_uri: versionDownloadUri(v.name, v.version) } satisfies DownloadUriResponse };
    }, model('CAN_READ'))
    .add('POST', `${base}/model-versions/set-tag`, async (ctx) => {
      const b = await input(ctx, schemas.versionTag);
      await registry.store.setModelVersionTag(b.name, b.version, b.key, b.value, Date.now());
      return { body: {} };
    }, model('CAN_EDIT'))
    .add('DELETE', `${base}/model-versions/delete-tag`, async (ctx) => {
      const b = await input(ctx, schemas.versionTagKey);
      await registry.store.deleteModelVersionTag(b.name, b.version, b.key, Date.now());
      return { body: {} };
    }, model('CAN_EDIT'));

  // MLflow artifact proxy: uploads land under uploads/<principal>/ in the artifact store, so
  // principals cannot read or replace each other's uploads; `mlflow-artifacts:/<path>` sources
  // resolve in the caller's own namespace (ownSource). `_experiments/<id>/...` are runs'
  // artifacts (CAN_READ on the experiment to read, CAN_EDIT to write) and `_models/<name>/<v>/...`
  // a registered version's files (CAN_READ on the model; read-only).
  const artifacts = registry.artifacts;
  const proxyKey = async (ctx: Context, p: string, write: boolean): Promise<string> => {
    if (p === '') return `${UPLOADS_PREFIX}/${ctx.principal ?? ''}`;
    validateKey(p);
    const [head, ...rest] = p.split('/');
    if (head === PROXY_EXPERIMENTS) {
      await authz.require(identityOf(ctx), 'experiment', rest[0] ?? '', write ? 'CAN_EDIT' : 'CAN_READ');
      return `experiments/${rest.join('/')}`;
    }
    if (head === PROXY_MODELS) {
      const [name = '', num = '', ...inside] = rest;
      if (write) throw new FerryError('PERMISSION_DENIED', `A registered version's files are read-only (${JSON.stringify(p)}).`);
      await authz.require(identityOf(ctx), 'registered-model', name, 'CAN_READ');
      if (!/^\d+$/.test(num)) throw invalidParameter('path', p, `${PROXY_MODELS}/<model>/<version>/...`);
      const v = await registry.getVersion(name, Number(num));
      if (!v.artifact) throw new FerryError('RESOURCE_CONFLICT', `Model version '${v.name}' version ${v.version} has no artifact (status ${v.status}).`);
      return [v.artifact.path, ...inside].join('/');
    }
    return `${UPLOADS_PREFIX}/${ctx.principal ?? ''}/${p}`;
  };
  router
    .add('PUT', '/api/2.0/mlflow-artifacts/artifacts/*path', async (ctx) => {
      await artifacts.putFile(await proxyKey(ctx, ctx.params.path ?? '', true), ctx.req, opts.maxUploadBytes);
      return { body: {} };
    }, access.user)
    .add('GET', '/api/2.0/mlflow-artifacts/artifacts/*path', async (ctx) => {
      const { stream, sizeBytes } = await artifacts.getFile(await proxyKey(ctx, ctx.params.path ?? '', false));
      ctx.res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': sizeBytes });
      stream.pipe(ctx.res);
      return undefined;
    }, access.user)
    .add('DELETE', '/api/2.0/mlflow-artifacts/artifacts/*path', async (ctx) => {
      await artifacts.delete(await proxyKey(ctx, ctx.params.path ?? '', true));
      return { body: {} };
    }, access.user)
    // Names relative to the listed directory, as MLflow's client joins them to it.
    .add('GET', '/api/2.0/mlflow-artifacts/artifacts', async (ctx) => {
      const files = await artifacts.list(await proxyKey(ctx, (ctx.query.get('path') ?? '').replace(/^\/+|\/+$/g, ''), false));
      return { body: { files: files.map((f) => ({ path: f.path, is_dir: f.isDir, ...(f.isDir ? {} : { file_size: f.sizeBytes }) })) } satisfies ListArtifactsResponse };
    }, access.user);
}

/** The run of a run-artifact key (`experiments/<id>/<run>/artifacts/...`), '' otherwise. */
function runOfKey(s: ReturnType<typeof parseSource>): string {
  return s.kind === 'upload' && s.key.startsWith('experiments/') ? s.key.split('/')[2] ?? '' : '';
}

function badStage(field: string, value: string): never {
  throw invalidParameter(field, value, `one of ${STAGES.join(', ')}`);
}

/** MLflow's `order_by` for registered models: `name` or `last_updated_timestamp` (alias `timestamp`), ASC (default) or DESC; the first entry decides. */
function parseModelOrder(orderBy: readonly string[]): ModelOrder {
  const first = orderBy[0];
  if (first === undefined) return { by: 'name', descending: false };
  const m = /^\s*(name|last_updated_timestamp|timestamp)(?:\s+(ASC|DESC))?\s*$/i.exec(first);
  if (!m) throw invalidParameter('order_by', first, 'name or last_updated_timestamp, optionally followed by ASC or DESC');
  return { by: (m[1] as string).toLowerCase() === 'name' ? 'name' : 'updated', descending: (m[2] ?? '').toUpperCase() === 'DESC' };
}

/**
 * MLflow clients send GET/DELETE parameters in the query string and POST/PATCH ones as JSON; some
 * send DELETE bodies. Merge both (body wins); repeated query keys become arrays.
 */
export function requestParams(ctx: Context, maxBodyBytes: number, jsonLimits: JsonLimits): Promise<Record<string, unknown>> {
  // Read once: the access rule needs `name` before the handler runs.
  let params = paramsOf.get(ctx);
  if (params === undefined) {
    params = readParams(ctx, maxBodyBytes, jsonLimits);
    paramsOf.set(ctx, params);
  }
  return params;
}

/** The request's parameters checked against `schema`; a mismatch is a 400 naming the field. */
export async function requestInput<S extends z.ZodType>(ctx: Context, schema: S, maxBodyBytes: number, jsonLimits: JsonLimits): Promise<z.output<S>> {
  const raw = await requestParams(ctx, maxBodyBytes, jsonLimits);
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw configError(parsed.error, raw);
  return parsed.data;
}

const paramsOf = new WeakMap<Context, Promise<Record<string, unknown>>>();

async function readParams(ctx: Context, maxBodyBytes: number, jsonLimits: JsonLimits): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const key of new Set(ctx.query.keys())) {
    const all = ctx.query.getAll(key);
    out[key] = all.length === 1 ? all[0] : all;
  }
  if (ctx.method === 'GET' || ctx.method === 'HEAD') return out;
  return { ...out, ...(await readJsonObject(ctx.req, maxBodyBytes, jsonLimits)) };
}

/** Whether a bulk registration's body is a tar (its Content-Type, parameters aside). */
function isBulkTar(ctx: Context): boolean {
  return (ctx.req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() === BULK_TAR_TYPE;
}

function tagsObject(tags: Tag[]): Record<string, string> {
  return Object.fromEntries(tags.map((t) => [t.key, t.value]));
}

function tagsList(tags: Record<string, string>): Tag[] {
  return Object.entries(tags).map(([key, value]) => ({ key, value }));
}

function nextPage(token: string | undefined): { next_page_token?: string } {
  return token === undefined ? {} : { next_page_token: token };
}

export function modelJson(m: RegisteredModelRecord, latest: ModelVersion[]): RegisteredModel {
  return {
    name: m.name,
    creation_timestamp: m.createdMs,
    last_updated_timestamp: m.updatedMs,
    description: m.description,
    latest_versions: latest,
    tags: tagsList(m.tags),
    aliases: Object.entries(m.aliases).map(([alias, v]) => ({ alias, version: String(v) })),
  };
}

/**
 * A version in MLflow's shape. `caller`: an upload's source is shown as the caller sent it
 * (`mlflow-artifacts:/p`) when the upload is the caller's own, so it reads back through the proxy.
 */
export function versionJson(v: ModelVersionRecord, model: RegisteredModelRecord, caller?: string): ModelVersion {
  const a = v.artifact;
  const own = caller === undefined ? undefined : `mlflow-artifacts:/${caller}/`;
  return {
    name: v.name,
    version: String(v.version),
    creation_timestamp: v.createdMs,
    last_updated_timestamp: v.updatedMs,
    current_stage: v.stage,
    description: v.description,
    source: own !== undefined && v.source.startsWith(own) ? `mlflow-artifacts:/${v.source.slice(own.length)}` : v.source,
    run_id: v.runId,
    status: v.status,
    status_message: v.statusMessage,
    tags: tagsList(v.tags),
    aliases: Object.entries(model.aliases).filter(([, n]) => n === v.version).map(([alias]) => alias),
    ...(a ? {
      flavor: a.flavor,
      signature: a.signature,
      ...(a.inputExample === undefined ? {} : { input_example: a.inputExample }),
      artifact_sha256: a.sha256,
      artifact_size_bytes: a.sizeBytes,
    } : {}),
  };
}
