/**
 * Model families on the server side (docs/multi-model.md): which registered models a family entity
 * serves, how a request names one (`X-Ferry-Model: name`, `name/3` or `name@alias`), and the
 * gateway's cached lookup from that name to a READY version.
 *
 * The lookup is cached for `RESOLVE_TTL_MS` per name, negative answers too, so a hot model costs
 * the store nothing per request and a flood of unknown names costs one lookup per name per TTL.
 * A new version, a moved alias or a deleted model is therefore seen within that time.
 */
import { FerryError, invalidParameter } from '../errors.js';
import type { MetadataStore, ModelVersionRecord } from '../store/index.js';

/** Which registered models a family entity serves, and how its replicas hold them. */
export interface FamilyConfig {
  /** Models whose name starts with this. */
  namePrefix: string | undefined;
  /** Models carrying this tag (both set: both must hold). */
  tag: { key: string; value: string } | undefined;
  /** Bytes of models one replica keeps loaded (its cache budget). */
  cacheBytes: number;
  /** Models the compact evaluators cannot run get an onnxruntime session; false refuses them. */
  sessionFallback: boolean;
}

/** A request's model: a name with a version number, an alias, or neither (the latest version). */
export interface ModelRef {
  name: string;
  version: number | undefined;
  alias: string | undefined;
}

/** One READY version of a family member, as the gateway routes it and a replica stages it. */
export interface FamilyMember {
  name: string;
  version: number;
  artifactPath: string;
  artifactSha256: string;
  modelFile: string;
}

/** The request header that names the model of a family endpoint. */
export const MODEL_HEADER = 'x-ferry-model';

const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ALIAS = /^[A-Za-z0-9_-]{1,255}$/;

/**
 * "ads-17" → latest version; "ads-17/3" → version 3; "ads-17@champion" → the alias. `field`
 * names where the value came from in the error.
 */
export function parseModelRef(raw: string, field: string): ModelRef {
  const slash = raw.indexOf('/');
  const at = raw.indexOf('@');
  const name = slash >= 0 ? raw.slice(0, slash) : at >= 0 ? raw.slice(0, at) : raw;
  const expected = 'a registered model name, "name/<version>" or "name@<alias>"';
  if (!MODEL_NAME.test(name)) throw invalidParameter(field, raw, expected);
  if (slash >= 0) {
    const v = raw.slice(slash + 1);
    if (!/^[1-9]\d{0,9}$/.test(v)) throw invalidParameter(field, raw, expected);
    return { name, version: Number(v), alias: undefined };
  }
  if (at >= 0) {
    const alias = raw.slice(at + 1);
    if (!ALIAS.test(alias)) throw invalidParameter(field, raw, expected);
    return { name, version: undefined, alias };
  }
  return { name, version: undefined, alias: undefined };
}

/** How long a resolved (or unknown) model name is trusted. */
export const RESOLVE_TTL_MS = 2000;
/** The cache is emptied when it reaches this many names (100,000 models fit). */
const RESOLVE_CACHE_MAX = 200_000;

type Resolved = { member: FamilyMember; atMs: number } | { error: FerryError; atMs: number };

/** The gateway's lookup of a family entity's members. */
export class FamilyResolver {
  private readonly cache = new Map<string, Resolved>();

  constructor(
    private readonly family: FamilyConfig,
    private readonly store: MetadataStore,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The READY version a request names. 404 RESOURCE_DOES_NOT_EXIST naming the model when it does
   * not exist, is not in the family, or the version is not READY; 400 for a malformed name.
   */
  async resolve(raw: string, field: string): Promise<FamilyMember> {
    const t = this.now();
    const hit = this.cache.get(raw);
    if (hit !== undefined && t - hit.atMs < RESOLVE_TTL_MS) {
      if ('error' in hit) throw hit.error;
      return hit.member;
    }
    const ref = parseModelRef(raw, field);
    let entry: Resolved;
    try {
      entry = { member: await this.lookup(ref, raw), atMs: t };
    } catch (err) {
      if (!(err instanceof FerryError) || err.code !== 'RESOURCE_DOES_NOT_EXIST') throw err;
      entry = { error: err, atMs: t };
    }
    if (this.cache.size >= RESOLVE_CACHE_MAX) this.cache.clear();
    this.cache.set(raw, entry);
    // The exact version too: a replica's staging request for it (a miss) then costs no lookup.
    if ('member' in entry) this.cache.set(`${entry.member.name}/${entry.member.version}`, entry);
    if ('error' in entry) throw entry.error;
    return entry.member;
  }

  /** Drops every cached answer (a registry change made through this server). */
  clear(): void {
    this.cache.clear();
  }

  private async lookup(ref: ModelRef, raw: string): Promise<FamilyMember> {
    const missing = (why: string): FerryError => new FerryError('RESOURCE_DOES_NOT_EXIST', `Model '${raw}' ${why}.`);
    const f = this.family;
    if (f.namePrefix !== undefined && !ref.name.startsWith(f.namePrefix)) throw missing(`is not in this family (names starting with '${f.namePrefix}')`);
    const model = await this.store.getRegisteredModel(ref.name);
    if (model === undefined) throw missing('does not exist');
    if (f.tag !== undefined && model.tags[f.tag.key] !== f.tag.value) throw missing(`is not in this family (tag ${f.tag.key}=${f.tag.value})`);
    let version: ModelVersionRecord | undefined;
    if (ref.alias !== undefined) {
      const n = model.aliases[ref.alias];
      if (n === undefined) throw missing(`has no alias '${ref.alias}'`);
      version = await this.store.getModelVersion(ref.name, n);
    } else {
      version = ref.version === undefined ? await this.store.latestModelVersion(ref.name) : await this.store.getModelVersion(ref.name, ref.version);
    }
    if (version === undefined) throw missing(ref.version === undefined ? 'has no versions' : 'does not exist');
    if (version.status !== 'READY' || version.artifact === undefined) throw missing(`version ${version.version} is ${version.status}, not READY`);
    return { name: ref.name, version: version.version, artifactPath: version.artifact.path, artifactSha256: version.artifact.sha256, modelFile: version.artifact.modelFile };
  }
}
