/**
 * The model registry: registered models, versions, aliases and tags, with the artifacts that
 * back them. A version's artifact is copied into the artifact store at `models/{name}/{version}`
 * (so deleting the original loses nothing), inspected, and marked READY or FAILED_REGISTRATION.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buildPack, MAX_MEMBER_FILE_BYTES, newPackKey, parsePackMember, validateKey, type ArtifactStore } from '../artifacts/index.js';
import { FerryError, invalidParameter, notFound, toFerryError } from '../errors.js';
import { MODEL_NAME_PATTERN } from '../multi/index.js';
import type { MetadataStore, ModelVersionRecord, ModelVersionStage, RegisteredModelRecord } from '../store/index.js';
import { ALIAS_SET_CHANNEL, type AliasSetEvent } from './events.js';
import type { Inspector } from './inspector.js';

const aliasSet = diagnosticsChannel.channel(ALIAS_SET_CHANNEL);

/** Names become artifact-store path segments and URL parts: keep them plain. */
const ALIAS_RE = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;

/** Where uploads through the MLflow artifact proxy live inside the artifact store: `uploads/<principal>/<path>`. */
export const UPLOADS_PREFIX = 'uploads';

/**
 * Top folders of the `mlflow-artifacts` proxy that are not the caller's own uploads (no principal
 * name starts with "_"): `_experiments/<id>/<run>/artifacts/...` are runs' artifacts (artifact
 * store `experiments/<id>/...`, behind the experiment's grants) and `_models/<name>/<version>/...`
 * a registered version's files (read-only, behind the model's grants).
 */
export const PROXY_EXPERIMENTS = '_experiments';
export const PROXY_MODELS = '_models';

/** An experiment's `artifact_location`, e.g. `mlflow-artifacts:/_experiments/3`. */
export function experimentArtifactUri(experimentId: string): string {
  return `mlflow-artifacts:/${PROXY_EXPERIMENTS}/${experimentId}`;
}

/** A run's `artifact_uri`, which MLflow clients resolve against their tracking URI to the proxy. */
export function runArtifactUri(experimentId: string, runId: string): string {
  return `${experimentArtifactUri(experimentId)}/${runId}/artifacts`;
}

/** A registered version's files as the proxy serves them (`get-download-uri`). */
export function versionDownloadUri(name: string, version: number): string {
  return `mlflow-artifacts:/${PROXY_MODELS}/${name}/${version}`;
}

/** MLflow's stages, for `transition-stage` (deprecated in MLflow, still called by older code). */
export const STAGES: readonly ModelVersionStage[] = ['None', 'Staging', 'Production', 'Archived'];

/** Most models one bulk registration call takes (docs/multi-model.md, "Bulk registration"). */
export const MAX_BULK_MODELS = 10_000;

/** One model of a bulk registration: its registered model name and the bytes of its one file. */
export interface BulkModel {
  name: string;
  /** File name inside the version's artifact directory, e.g. "model.onnx". */
  file: string;
  content: Uint8Array;
}

/** What happened to one model of a bulk registration, in request order. */
export type BulkResult =
  | { name: string; status: 'READY'; version: number }
  | { name: string; status: 'FAILED_REGISTRATION'; errorCode: string; message: string };

export interface RegistryOptions {
  /** Largest artifact accepted from a server-side path. */
  maxUploadBytes: number;
  now: () => number;
  /** Where artifacts are parsed: a separate process with memory, time and count limits. */
  inspector: Pick<Inspector, 'inspect' | 'inspectFiles'>;
}

export class Registry {
  constructor(
    readonly store: MetadataStore,
    readonly artifacts: ArtifactStore,
    private readonly opts: RegistryOptions,
  ) {}

  /** `creator` gets CAN_MANAGE on the new model. */
  createModel(name: string, description: string, tags: Record<string, string>, creator?: string): Promise<RegisteredModelRecord> {
    checkName(name);
    return this.store.createRegisteredModel({ name, description, tags, ...(creator === undefined ? {} : { creator }) }, this.opts.now());
  }

  async getModel(name: string): Promise<RegisteredModelRecord> {
    return (await this.store.getRegisteredModel(name)) ?? missingModel(name);
  }

  async deleteModel(name: string): Promise<void> {
    const versions = await this.store.deleteRegisteredModel(name);
    // Versions whose artifacts live outside models/<name>: pack members (bulk registration), and
    // the bulk/<call>/<n> directories of Ferry before packs.
    const packs = new Set<string>();
    const others: string[] = [];
    for (const v of versions) {
      const key = v.artifact?.path;
      if (key === undefined || key.startsWith(`models/${name}/`)) continue;
      const member = parsePackMember(key);
      if (member === undefined) others.push(key);
      else packs.add(member.pack);
    }
    await Promise.all(others.map((key) => this.artifacts.delete(key)));
    for (const pack of packs) await this.releasePack(pack);
    await this.artifacts.delete(`models/${name}`);
  }

  /**
   * Registers a new version from `source` and returns it READY or FAILED_REGISTRATION. The version
   * row exists (PENDING_REGISTRATION) before the artifact is copied, so a crash mid-copy is found
   * and finished by `recoverPending` at the next start.
   */
  async createVersion(v: { name: string; source: string; runId: string; description: string; tags: Record<string, string> }): Promise<ModelVersionRecord> {
    parseSource(v.source);
    const record = await this.store.createModelVersion(v, this.opts.now());
    return this.finishRegistration(record);
  }

  /**
   * Registers many single-file models at once (ONNX or XGBoost files). They are inspected from
   * memory, INSPECT_BATCH per inspector frame (`Inspector.inspectFiles`); those that pass are
   * written as ONE pack (`packs/<uuid>`, their bytes one after another: one file, one fsync, where
   * a file per model cost two inodes), each version's artifact a member of it (packs.ts), and
   * registered READY in ONE store transaction (`creator` gets CAN_MANAGE on models it creates).
   * Atomicity: a model that fails inspection is reported and left out (its bytes are not
   * written), the others commit together; if the transaction fails, none commits and the pack is
   * deleted. The pack is durable before any row: a crash before the commit leaves only an orphan
   * pack, no version rows. `editors` (a caller who is not an admin: its principal and
   * `group:users`): a model that exists at the commit takes a version only when one of them may
   * edit it, checked in the transaction; the caller's check before the inspection cannot see a
   * model another user creates meanwhile (such a model's bytes stay in the pack, unreferenced,
   * until the pack goes).
   */
  async createVersionsBulk(models: readonly BulkModel[], creator: string | undefined, editors?: readonly string[]): Promise<BulkResult[]> {
    const results: BulkResult[] = new Array<BulkResult>(models.length);
    const fail = (i: number, err: unknown): void => {
      const e = toFerryError(err);
      results[i] = { name: (models[i] as BulkModel).name, status: 'FAILED_REGISTRATION', errorCode: e.code, message: e.message };
    };
    const candidates: Array<{ index: number; file: string; content: Uint8Array }> = [];
    models.forEach((m, i) => {
      try {
        checkName(m.name, `models[${i}].name`);
        if (validateKey(m.file, `models[${i}].file`).length !== 1 || Buffer.byteLength(m.file) > MAX_MEMBER_FILE_BYTES) {
          throw invalidParameter(`models[${i}].file`, m.file, `a file name without "/", of at most ${MAX_MEMBER_FILE_BYTES} bytes`);
        }
        if (m.content.byteLength > this.opts.maxUploadBytes) {
          throw new FerryError('PAYLOAD_TOO_LARGE', `Model file '${m.file}' of '${m.name}' is ${m.content.byteLength} bytes, over the limit of ${this.opts.maxUploadBytes} bytes.`);
        }
        candidates.push({ index: i, file: m.file, content: m.content });
      } catch (err) {
        fail(i, err);
      }
    });
    const inspections = await this.opts.inspector.inspectFiles(candidates);
    const passed = candidates.flatMap((c, j) => {
      const r = inspections[j];
      if (r?.ok === true) return [{ ...c, inspection: r.inspection }];
      fail(c.index, r?.error);
      return [];
    });
    if (passed.length === 0) return results;
    const pack = newPackKey();
    const { bytes, members } = buildPack(pack, passed);
    await this.artifacts.putFile(pack, Readable.from([bytes]), bytes.length);
    // Request order, so versions of one model follow it.
    const ready = passed.map((p, j) => {
      const member = members[j] as (typeof members)[number];
      const m = models[p.index] as BulkModel;
      return {
        index: p.index, name: m.name, source: `bulk:${m.file}`, artifact: { path: member.key, ...p.inspection, sha256: member.sha256, sizeBytes: member.sizeBytes },
        ...(creator === undefined ? {} : { creator }),
        ...(editors === undefined ? {} : { editors }),
      };
    });
    let versions: Array<number | undefined>;
    try {
      versions = await this.store.createReadyModelVersions(ready, this.opts.now());
    } catch (err) {
      await this.artifacts.delete(pack).catch(() => undefined);
      throw err;
    }
    ready.forEach((r, j) => {
      const version = versions[j];
      results[r.index] = version !== undefined ? { name: r.name, status: 'READY', version } : {
        name: r.name, status: 'FAILED_REGISTRATION', errorCode: 'PERMISSION_DENIED',
        message: `Principal '${creator ?? ''}' does not have CAN_EDIT on registered model '${r.name}' (created by someone else during this registration).`,
      };
    });
    if (versions.every((v) => v === undefined)) await this.artifacts.delete(pack).catch(() => undefined);
    return results;
  }

  /** Deletes a pack once no version points into it any more. */
  private async releasePack(pack: string): Promise<void> {
    if (!(await this.store.artifactPathInUse(`${pack}/`))) await this.artifacts.delete(pack);
  }

  /** Deletes a principal's upload area (`uploads/<principal>/`): registered versions hold copies of what they were registered from. */
  async deleteUploadsOf(principal: string): Promise<void> {
    await this.artifacts.delete(`${UPLOADS_PREFIX}/${principal}`);
  }

  /**
   * Renames a model (versions, tags, aliases and grants go with it). Refused while endpoints
   * serve it (`servedBy` lists them): their stored configs name the model and its artifact paths.
   * The artifacts are copied to `models/<newName>/...` and the versions pointed there before the
   * old folder goes, so a model created later under the old name cannot write over or delete
   * them; a crash in between leaves every version pointing at files that exist. Bulk-registered
   * versions' artifacts (pack members) belong to no name and stay where they are.
   */
  async renameModel(name: string, newName: string, servedBy: string[]): Promise<RegisteredModelRecord> {
    checkName(newName, 'new_name');
    await this.getModel(name);
    if (servedBy.length > 0) {
      throw new FerryError('RESOURCE_CONFLICT', `Registered model '${name}' is served by endpoint(s) ${servedBy.map((e) => `'${e}'`).join(', ')}: change or delete them before renaming it.`);
    }
    const renamed = await this.store.renameRegisteredModel(name, newName, this.opts.now());
    const versions = await this.store.searchModelVersions({ name: { op: '=', value: newName } }, { maxResults: 200_000, pageToken: undefined });
    const oldRoot = `models/${name}/`;
    for (const v of versions.items) {
      if (v.artifact === undefined || !v.artifact.path.startsWith(oldRoot)) continue;
      const to = `models/${newName}/${v.artifact.path.slice(oldRoot.length)}`;
      await this.artifacts.copy(v.artifact.path, to);
      await this.store.updateModelVersion(newName, v.version, { artifact: { ...v.artifact, path: to } }, this.opts.now());
    }
    await this.artifacts.delete(`models/${name}`);
    return renamed;
  }

  /** Moves a version to `stage`; with `archiveExisting`, the model's other versions in that stage go to Archived (as MLflow). */
  async transitionStage(name: string, version: number, stage: ModelVersionStage, archiveExisting: boolean): Promise<ModelVersionRecord> {
    await this.getVersion(name, version);
    if (archiveExisting && (stage === 'Staging' || stage === 'Production')) {
      const others = await this.store.searchModelVersions({ name: { op: '=', value: name } }, { maxResults: 200_000, pageToken: undefined });
      for (const v of others.items) if (v.version !== version && v.stage === stage) await this.store.updateModelVersion(name, v.version, { stage: 'Archived' }, this.opts.now());
    }
    return this.store.updateModelVersion(name, version, { stage }, this.opts.now());
  }

  async getVersion(name: string, version: number): Promise<ModelVersionRecord> {
    return (await this.store.getModelVersion(name, version)) ?? missingVersion(name, version);
  }

  async deleteVersion(name: string, version: number): Promise<void> {
    const deleted = await this.store.deleteModelVersion(name, version);
    if (!deleted) missingVersion(name, version);
    // Bulk-registered versions are members of a pack, the others under models/<name>/<version>.
    const key = deleted.artifact?.path ?? `models/${name}/${version}`;
    const member = parsePackMember(key);
    await (member === undefined ? this.artifacts.delete(key) : this.releasePack(member.pack));
  }

  async setAlias(name: string, alias: string, version: number): Promise<void> {
    if (!ALIAS_RE.test(alias) || /^v\d+$/i.test(alias) || alias.toLowerCase() === 'latest') {
      throw invalidParameter('alias', alias, 'letters, digits, "_" and "-", starting with a letter or "_"; "latest" and "v<number>" are reserved');
    }
    await this.getVersion(name, version);
    await this.store.setAlias(name, alias, version, this.opts.now());
    if (aliasSet.hasSubscribers) aliasSet.publish({ model: name, alias, version } satisfies AliasSetEvent);
  }

  async deleteAlias(name: string, alias: string): Promise<void> {
    if (!(await this.store.deleteAlias(name, alias, this.opts.now()))) throw notFound(`Alias '${alias}' of registered model '${name}'`);
  }

  async getVersionByAlias(name: string, alias: string): Promise<ModelVersionRecord> {
    const model = await this.getModel(name);
    // An own alias only: `constructor` or `toString` must not find Object.prototype's members.
    const version = Object.hasOwn(model.aliases, alias) ? model.aliases[alias] : undefined;
    if (version === undefined) throw notFound(`Alias '${alias}' of registered model '${name}'`);
    return this.getVersion(name, version);
  }

  /**
   * Finishes the registrations a crash interrupted (versions still PENDING_REGISTRATION), those
   * created at least `minAgeMs` ago: 0 for a server alone with its store; with a store shared by
   * several servers, an age no registration in progress elsewhere still has. Each goes through
   * the inspector like a new one, so an artifact that crashes or exhausts it ends
   * FAILED_REGISTRATION with the reason, and the next start does not try it again.
   */
  async recoverPending(minAgeMs = 0): Promise<void> {
    const cutoff = this.opts.now() - minAgeMs;
    for (const v of await this.store.pendingModelVersions()) if (v.createdMs <= cutoff) await this.finishRegistration(v);
  }

  private async finishRegistration(record: ModelVersionRecord): Promise<ModelVersionRecord> {
    const { name, version } = record;
    const key = `models/${name}/${version}`;
    try {
      await this.materialize(record.source, key);
      // Digest first: the S3 store downloads the tree once for both (localDir reuses the copy).
      const digest = await this.artifacts.digest(key);
      const inspection = await this.opts.inspector.inspect(await this.artifacts.localDir(key, digest.sha256));
      return await this.store.updateModelVersion(name, version, {
        status: 'READY',
        statusMessage: '',
        artifact: { path: key, ...inspection, sha256: digest.sha256, sizeBytes: digest.sizeBytes },
      }, this.opts.now());
    } catch (err) {
      await this.artifacts.delete(key).catch(() => undefined);
      return this.store.updateModelVersion(name, version, {
        status: 'FAILED_REGISTRATION',
        statusMessage: toFerryError(err).message,
      }, this.opts.now());
    }
  }

  /** Copies the version's source into `key`: a single model file becomes `key/<file name>`. */
  private async materialize(source: string, key: string): Promise<void> {
    const src = parseSource(source);
    if (src.kind === 'upload' || src.kind === 'run') {
      const from = src.kind === 'upload' ? src.key : await this.runArtifactKey(src.runId, src.path);
      const entries = await this.artifacts.list(from);
      const isDir = entries.length > 0;
      if (!isDir && !(await this.artifacts.exists(from))) throw new FerryError('INVALID_PARAMETER_VALUE', `Source '${source}' does not exist: log or upload it first through the mlflow-artifacts proxy.`);
      await this.artifacts.copy(from, isDir ? key : `${key}/${path.posix.basename(from)}`);
    } else {
      const st = await fsp.stat(src.path).catch(() => undefined);
      if (!st) throw new FerryError('INVALID_PARAMETER_VALUE', `Source path '${src.path}' does not exist on the server.`);
      await this.artifacts.importLocal(src.path, st.isDirectory() ? key : `${key}/${path.basename(src.path)}`, this.opts.maxUploadBytes);
    }
  }

  /** Where `runs:/<runId>/<path>` lives in the artifact store. */
  private async runArtifactKey(runId: string, artifactPath: string): Promise<string> {
    const run = await this.store.tracking.getRun(runId);
    if (!run) throw invalidParameter('source', `runs:/${runId}/${artifactPath}`, 'a runs:/<run_id>/<path> URI of an existing run');
    return runArtifactKey(run.experimentId, run.id, artifactPath);
  }
}

/** A run's artifact (or its artifact root, path '') in the artifact store. */
export function runArtifactKey(experimentId: string, runId: string, artifactPath: string): string {
  return `experiments/${experimentId}/${runId}/artifacts${artifactPath === '' ? '' : `/${artifactPath}`}`;
}

type Source = { kind: 'upload'; key: string } | { kind: 'run'; runId: string; path: string } | { kind: 'local'; path: string };

/**
 * Accepted sources: `mlflow-artifacts:/<principal>/<path>` (uploaded through the artifact proxy,
 * as the API stores it), `mlflow-artifacts:/_experiments/<id>/<run>/artifacts/<path>` (a run's
 * artifact), `runs:/<run_id>/<path>`, `file://<abs>`, or a path on the server's machine.
 */
export function parseSource(source: string): Source {
  if (source.trim() === '') throw invalidParameter('source', source, 'an mlflow-artifacts:/ or runs:/ URI, or a path on the server');
  const run = /^runs:\/([0-9a-f]{32})(?:\/(.*))?$/.exec(source);
  if (run) {
    const p = (run[2] ?? '').replace(/\/+$/, '');
    if (p !== '') validateKey(p, 'source');
    return { kind: 'run', runId: run[1] as string, path: p };
  }
  const m = /^mlflow-artifacts:(?:\/\/[^/]*)?\/+(.+)$/.exec(source);
  if (m) {
    const p = (m[1] as string).replace(/\/+$/, '');
    validateKey(p, 'source');
    const [head, ...rest] = p.split('/');
    if (head === PROXY_EXPERIMENTS) return { kind: 'upload', key: `experiments/${rest.join('/')}` };
    if (head === PROXY_MODELS) throw invalidParameter('source', source, 'an upload or a run\'s artifact (a registered version\'s files are registered already)');
    return { kind: 'upload', key: `${UPLOADS_PREFIX}/${p}` };
  }
  if (source.startsWith('file://')) return { kind: 'local', path: path.resolve(decodeURIComponent(new URL(source).pathname)) };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source) || /^[a-z]+:\//i.test(source)) {
    throw invalidParameter('source', source, 'an mlflow-artifacts:/ URI (upload first), a runs:/ URI or a path on the server; other schemes are not supported');
  }
  return { kind: 'local', path: path.resolve(source) };
}

export function checkName(name: string, field = 'name'): void {
  if (!MODEL_NAME_PATTERN.test(name)) throw invalidParameter(field, name, 'a model name of 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit');
}

function missingModel(name: string): never {
  throw notFound(`Registered model '${name}'`);
}

function missingVersion(name: string, version: number): never {
  throw notFound(`Model version '${name}' version ${version}`);
}
