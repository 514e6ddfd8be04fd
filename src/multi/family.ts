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
import { encodeMemberArtifact } from './member.js';
import { MODEL_NAME_PATTERN, VERSION_PATTERN } from './names.js';
import { isXgboostFile } from './xgboost.js';

export { MODEL_NAME_PATTERN, VERSION_PATTERN } from './names.js';

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
  /** The three above as the gateway sends them to a replica (`encodeMemberArtifact`), encoded once per lookup. */
  artifactMeta: string;
}

/**
 * The flavors a family member may have: single-file models the replica loads from bytes
 * (./loader.ts). A python version qualifies only when registration recorded an XGBoost file as its
 * model file (an mlflow.xgboost model whose prediction is the booster's: src/registry/inspect.ts).
 */
export const FAMILY_FLAVORS: ReadonlySet<string> = new Set(['onnx', 'xgboost', 'python']);

/** The request header that names the model of a family endpoint. */
export const MODEL_HEADER = 'x-ferry-model';

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
  if (!MODEL_NAME_PATTERN.test(name)) throw invalidParameter(field, raw, expected);
  if (slash >= 0) {
    const v = raw.slice(slash + 1);
    if (!VERSION_PATTERN.test(v)) throw invalidParameter(field, raw, expected);
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

/** A cached answer: the member, or why there is none (kept as text: no stack per unknown name). */
type Resolved = { member: FamilyMember; atMs: number } | { missing: string; atMs: number };

/** The gateway's lookup of a family entity's members. */
export class FamilyResolver {
  /** Insertion order is age order: the oldest answers are dropped first when it is full. */
  private readonly cache = new Map<string, Resolved>();
  /** Lookups under way, so that concurrent requests for one new name cost one lookup. */
  private readonly pending = new Map<string, Promise<Resolved>>();

  /**
   * `ownerReads` says whether the endpoint's creator may read a model: only such models are
   * members, so nobody else can add a model to the family by its name or tag.
   */
  constructor(
    private readonly family: FamilyConfig,
    private readonly store: MetadataStore,
    private readonly ownerReads: (model: string) => Promise<boolean>,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The READY version a request names. 404 RESOURCE_DOES_NOT_EXIST naming the model when it does
   * not exist, is not in the family, is not an ONNX or XGBoost model, or the version is not READY; 400 for a
   * malformed name (`field` names where it came from).
   */
  async resolve(raw: string, field: string): Promise<FamilyMember> {
    const hit = this.cache.get(raw);
    const entry = hit !== undefined && this.now() - hit.atMs < RESOLVE_TTL_MS ? hit : await this.lookupOnce(raw, parseModelRef(raw, field));
    if ('missing' in entry) throw new FerryError('RESOURCE_DOES_NOT_EXIST', `Model '${raw}' ${entry.missing}.`);
    return entry.member;
  }

  private lookupOnce(raw: string, ref: ModelRef): Promise<Resolved> {
    let p = this.pending.get(raw);
    if (p === undefined) {
      const atMs = this.now();
      p = this.lookup(ref).then((r) => {
        const entry: Resolved = typeof r === 'string' ? { missing: r, atMs } : { member: r, atMs };
        this.remember(raw, entry);
        // The exact version too: a replica's staging request for it (a miss) then costs no lookup.
        if ('member' in entry) this.remember(`${entry.member.name}/${entry.member.version}`, entry);
        return entry;
      }).finally(() => this.pending.delete(raw));
      this.pending.set(raw, p);
    }
    return p;
  }

  private remember(key: string, entry: Resolved): void {
    this.cache.delete(key);
    if (this.cache.size >= RESOLVE_CACHE_MAX) {
      // Drop the oldest tenth: a flood of new names ages out old answers, not every answer at once.
      let n = Math.ceil(RESOLVE_CACHE_MAX / 10);
      for (const k of this.cache.keys()) {
        if (n-- <= 0) break;
        this.cache.delete(k);
      }
    }
    this.cache.set(key, entry);
  }

  /** The member `ref` names, or why there is none ("does not exist", …). */
  private async lookup(ref: ModelRef): Promise<FamilyMember | string> {
    const f = this.family;
    if (f.namePrefix !== undefined && !ref.name.startsWith(f.namePrefix)) return `is not in this family (names starting with '${f.namePrefix}')`;
    const model = await this.store.getRegisteredModel(ref.name);
    if (model === undefined) return 'does not exist';
    if (f.tag !== undefined && model.tags[f.tag.key] !== f.tag.value) return `is not in this family (tag ${f.tag.key}=${f.tag.value})`;
    if (!(await this.ownerReads(ref.name))) return 'is not in this family (the endpoint\'s creator cannot read it)';
    let version: ModelVersionRecord | undefined;
    if (ref.alias !== undefined) {
      // Own properties only: "constructor" or "__proto__" is no alias.
      const n = Object.hasOwn(model.aliases, ref.alias) ? model.aliases[ref.alias] : undefined;
      if (n === undefined) return `has no alias '${ref.alias}'`;
      version = await this.store.getModelVersion(ref.name, n);
    } else {
      version = ref.version === undefined ? await this.store.latestModelVersion(ref.name) : await this.store.getModelVersion(ref.name, ref.version);
    }
    if (version === undefined) return ref.version === undefined ? 'has no versions' : 'does not exist';
    if (version.status !== 'READY' || version.artifact === undefined) return `version ${version.version} is ${version.status}, not READY`;
    const { flavor, modelFile } = version.artifact;
    if (!FAMILY_FLAVORS.has(flavor)) return `version ${version.version} is a ${flavor} model (families serve ONNX and XGBoost models)`;
    if (flavor === 'python' && !isXgboostFile(modelFile)) {
      return `version ${version.version} is a python model (families serve ONNX and XGBoost models, and MLflow models saved by mlflow.xgboost from a Booster or an XGBRegressor)`;
    }
    // A replica tells the two apart by the file's extension (./loader.ts), so it must agree with the flavor.
    if ((flavor !== 'onnx') !== isXgboostFile(modelFile)) return `version ${version.version} is a ${flavor} model in '${modelFile}', whose extension says otherwise (families load .onnx and .ubj, .xgb or .json XGBoost files)`;
    const { path: artifactPath, sha256: artifactSha256 } = version.artifact;
    return {
      name: ref.name, version: version.version, artifactPath, artifactSha256, modelFile,
      artifactMeta: encodeMemberArtifact({ key: artifactPath, sha256: artifactSha256, modelFile }),
    };
  }
}
