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

export type Tag = { key: string; value: string };

export interface RegisteredModel {
  name: string;
  creation_timestamp: number;
  last_updated_timestamp: number;
  description: string;
  latest_versions: ModelVersion[];
  tags: Tag[];
  aliases: Array<{ alias: string; version: string }>;
}

export interface TensorSpecJson {
  name: string;
  dtype: string;
  shape?: number[];
}

export interface ModelVersion {
  name: string;
  version: string;
  creation_timestamp: number;
  last_updated_timestamp: number;
  description: string;
  source: string;
  run_id: string;
  status: 'PENDING_REGISTRATION' | 'FAILED_REGISTRATION' | 'READY';
  status_message: string;
  tags: Tag[];
  aliases: string[];
  flavor?: string;
  signature?: { inputs: TensorSpecJson[]; outputs: TensorSpecJson[] };
  input_example?: unknown;
  artifact_sha256?: string;
  artifact_size_bytes?: number;
}

export const DEFAULT_URL = 'http://127.0.0.1:8080';
export const DEFAULT_DATA_DIR = './.ferry';

export class FerryClient {
  readonly url: string;
  private readonly token: string | undefined;

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
  async request<T>(method: string, route: string, opts: { query?: Record<string, string | number | undefined>; json?: unknown; body?: Readable | Buffer } = {}): Promise<T> {
    const url = new URL(this.url + route);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = {};
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    let body: string | Buffer | ReadableStream | undefined;
    if (opts.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.json);
    } else if (opts.body instanceof Readable) {
      headers['content-type'] = 'application/octet-stream';
      body = Readable.toWeb(opts.body) as ReadableStream;
    } else if (opts.body !== undefined) {
      headers['content-type'] = 'application/octet-stream';
      body = opts.body;
    }
    let res: Response;
    try {
      res = await fetch(url, { method, headers, ...(body === undefined ? {} : { body, duplex: 'half' }) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      throw new FerryApiError(0, 'UNREACHABLE',
        `Cannot reach Ferry at ${this.url}${cause?.code ? ` (${cause.code})` : ''}. Is the server running? Start one with \`npx ferry server\` (or \`npm start\` in the repository), or set FERRY_URL to where it runs.`);
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text === '' ? {} : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (!res.ok) {
      const e = parsed as { error_code?: string; message?: string } | undefined;
      let message = e?.message ?? `HTTP ${res.status}: ${text.slice(0, 200)}`;
      if (res.status === 401) message += ' Set FERRY_TOKEN to a valid token (a local server writes its generated admin token to <data-dir>/admin-token).';
      throw new FerryApiError(res.status, e?.error_code ?? 'HTTP_ERROR', message);
    }
    return parsed as T;
  }

  // ---- registry ----------------------------------------------------------------------------

  async createRegisteredModel(name: string, opts: { description?: string; tags?: Tag[] } = {}): Promise<RegisteredModel> {
    const r = await this.request<{ registered_model: RegisteredModel }>('POST', '/api/2.0/mlflow/registered-models/create', { json: { name, ...opts } });
    return r.registered_model;
  }

  async getRegisteredModel(name: string): Promise<RegisteredModel> {
    const r = await this.request<{ registered_model: RegisteredModel }>('GET', '/api/2.0/mlflow/registered-models/get', { query: { name } });
    return r.registered_model;
  }

  async searchRegisteredModels(opts: { filter?: string; maxResults?: number; pageToken?: string } = {}): Promise<{ registered_models?: RegisteredModel[]; next_page_token?: string }> {
    return this.request('GET', '/api/2.0/mlflow/registered-models/search', { query: { filter: opts.filter, max_results: opts.maxResults, page_token: opts.pageToken } });
  }

  async deleteRegisteredModel(name: string): Promise<void> {
    await this.request('DELETE', '/api/2.0/mlflow/registered-models/delete', { json: { name } });
  }

  async createModelVersion(name: string, source: string, opts: { description?: string; runId?: string; tags?: Tag[] } = {}): Promise<ModelVersion> {
    const r = await this.request<{ model_version: ModelVersion }>('POST', '/api/2.0/mlflow/model-versions/create', {
      json: { name, source, ...(opts.description === undefined ? {} : { description: opts.description }), ...(opts.runId === undefined ? {} : { run_id: opts.runId }), ...(opts.tags ? { tags: opts.tags } : {}) },
    });
    return r.model_version;
  }

  async getModelVersion(name: string, version: string | number): Promise<ModelVersion> {
    const r = await this.request<{ model_version: ModelVersion }>('GET', '/api/2.0/mlflow/model-versions/get', { query: { name, version } });
    return r.model_version;
  }

  async getModelVersionByAlias(name: string, alias: string): Promise<ModelVersion> {
    const r = await this.request<{ model_version: ModelVersion }>('GET', '/api/2.0/mlflow/registered-models/alias', { query: { name, alias } });
    return r.model_version;
  }

  async searchModelVersions(opts: { filter?: string; maxResults?: number; pageToken?: string } = {}): Promise<{ model_versions?: ModelVersion[]; next_page_token?: string }> {
    return this.request('GET', '/api/2.0/mlflow/model-versions/search', { query: { filter: opts.filter, max_results: opts.maxResults, page_token: opts.pageToken } });
  }

  async setAlias(name: string, alias: string, version: string | number): Promise<void> {
    await this.request('POST', '/api/2.0/mlflow/registered-models/alias', { json: { name, alias, version: String(version) } });
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
