/**
 * The typed Ferry client (importable as `ferry/client`); the CLI is built on it. It speaks the
 * same REST API any HTTP client can use. Errors from the server become `FerryApiError` with the
 * server's `error_code`; an unreachable server gets a message that says how to start one.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type {
  AccessControlEntry, AuditLogResponse, BulkCreateResponse, CreateModelVersionRequest, CreatePrincipalRequest, CreateRegisteredModelRequest,
  CreateTokenOnBehalfRequest, CreateTokenRequest, CreateTokenResponse, EndpointConfigInput, InferenceTablePage, ListPrincipalsResponse, ListTokensResponse,
  MetricsSeries, ModelVersion, ModelVersionResponse, ObjectPermissions, Principal, RegisteredModel, RegisteredModelResponse, RevokeTokenRequest,
  SearchModelVersionsResponse, SearchRegisteredModelsResponse, ServingEndpoint, SetAliasRequest, SetPermissionsRequest, SimulateRequestBody, SimulateResponse,
  Tag, TokenInfo,
} from '../api/index.js';
import { TAR_END, tarEntry, tarEntryBytes } from '../tar/index.js';
import { modelFiles } from './model-files.js';

/** The REST shapes (`src/api`), for callers of the client. */
export type * from '../api/index.js';
/** Older names of `src/api`'s shapes. */
export type { ServedEntityView as ServedEntity, TensorSpecJson } from '../api/index.js';

export { exampleRequest, MAX_EXAMPLE_VALUES, type ExampleRequest, type ExampleSource } from './example.js';

export interface ClientOptions {
  /** Base URL, e.g. http://127.0.0.1:8080 */
  url: string;
  token: string | undefined;
}

export class FerryApiError extends Error {
  constructor(readonly status: number, readonly errorCode: string, message: string) {
    super(message);
    this.name = 'FerryApiError';
  }
}



/** Options of one API call. */
export interface RequestOptions {
  query?: Record<string, string | number | undefined>;
  json?: unknown;
  body?: Readable | Buffer;
  headers?: Record<string, string>;
}


/** Which rows: `startMs` inclusive, `endMs` exclusive (ms since the epoch). */
export interface InferenceTableFilters {
  startMs?: number;
  endMs?: number;
  status?: number;
  servedEntity?: string;
}

function inferenceTableQuery(f: InferenceTableFilters): Record<string, number | string | undefined> {
  return { start_ms: f.startMs, end_ms: f.endMs, status: f.status, served_entity: f.servedEntity };
}

export const DEFAULT_URL = 'http://127.0.0.1:8080';
export const DEFAULT_DATA_DIR = './.ferry';

export class FerryClient {
  readonly url: string;
  private readonly token: string | undefined;

  /** The token, for commands that print a ready-to-paste curl line ('<token>' when none). */
  get tokenForDisplay(): string {
    return this.token ?? '<token>';
  }

  constructor(opts: ClientOptions) {
    this.url = opts.url.replace(/\/+$/, '');
    this.token = opts.token;
  }

  /**
   * A client from the environment: FERRY_URL (default http://127.0.0.1:8080) and FERRY_TOKEN, or
   * else the admin token file a local server wrote in its data directory (FERRY_DATA_DIR,
   * default ./.ferry).
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): FerryClient {
    let token = env.FERRY_TOKEN;
    if (token === undefined || token === '') {
      const file = path.join(env.FERRY_DATA_DIR ?? DEFAULT_DATA_DIR, 'admin-token');
      try {
        token = fs.readFileSync(file, 'utf8').trim();
      } catch {
        token = undefined;
      }
    }
    return new FerryClient({ url: env.FERRY_URL ?? DEFAULT_URL, token });
  }

  /** Sends a request and returns the parsed JSON answer; non-2xx answers throw FerryApiError. */
  async request<T>(method: string, route: string, opts: RequestOptions = {}): Promise<T> {
    const text = await (await this.send(method, route, opts)).text();
    try {
      return (text === '' ? {} : JSON.parse(text)) as T;
    } catch {
      return undefined as T;
    }
  }

  /** Sends a request and returns the response with its body unread; non-2xx answers throw FerryApiError. */
  private async send(method: string, route: string, opts: RequestOptions): Promise<Response> {
    const url = new URL(this.url + route);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { ...opts.headers };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    let body: string | Buffer | ReadableStream | undefined;
    if (opts.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.json);
    } else if (opts.body instanceof Readable) {
      headers['content-type'] ??= 'application/octet-stream';
      body = Readable.toWeb(opts.body) as ReadableStream;
    } else if (opts.body !== undefined) {
      headers['content-type'] ??= 'application/octet-stream';
      body = opts.body;
    }
    let res: Response;
    try {
      res = await fetch(url, { method, headers, ...(body === undefined ? {} : { body, duplex: 'half' }) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      // OpenSSL's verification codes (DEPTH_ZERO_SELF_SIGNED_CERT, UNABLE_TO_VERIFY_LEAF_SIGNATURE,
      // ERR_TLS_CERT_ALTNAME_INVALID...): the server is there, its certificate is not trusted.
      if (cause?.code !== undefined && /CERT|UNABLE_TO_VERIFY/.test(cause.code)) {
        throw new FerryApiError(0, 'UNREACHABLE',
          `Ferry at ${this.url} presented a TLS certificate this client does not trust (${cause.code}). For a self-signed certificate or a private CA, set NODE_EXTRA_CA_CERTS to its PEM file.`);
      }
      throw new FerryApiError(0, 'UNREACHABLE',
        `Cannot reach Ferry at ${this.url}${cause?.code ? ` (${cause.code})` : ''}. Is the server running? Start one with \`npx ferry server\` (or \`npm start\` in the repository), or set FERRY_URL to where it runs.`);
    }
    if (res.ok) return res;
    const text = await res.text();
    let e: { error_code?: string; message?: string } | undefined;
    try {
      e = JSON.parse(text) as typeof e;
    } catch {
      e = undefined;
    }
    let message = e?.message ?? `HTTP ${res.status}: ${text.slice(0, 200)}`;
    if (res.status === 401) message += ' Set FERRY_TOKEN to a valid token (a local server writes its generated admin token to <data-dir>/admin-token).';
    throw new FerryApiError(res.status, e?.error_code ?? 'HTTP_ERROR', message);
  }

  // ---- registry ----------------------------------------------------------------------------

  async createRegisteredModel(name: string, opts: { description?: string; tags?: Tag[] } = {}): Promise<RegisteredModel> {
    const r = await this.request<RegisteredModelResponse>('POST', '/api/2.0/mlflow/registered-models/create', { json: { name, ...opts } satisfies CreateRegisteredModelRequest });
    return r.registered_model;
  }

  async getRegisteredModel(name: string): Promise<RegisteredModel> {
    const r = await this.request<RegisteredModelResponse>('GET', '/api/2.0/mlflow/registered-models/get', { query: { name } });
    return r.registered_model;
  }

  async searchRegisteredModels(opts: { filter?: string; maxResults?: number; pageToken?: string } = {}): Promise<SearchRegisteredModelsResponse> {
    return this.request('GET', '/api/2.0/mlflow/registered-models/search', { query: { filter: opts.filter, max_results: opts.maxResults, page_token: opts.pageToken } });
  }

  async deleteRegisteredModel(name: string): Promise<void> {
    await this.request('DELETE', '/api/2.0/mlflow/registered-models/delete', { json: { name } });
  }

  async createModelVersion(name: string, source: string, opts: { description?: string; runId?: string; tags?: Tag[] } = {}): Promise<ModelVersion> {
    const r = await this.request<ModelVersionResponse>('POST', '/api/2.0/mlflow/model-versions/create', {
      json: { name, source, description: opts.description, run_id: opts.runId, tags: opts.tags } satisfies CreateModelVersionRequest,
    });
    return r.model_version;
  }

  async getModelVersion(name: string, version: string | number): Promise<ModelVersion> {
    const r = await this.request<ModelVersionResponse>('GET', '/api/2.0/mlflow/model-versions/get', { query: { name, version } });
    return r.model_version;
  }

  async getModelVersionByAlias(name: string, alias: string): Promise<ModelVersion> {
    const r = await this.request<ModelVersionResponse>('GET', '/api/2.0/mlflow/registered-models/alias', { query: { name, alias } });
    return r.model_version;
  }

  async searchModelVersions(opts: { filter?: string; maxResults?: number; pageToken?: string } = {}): Promise<SearchModelVersionsResponse> {
    return this.request('GET', '/api/2.0/mlflow/model-versions/search', { query: { filter: opts.filter, max_results: opts.maxResults, page_token: opts.pageToken } });
  }

  async setAlias(name: string, alias: string, version: string | number): Promise<void> {
    await this.request('POST', '/api/2.0/mlflow/registered-models/alias', { json: { name, alias, version: String(version) } satisfies SetAliasRequest });
  }

  // ---- serving endpoints -------------------------------------------------------------------

  async createEndpoint(name: string, config: EndpointConfigInput, opts: { description?: string; tags?: Tag[] } = {}): Promise<ServingEndpoint> {
    return this.request('POST', '/api/2.0/serving-endpoints', { json: { name, config, ...opts } });
  }

  async getEndpoint(name: string): Promise<ServingEndpoint> {
    return this.request('GET', `/api/2.0/serving-endpoints/${encodeURIComponent(name)}`);
  }

  async listEndpoints(): Promise<ServingEndpoint[]> {
    return (await this.request<{ endpoints: ServingEndpoint[] }>('GET', '/api/2.0/serving-endpoints')).endpoints;
  }

  async updateEndpointConfig(name: string, config: EndpointConfigInput): Promise<ServingEndpoint> {
    return this.request('PUT', `/api/2.0/serving-endpoints/${encodeURIComponent(name)}/config`, { json: config });
  }

  /** Cancels the update in progress (UPDATE_CANCELED); the previous config keeps serving. */
  async cancelEndpointUpdate(name: string): Promise<ServingEndpoint> {
    return this.request('POST', `/api/2.0/serving-endpoints/${encodeURIComponent(name)}/config/cancel`);
  }

  /**
   * What a candidate scaling config would have cost on a trace, next to the current one, with an
   * optional recommendation (CAN_MANAGE; docs/simulator.md).
   */
  async simulate(name: string, body: SimulateRequestBody): Promise<SimulateResponse> {
    return this.request('POST', `/api/2.0/serving-endpoints/${encodeURIComponent(name)}/simulate`, { json: body });
  }

  async deleteEndpoint(name: string): Promise<void> {
    await this.request('DELETE', `/api/2.0/serving-endpoints/${encodeURIComponent(name)}`);
  }

  async endpointLogs(name: string, servedEntity: string): Promise<string> {
    return (await this.request<{ logs: string }>('GET', `/api/2.0/serving-endpoints/${encodeURIComponent(name)}/served-models/${encodeURIComponent(servedEntity)}/logs`)).logs;
  }

  /** A page of the endpoint's inference table, newest first (CAN_MANAGE). */
  async inferenceTable(name: string, opts: InferenceTableFilters & { maxResults?: number; pageToken?: string } = {}): Promise<InferenceTablePage> {
    return this.request('GET', `/api/2.0/serving-endpoints/${encodeURIComponent(name)}/inference-table`, {
      query: { ...inferenceTableQuery(opts), max_results: opts.maxResults, page_token: opts.pageToken },
    });
  }

  /**
   * The endpoint's recent metrics (CAN_VIEW): points of 5 s over `window` (a duration from `5s`
   * to `60m`; default 15 minutes), for the endpoint and for each served entity.
   */
  async metricsSeries(name: string, opts: { window?: string } = {}): Promise<MetricsSeries> {
    return this.request('GET', `/api/2.0/serving-endpoints/${encodeURIComponent(name)}/metrics/series`, { query: { window: opts.window } });
  }

  /** The endpoint's inference table rows as JSON Lines or CSV, streamed as the server sends them. */
  async exportInferenceTable(name: string, format: 'jsonl' | 'csv', opts: InferenceTableFilters = {}): Promise<Readable> {
    const res = await this.send('GET', `/api/2.0/serving-endpoints/${encodeURIComponent(name)}/inference-table/export`, { query: { ...inferenceTableQuery(opts), format } });
    return res.body === null ? Readable.from([]) : Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
  }

  /**
   * Polls until the endpoint has no update in progress. Resolves with it when it is READY and
   * its last update did not fail; throws FerryApiError otherwise (the message says why).
   */
  async waitForEndpoint(name: string, opts: { timeoutMs?: number; onProgress?: (e: ServingEndpoint) => void } = {}): Promise<ServingEndpoint> {
    const deadline = Date.now() + (opts.timeoutMs ?? 300_000);
    for (;;) {
      const e = await this.getEndpoint(name);
      opts.onProgress?.(e);
      if (e.state.config_update === 'UPDATE_FAILED') throw new FerryApiError(0, 'UPDATE_FAILED', `Endpoint '${name}' update failed: ${e.state.config_update_message ?? 'see its served entities'}`);
      if (e.state.config_update !== 'IN_PROGRESS' && e.state.ready === 'READY') return e;
      if (Date.now() > deadline) throw new FerryApiError(0, 'DEADLINE_EXCEEDED', `Endpoint '${name}' is not ready after ${opts.timeoutMs ?? 300_000} ms (state: ${e.state.ready}, ${e.state.config_update}).`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /**
   * Scores a request body (MLflow scoring JSON) on an endpoint; returns the parsed response.
   * `model` names the model on a family endpoint (name, name/version or name@alias).
   */
  async query<T = { predictions: unknown }>(name: string, body: unknown, model?: string): Promise<T> {
    return this.request('POST', `/serving-endpoints/${encodeURIComponent(name)}/invocations`, { json: body, ...(model === undefined ? {} : { headers: { 'x-ferry-model': model } }) });
  }

  // ---- identities, tokens, permissions, audit ----------------------------------------------

  /** The principal the client's token belongs to. */
  async me(): Promise<Principal> {
    return this.request('GET', '/api/2.0/me');
  }

  async createPrincipal(name: string, opts: Omit<CreatePrincipalRequest, 'name'> = {}): Promise<Principal> {
    return this.request('POST', '/api/2.0/principals', { json: { name, ...opts } satisfies CreatePrincipalRequest });
  }

  async listPrincipals(): Promise<Principal[]> {
    return (await this.request<ListPrincipalsResponse>('GET', '/api/2.0/principals')).principals;
  }

  async deletePrincipal(name: string): Promise<void> {
    await this.request('DELETE', `/api/2.0/principals/${encodeURIComponent(name)}`);
  }

  /** A new token for the caller, or (admins) for `forPrincipal`. The secret is in `token_value`, shown once. */
  async createToken(opts: { lifetimeSeconds?: number; comment?: string; forPrincipal?: string } = {}): Promise<CreateTokenResponse> {
    const spec: CreateTokenRequest = { ...(opts.lifetimeSeconds === undefined ? {} : { lifetime_seconds: opts.lifetimeSeconds }), ...(opts.comment === undefined ? {} : { comment: opts.comment }) };
    return opts.forPrincipal === undefined
      ? this.request('POST', '/api/2.0/token/create', { json: spec })
      : this.request('POST', '/api/2.0/token-management/on-behalf-of/tokens', { json: { principal: opts.forPrincipal, ...spec } satisfies CreateTokenOnBehalfRequest });
  }

  /** The caller's tokens, or (admins, `all`) every principal's. Never the secrets. */
  async listTokens(opts: { all?: boolean } = {}): Promise<TokenInfo[]> {
    const r = await this.request<ListTokensResponse>('GET', opts.all === true ? '/api/2.0/token-management/tokens' : '/api/2.0/token/list');
    return r.token_infos;
  }

  /** Revokes one of the caller's tokens, or (admins, `any`) anyone's. Effective at once. */
  async revokeToken(id: string, opts: { any?: boolean } = {}): Promise<void> {
    if (opts.any === true) await this.request('DELETE', `/api/2.0/token-management/tokens/${encodeURIComponent(id)}`);
    else await this.request('POST', '/api/2.0/token/delete', { json: { token_id: id } satisfies RevokeTokenRequest });
  }

  async getPermissions(object: PermissionObject, name: string): Promise<ObjectPermissions> {
    return this.request('GET', permissionsPath(object, name));
  }

  /** PATCH (add or change these grants) or, with `replace`, PUT (these grants and no others). */
  async setPermissions(object: PermissionObject, name: string, acl: AccessControlEntry[], opts: { replace?: boolean } = {}): Promise<ObjectPermissions> {
    return this.request(opts.replace === true ? 'PUT' : 'PATCH', permissionsPath(object, name), { json: { access_control_list: acl } satisfies SetPermissionsRequest });
  }

  /** The audit log, newest first (admins). */
  async auditLog(opts: { principal?: string; sinceMs?: number; maxResults?: number; pageToken?: string } = {}): Promise<AuditLogResponse> {
    return this.request('GET', '/api/2.0/audit-log', { query: { principal: opts.principal, since_ms: opts.sinceMs, max_results: opts.maxResults, page_token: opts.pageToken } });
  }

  /** Uploads one file through the MLflow artifact proxy to `mlflow-artifacts:/<key>`. */
  async uploadArtifact(key: string, body: Readable | Buffer): Promise<void> {
    await this.request('PUT', `/api/2.0/mlflow-artifacts/artifacts/${key.split('/').map(encodeURIComponent).join('/')}`, { body });
  }

  /**
   * Registers a local file or directory as a new version of `name` (creating the model if
   * needed): uploads it through the artifact proxy, then creates the version from the upload.
   * Works against a remote server too.
   */
  async registerModel(localPath: string, name: string, opts: { description?: string } = {}): Promise<ModelVersion> {
    const st = await fsp.stat(localPath).catch(() => undefined);
    if (!st) throw new FerryApiError(0, 'INVALID_PARAMETER_VALUE', `No such file or directory: ${localPath}`);
    const prefix = `${name}/${randomUUID()}`;
    const files = st.isDirectory() ? await listFiles(localPath) : [path.basename(localPath)];
    const root = st.isDirectory() ? localPath : path.dirname(localPath);
    for (const rel of files) await this.uploadArtifact(`${prefix}/${rel}`, fs.createReadStream(path.join(root, rel)));
    const source = st.isDirectory() ? `mlflow-artifacts:/${prefix}` : `mlflow-artifacts:/${prefix}/${files[0] ?? ''}`;
    try {
      await this.getRegisteredModel(name);
    } catch (err) {
      if (!(err instanceof FerryApiError) || err.errorCode !== 'RESOURCE_DOES_NOT_EXIST') throw err;
      await this.createRegisteredModel(name).catch((e: unknown) => {
        if (!(e instanceof FerryApiError) || e.errorCode !== 'RESOURCE_ALREADY_EXISTS') throw e;
      });
    }
    try {
      return await this.createModelVersion(name, source, opts);
    } finally {
      // The version holds its own copy; the upload is no longer needed.
      await this.request('DELETE', `/api/2.0/mlflow-artifacts/artifacts/${prefix.split('/').map(encodeURIComponent).join('/')}`).catch(() => undefined);
    }
  }

  /**
   * Ferry extension: registers many single-file models in one call (one server transaction).
   * At most 10,000 models per call; see `importModels` for a whole directory.
   */
  async bulkCreateModelVersions(models: ReadonlyArray<{ name: string; file?: string; content: Uint8Array }>): Promise<BulkCreateResponse> {
    // Sent as a tar of <name>/<file> entries (the server also takes base64 JSON): no encoding.
    const body = Buffer.concat([...models.flatMap((m) => tarEntry(`${m.name}/${m.file ?? 'model.onnx'}`, m.content)), TAR_END]);
    return this.request<BulkCreateResponse>('POST', '/api/2.0/mlflow/model-versions/bulk-create', { body, headers: { 'content-type': 'application/x-tar' } });
  }

  /**
   * Registers every `<name>.onnx`, `<name>.ubj` or `<name>.xgb` file (ONNX, or XGBoost's UBJSON or
   * legacy binary: the extension says which, and is kept as the file name, `model.ubj`) in
   * `source`, a directory or a tar archive (`.tar`, `.tar.gz`, `.tgz`; files anywhere in it, named
   * by their base name), as a new version of `<name>`, in calls of at most `IMPORT_BATCH_MODELS` models and `IMPORT_BATCH_BYTES` bytes
   * (as tar bodies, under the server's default 16 MiB body limit), IMPORT_CALLS_IN_FLIGHT at a
   * time. Each call commits on its own: a failed call leaves the others registered. Results are in file-name order for a
   * directory, archive order for an archive.
   */
  async importModels(source: string): Promise<BulkCreateResponse> {
    const total: BulkCreateResponse = { registered: 0, failed: 0, results: [] };
    let batch: Array<{ name: string; file: string; content: Uint8Array }> = [];
    let bytes = 0;
    /** Calls sent and not yet folded into `total`, oldest first, with the names each carries. */
    const inFlight: Array<{ names: Set<string>; answer: Promise<BulkCreateResponse> }> = [];
    const foldOldest = async (): Promise<void> => {
      const r = await (inFlight.shift() as { answer: Promise<BulkCreateResponse> }).answer;
      total.registered += r.registered;
      total.failed += r.failed;
      total.results.push(...r.results);
    };
    const send = async (): Promise<void> => {
      if (batch.length === 0) return;
      const names = new Set(batch.map((m) => m.name));
      // Versions of one name are numbered in file order: a call carrying a name that one in
      // flight carries waits for it.
      while (inFlight.length >= IMPORT_CALLS_IN_FLIGHT || inFlight.some((c) => [...names].some((n) => c.names.has(n)))) await foldOldest();
      const answer = this.bulkCreateModelVersions(batch);
      answer.catch(() => undefined); // awaited by foldOldest, in order
      inFlight.push({ names, answer });
      batch = [];
      bytes = 0;
    };
    for await (const { name, file, content } of modelFiles(source)) {
      const entryBytes = tarEntryBytes(content.length);
      if (batch.length >= IMPORT_BATCH_MODELS || (batch.length > 0 && bytes + entryBytes > IMPORT_BATCH_BYTES)) await send();
      batch.push({ name, file, content });
      bytes += entryBytes;
    }
    await send();
    while (inFlight.length > 0) await foldOldest();
    return total;
  }
}

/** Most models `importModels` sends per call: the server's most (10,000). */
export const IMPORT_BATCH_MODELS = 10_000;
/**
 * Calls `importModels` keeps in flight: while the server inspects one call's models (in its
 * inspector processes), it reads the next call's body.
 */
export const IMPORT_CALLS_IN_FLIGHT = 2;
/** Most tar bytes per call (headers and padding included): 15 MiB, under the server's default 16 MiB body limit. */
export const IMPORT_BATCH_BYTES = 15 * 1024 * 1024;



/** What permissions are set on; an experiment is named by its id. */
export type PermissionObject = 'serving-endpoint' | 'registered-model' | 'experiment';

const PERMISSION_PATHS: Record<PermissionObject, string> = { 'serving-endpoint': 'serving-endpoints', 'registered-model': 'registered-models', experiment: 'experiments' };

function permissionsPath(object: PermissionObject, name: string): string {
  return `/api/2.0/permissions/${PERMISSION_PATHS[object]}/${encodeURIComponent(name)}`;
}


/** Relative paths ('/'-separated) of every file under `dir`. */
async function listFiles(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel === '' ? e.name : `${rel}/${e.name}`;
    if (e.isDirectory()) out.push(...(await listFiles(dir, r)));
    else if (e.isFile()) out.push(r);
  }
  return out.sort();
}
