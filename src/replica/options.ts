/**
 * A replica's options, in one place: their types, their defaults, how the runtimes compile them
 * from a replica spec (`replicaOptionsOf`), and their two encodings: the `ferry replica` command
 * line (`toArgv` / `fromArgv`, what a spawned local replica and a Kubernetes pod are given) and
 * the JSON `start` message a warm-pool process gets over its control channel (`optionsFromMessage`).
 * A leaf for the runtimes: it loads no flavor, no replica code and nothing of the control plane,
 * so the Kubernetes runtime and the local one share it without importing each other.
 *
 * Example: `toArgv({ options })` for a spawned onnx replica is
 * `--socket /s/r.sock --dir /m --model-file model.onnx --flavor onnx --workload-type CPU --threads 1
 * --name iris --version 1 --max-body-bytes 16777216 …`, and `fromArgv` of that gives the same
 * options back (test/replica-options.test.ts walks every option).
 */
import { parseArgs } from 'node:util';
import type { ParsedArtifactStoreLocation } from '../artifacts/index.js';
import { DEFAULT_MAX_JSON_DEPTH, DEFAULT_MAX_JSON_ELEMENTS, DEFAULT_MAX_ROWS_PER_REQUEST } from '../config/defaults.js';
import type { LoadOptions } from '../flavors/index.js';
import { isFlavorName, WORKLOAD_TYPES, type FlavorName, type WorkloadType } from '../flavors/names.js';
import { isLogLevel, LOG_LEVELS, type LogLevel } from '../logs/index.js';

/**
 * Dynamic batching of one served entity's replicas. With `maxQueueDelayUs` 0 requests that arrive
 * in the same event-loop turn, or while the model is busy, run together: no request waits for
 * others. A positive delay lets a request wait up to that long for more rows (heavy models under
 * load). Applies only to models whose inputs and outputs all have a dynamic first dimension.
 */
export interface BatchingConfig {
  enabled: boolean;
  maxBatchSize: number;
  maxQueueDelayUs: number;
  preferredBatchSizes: number[];
}

/** A model family replica's cache (see ./family.ts). */
export interface FamilyOptions {
  cacheBytes: number;
  sessionFallback: boolean;
  /** Fetch members from this artifact store (a pod: `--members-from-store`); absent: the runtime stages them (local). */
  artifactStore?: ParsedArtifactStoreLocation;
}

export const EXECUTION_MODES = ['auto', 'inline', 'worker'] as const;
/** Where the model runs: its own worker thread, the main thread (tiny models), or `auto`: a calibration run picks `inline` for tiny models, `worker` otherwise. */
export type ExecutionMode = (typeof EXECUTION_MODES)[number];

export interface ReplicaOptions {
  /** Unix socket path to listen on (the parent directory should be 0700); unused when `listen` is set. */
  socketPath: string;
  /** TCP address to listen on instead of `socketPath`: a Kubernetes pod's IP and the replica port. */
  listen?: { host: string; port: number };
  /** Artifact directory of the version. */
  dir: string;
  flavor: FlavorName;
  loadOptions: LoadOptions;
  /** Name the model answers to under /v2/models/{name}. */
  modelName: string;
  modelVersion: string;
  maxBodyBytes: number;
  /** How long SIGTERM waits for in-flight requests before exiting anyway. */
  drainTimeoutMs: number;
  /** Most rows (first dimension of each input) one request may carry. */
  maxRowsPerRequest: number;
  /** Deepest nesting of arrays and objects accepted in a JSON body. */
  maxJsonDepth: number;
  /** Most values accepted in one JSON body. */
  maxJsonElements: number;
  batching: BatchingConfig;
  execution?: ExecutionMode;
  /** Lines below this level are not logged (the server's `logLevel`); default info. */
  logLevel?: LogLevel;
  /**
   * The user and group to switch to once the model is loaded and the socket listens (the process
   * must be root then). Everything that opens a file (the model, the worker thread's code, the
   * socket) happens before, so the model's files and the 0700 socket directory may be root's.
   */
  user?: { uid: number; gid: number };
  /** Serve a model family (no model at start; `dir` is unused): see ./family.ts. */
  family?: FamilyOptions;
}

/** Same-tick and while-busy batching up to 64 rows, no added delay (measured: docs/benchmarks.md). */
export const DEFAULT_BATCHING: Readonly<BatchingConfig> = Object.freeze({ enabled: true, maxBatchSize: 64, maxQueueDelayUs: 0, preferredBatchSizes: [] });

/**
 * What a flag left out of `ferry replica`'s command line means: the server's own defaults (the
 * runtimes always pass every option, so these matter for a replica started by hand).
 */
export const REPLICA_DEFAULTS = Object.freeze({
  flavor: 'onnx',
  workloadType: 'CPU',
  /** One model thread: one replica per core. */
  intraOpThreads: 1,
  /** The server's default `maxBodySize` (16 MiB). */
  maxBodyBytes: 16 * 1024 * 1024,
  /** The server's default `drainTimeout` (30 s). */
  drainTimeoutMs: 30_000,
  maxRowsPerRequest: DEFAULT_MAX_ROWS_PER_REQUEST,
  maxJsonDepth: DEFAULT_MAX_JSON_DEPTH,
  maxJsonElements: DEFAULT_MAX_JSON_ELEMENTS,
  batching: DEFAULT_BATCHING,
  familySessionFallback: true,
});

/** The fields of a runtime's replica spec that become options (a `ReplicaSpec` has them all). */
export interface ReplicaIdentity {
  flavor: FlavorName;
  modelFile: string;
  workloadType: WorkloadType;
  memoryLimitBytes: number;
  modelName: string;
  modelVersion: string;
  maxBodyBytes: number;
  maxRowsPerRequest: number;
  maxJsonDepth: number;
  maxJsonElements: number;
  batching: BatchingConfig;
  family?: FamilyOptions | undefined;
}

/**
 * What a replica of `spec` is told: as flags when spawned or in a pod, in the `start` message when
 * claimed from the local runtime's warm pool. `socketPath` is '' for a pod (it listens on TCP).
 */
export function replicaOptionsOf(
  spec: ReplicaIdentity,
  o: { socketPath: string; modelDir: string; drainTimeoutMs: number; user: { uid: number; gid: number } | undefined; logLevel: LogLevel; pythonExecutable?: string | undefined;
    pythonLinkFd?: number },
): ReplicaOptions {
  return {
    socketPath: o.socketPath, dir: o.modelDir, flavor: spec.flavor,
    loadOptions: {
      modelFile: spec.modelFile, workloadType: spec.workloadType, intraOpThreads: REPLICA_DEFAULTS.intraOpThreads, memoryLimitBytes: spec.memoryLimitBytes,
      ...(o.pythonExecutable === undefined ? {} : { pythonExecutable: o.pythonExecutable }),
      ...(o.pythonLinkFd === undefined ? {} : { pythonLinkFd: o.pythonLinkFd }),
    },
    modelName: spec.modelName, modelVersion: spec.modelVersion, maxBodyBytes: spec.maxBodyBytes, drainTimeoutMs: o.drainTimeoutMs,
    maxRowsPerRequest: spec.maxRowsPerRequest, maxJsonDepth: spec.maxJsonDepth, maxJsonElements: spec.maxJsonElements,
    batching: spec.batching, logLevel: o.logLevel,
    ...(o.user === undefined ? {} : { user: o.user }),
    ...(spec.family === undefined ? {} : { family: { cacheBytes: spec.family.cacheBytes, sessionFallback: spec.family.sessionFallback } }),
  };
}

/** A pod's model: fetched from the artifact store into `dir` and checked against its tree digest. */
export interface ArtifactSource {
  /** The version's key in the store. */
  path: string;
  /** The version's 64-hex-digit tree digest. */
  sha256: string;
  /** The store's location as JSON; absent: the replica reads FERRY_ARTIFACT_STORE. */
  store?: string;
}

/** Everything `ferry replica`'s command line carries. */
export interface ReplicaCommand {
  /** Absent in pool mode: they come in the `start` message. */
  options?: ReplicaOptions;
  /** Pool mode: this process's identity on its command line (orphan cleanup matches it). */
  pool?: string;
  /** The local runtime's control channel is the process's descriptor 3. */
  control?: boolean;
  artifact?: ArtifactSource;
  /**
   * A family pod: it fetches each member from the artifact store on a miss, as the gateway's
   * request names it; `store` as in `ArtifactSource`.
   */
  membersFromStore?: { store?: string };
}

/** A `ferry replica` command line that does not parse; the message names the flag and its value. */
export class ReplicaArgvError extends Error {}

/** `ferry replica` flags that carry `cmd` (the inverse of `fromArgv`). */
export function toArgv(cmd: ReplicaCommand): string[] {
  const o = cmd.options;
  const a = cmd.artifact;
  const m = cmd.membersFromStore;
  return [
    ...(cmd.control === true ? ['--control'] : []),
    ...(cmd.pool === undefined ? [] : ['--pool', cmd.pool]),
    ...(o === undefined ? [] : optionFlags(o)),
    ...(a === undefined ? [] : ['--artifact-path', a.path, '--sha256', a.sha256, ...(a.store === undefined ? [] : ['--artifact-store', a.store])]),
    ...(m === undefined ? [] : ['--members-from-store', ...(m.store === undefined ? [] : ['--artifact-store', m.store])]),
  ];
}

function optionFlags(o: ReplicaOptions): string[] {
  return [
    ...(o.listen === undefined ? ['--socket', o.socketPath] : ['--listen', `${o.listen.host}:${o.listen.port}`]), '--dir', o.dir,
    ...(o.family === undefined
      ? ['--model-file', o.loadOptions.modelFile]
      : ['--family-cache-bytes', String(o.family.cacheBytes), '--family-session-fallback', onOff(o.family.sessionFallback)]),
    '--flavor', o.flavor, '--workload-type', o.loadOptions.workloadType, '--threads', String(o.loadOptions.intraOpThreads),
    ...(o.loadOptions.pythonExecutable === undefined ? [] : ['--python', o.loadOptions.pythonExecutable]),
    ...(o.loadOptions.pythonLinkFd === undefined ? [] : ['--python-link-fd', String(o.loadOptions.pythonLinkFd)]),
    ...(o.loadOptions.memoryLimitBytes === undefined ? [] : ['--memory-limit-bytes', String(o.loadOptions.memoryLimitBytes)]),
    '--name', o.modelName, '--version', o.modelVersion,
    '--max-body-bytes', String(o.maxBodyBytes), '--drain-timeout-ms', String(o.drainTimeoutMs),
    '--max-rows-per-request', String(o.maxRowsPerRequest), '--max-json-depth', String(o.maxJsonDepth),
    '--max-json-elements', String(o.maxJsonElements),
    '--batching', onOff(o.batching.enabled), '--max-batch-size', String(o.batching.maxBatchSize),
    '--max-queue-delay-us', String(o.batching.maxQueueDelayUs),
    ...(o.batching.preferredBatchSizes.length ? ['--preferred-batch-sizes', o.batching.preferredBatchSizes.join(',')] : []),
    ...(o.execution === undefined ? [] : ['--execution', o.execution]),
    ...(o.user === undefined ? [] : ['--uid', String(o.user.uid), '--gid', String(o.user.gid)]),
    ...(o.logLevel === undefined ? [] : ['--log-level', o.logLevel]),
  ];
}

const onOff = (b: boolean): string => (b ? 'on' : 'off');

const STRING_FLAGS = [
  'socket', 'listen', 'dir', 'model-file', 'flavor', 'workload-type', 'threads', 'python', 'python-link-fd', 'memory-limit-bytes', 'name', 'version',
  'max-body-bytes', 'drain-timeout-ms', 'max-rows-per-request', 'max-json-depth', 'max-json-elements',
  'batching', 'max-batch-size', 'max-queue-delay-us', 'preferred-batch-sizes', 'execution', 'uid', 'gid', 'log-level',
  'family-cache-bytes', 'family-session-fallback', 'pool', 'artifact-path', 'sha256', 'artifact-store',
] as const;
type Flag = (typeof STRING_FLAGS)[number];
const BOOLEAN_FLAGS = ['control', 'members-from-store'] as const;
type BooleanFlag = (typeof BOOLEAN_FLAGS)[number];

/**
 * Parses `ferry replica`'s flags (those after `replica`); a flag left out takes its value from
 * `REPLICA_DEFAULTS`. Throws `ReplicaArgvError` naming the flag and the value it refuses.
 * `--listen` with an empty host (`:8443`) keeps it empty: the caller picks the pod's IP.
 */
export function fromArgv(argv: string[]): ReplicaCommand {
  let values: Partial<Record<Flag | BooleanFlag, string | boolean>>;
  try {
    const options = Object.fromEntries([...STRING_FLAGS.map((f) => [f, { type: 'string' }]), ...BOOLEAN_FLAGS.map((f) => [f, { type: 'boolean' }])]) as Record<Flag | BooleanFlag, { type: 'string' | 'boolean' }>;
    values = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new ReplicaArgvError((err as Error).message);
  }
  const str = (k: Flag): string | undefined => (typeof values[k] === 'string' ? values[k] : undefined);
  const need = (k: Flag): string => str(k) ?? bad(`--${k} is required`);
  const count = (k: Flag, fallback: number, min = 0): number => {
    const v = str(k);
    if (v === undefined) return fallback;
    return /^\d+$/.test(v) && Number(v) >= min && Number.isSafeInteger(Number(v)) ? Number(v) : bad(`--${k} must be a whole number ≥ ${min}, got '${v}'`);
  };
  const oneOf = <T extends string>(k: Flag, allowed: readonly T[], fallback?: T): T | undefined => {
    const v = str(k);
    if (v === undefined) return fallback;
    return allowed.find((a) => a === v) ?? bad(`--${k} must be one of ${allowed.join(', ')}, got '${v}'`);
  };
  const cmd: ReplicaCommand = {
    ...(values.control === true ? { control: true } : {}),
    ...(str('pool') === undefined ? {} : { pool: need('pool') }),
  };
  const artifactPath = str('artifact-path');
  if (artifactPath !== undefined) {
    const sha256 = str('sha256');
    if (sha256 === undefined || !/^[0-9a-f]{64}$/.test(sha256)) bad(`--artifact-path needs --sha256 with the version's 64-hex-digit tree digest, got '${sha256 ?? ''}'`);
    const store = str('artifact-store');
    cmd.artifact = { path: artifactPath, sha256: sha256, ...(store === undefined ? {} : { store }) };
  }
  if (values['members-from-store'] === true) {
    if (str('family-cache-bytes') === undefined) bad('--members-from-store is for a family replica (--family-cache-bytes)');
    const store = str('artifact-store');
    cmd.membersFromStore = store === undefined ? {} : { store };
  }
  // Pool mode: the options arrive in the `start` message once a replica claims the process.
  if (cmd.pool !== undefined) return cmd;
  const flavor = str('flavor') ?? REPLICA_DEFAULTS.flavor;
  if (!isFlavorName(flavor)) bad(`unknown --flavor '${flavor}'`);
  const uid = str('uid');
  const gid = str('gid');
  if ((uid === undefined) !== (gid === undefined)) bad('--uid and --gid go together');
  const familyBytes = str('family-cache-bytes');
  const family = familyBytes === undefined ? undefined : {
    cacheBytes: count('family-cache-bytes', 0, 1),
    sessionFallback: oneOf('family-session-fallback', ['on', 'off'], onOff(REPLICA_DEFAULTS.familySessionFallback)) === 'on',
  };
  const listen = str('listen') === undefined ? undefined : parseListen(need('listen'));
  const execution = oneOf('execution', EXECUTION_MODES);
  const logLevel = oneOf('log-level', LOG_LEVELS);
  const python = str('python');
  const memoryLimitBytes = str('memory-limit-bytes') === undefined ? undefined : count('memory-limit-bytes', 0, 1);
  const pythonLinkFd = str('python-link-fd') === undefined ? undefined : count('python-link-fd', 0, 3);
  const preferred = str('preferred-batch-sizes') ?? '';
  cmd.options = {
    socketPath: listen === undefined ? need('socket') : '',
    ...(listen === undefined ? {} : { listen }),
    dir: need('dir'),
    flavor: flavor,
    loadOptions: {
      // A family replica loads its models later, each with its own file.
      modelFile: family === undefined ? need('model-file') : '',
      workloadType: oneOf('workload-type', WORKLOAD_TYPES, REPLICA_DEFAULTS.workloadType) as WorkloadType,
      intraOpThreads: count('threads', REPLICA_DEFAULTS.intraOpThreads, 1),
      ...(python === undefined ? {} : { pythonExecutable: python }),
      ...(pythonLinkFd === undefined ? {} : { pythonLinkFd }),
      ...(memoryLimitBytes === undefined ? {} : { memoryLimitBytes }),
    },
    modelName: need('name'),
    modelVersion: family === undefined ? need('version') : str('version') ?? '',
    maxBodyBytes: count('max-body-bytes', REPLICA_DEFAULTS.maxBodyBytes, 1),
    drainTimeoutMs: count('drain-timeout-ms', REPLICA_DEFAULTS.drainTimeoutMs),
    maxRowsPerRequest: count('max-rows-per-request', REPLICA_DEFAULTS.maxRowsPerRequest, 1),
    maxJsonDepth: count('max-json-depth', REPLICA_DEFAULTS.maxJsonDepth, 1),
    maxJsonElements: count('max-json-elements', REPLICA_DEFAULTS.maxJsonElements, 1),
    batching: {
      enabled: oneOf('batching', ['on', 'off'], onOff(REPLICA_DEFAULTS.batching.enabled)) === 'on',
      maxBatchSize: count('max-batch-size', REPLICA_DEFAULTS.batching.maxBatchSize, 1),
      maxQueueDelayUs: count('max-queue-delay-us', REPLICA_DEFAULTS.batching.maxQueueDelayUs),
      preferredBatchSizes: preferred === '' ? [...REPLICA_DEFAULTS.batching.preferredBatchSizes] : preferred.split(',').map((x) => {
        if (!/^[1-9]\d*$/.test(x)) bad(`--preferred-batch-sizes must be whole numbers ≥ 1 separated by commas, got '${preferred}'`);
        return Number(x);
      }),
    },
    ...(execution === undefined ? {} : { execution }),
    ...(uid === undefined || gid === undefined ? {} : { user: { uid: count('uid', 0), gid: count('gid', 0) } }),
    ...(logLevel === undefined ? {} : { logLevel }),
    ...(family === undefined ? {} : { family }),
  };
  return cmd;
}

function bad(what: string): never {
  throw new ReplicaArgvError(what);
}

/** `--listen HOST:PORT` (IPv6 hosts in brackets); the host may be empty. */
function parseListen(value: string): { host: string; port: number } {
  const i = value.lastIndexOf(':');
  const port = Number(value.slice(i + 1));
  if (i < 0 || !/^\d+$/.test(value.slice(i + 1)) || port < 1 || port > 65535) bad(`--listen must be [HOST]:PORT, got '${value}'`);
  return { host: value.slice(0, i).replace(/^\[|\]$/g, ''), port };
}

/**
 * Checks the local runtime's `start` message field by field (it becomes a pool process's whole
 * configuration) and returns its options; throws naming the first field that is wrong.
 */
export function optionsFromMessage(msg: unknown): ReplicaOptions {
  const fail = (what: string): never => {
    throw new Error(`invalid start message from the runtime: ${what}`);
  };
  const obj = (v: unknown, what: string): Record<string, unknown> =>
    (typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : fail(`${what} is not an object`));
  const text = (v: unknown, what: string): string => (typeof v === 'string' && v !== '' ? v : fail(`${what} is not a non-empty string`));
  const num = (v: unknown, what: string): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : fail(`${what} is not a number ≥ 0`));
  const m = obj(msg, 'the message');
  if (m.type !== 'start') fail(`type ${JSON.stringify(m.type)}`);
  const o = obj(m.options, 'options');
  const flavor = o.flavor;
  if (!isFlavorName(flavor)) return fail(`unknown flavor ${JSON.stringify(flavor)}`);
  const lo = obj(o.loadOptions, 'loadOptions');
  const memoryLimitBytes = lo.memoryLimitBytes === undefined ? undefined : num(lo.memoryLimitBytes, 'loadOptions.memoryLimitBytes');
  const pythonExecutable = lo.pythonExecutable === undefined ? undefined : text(lo.pythonExecutable, 'loadOptions.pythonExecutable');
  const pythonLinkFd = lo.pythonLinkFd === undefined ? undefined : num(lo.pythonLinkFd, 'loadOptions.pythonLinkFd');
  const workloadType = WORKLOAD_TYPES.find((w) => w === lo.workloadType) ?? fail(`unknown workloadType ${JSON.stringify(lo.workloadType)}`);
  const b = obj(o.batching, 'batching');
  if (typeof b.enabled !== 'boolean') fail('batching.enabled is not a boolean');
  const preferred = Array.isArray(b.preferredBatchSizes) ? b.preferredBatchSizes.map((x, i) => num(x, `batching.preferredBatchSizes[${i}]`)) : fail('batching.preferredBatchSizes is not an array');
  const u = o.user === undefined ? undefined : obj(o.user, 'user');
  const user = u === undefined ? undefined : { uid: num(u.uid, 'user.uid'), gid: num(u.gid, 'user.gid') };
  const execution = o.execution === undefined ? undefined : EXECUTION_MODES.find((e) => e === o.execution) ?? fail(`unknown execution ${JSON.stringify(o.execution)}`);
  const logLevel = o.logLevel === undefined || isLogLevel(o.logLevel) ? o.logLevel : fail(`unknown logLevel ${JSON.stringify(o.logLevel)}`);
  const f = o.family === undefined ? undefined : obj(o.family, 'family');
  if (f !== undefined && typeof f.sessionFallback !== 'boolean') fail('family.sessionFallback is not a boolean');
  const family = f === undefined ? undefined : { cacheBytes: num(f.cacheBytes, 'family.cacheBytes'), sessionFallback: f.sessionFallback === true };
  return {
    socketPath: text(o.socketPath, 'socketPath'),
    dir: text(o.dir, 'dir'),
    flavor,
    // A family replica loads its models later, each with its own file.
    loadOptions: {
      modelFile: family === undefined ? text(lo.modelFile, 'loadOptions.modelFile') : '', workloadType, intraOpThreads: num(lo.intraOpThreads, 'loadOptions.intraOpThreads'),
      ...(pythonExecutable === undefined ? {} : { pythonExecutable }),
      ...(pythonLinkFd === undefined ? {} : { pythonLinkFd }),
      ...(memoryLimitBytes === undefined ? {} : { memoryLimitBytes }),
    },
    modelName: text(o.modelName, 'modelName'),
    modelVersion: family === undefined ? text(o.modelVersion, 'modelVersion') : typeof o.modelVersion === 'string' ? o.modelVersion : '',
    maxBodyBytes: num(o.maxBodyBytes, 'maxBodyBytes'),
    drainTimeoutMs: num(o.drainTimeoutMs, 'drainTimeoutMs'),
    maxRowsPerRequest: num(o.maxRowsPerRequest, 'maxRowsPerRequest'),
    maxJsonDepth: num(o.maxJsonDepth, 'maxJsonDepth'),
    maxJsonElements: num(o.maxJsonElements, 'maxJsonElements'),
    batching: {
      enabled: b.enabled as boolean,
      maxBatchSize: num(b.maxBatchSize, 'batching.maxBatchSize'),
      maxQueueDelayUs: num(b.maxQueueDelayUs, 'batching.maxQueueDelayUs'),
      preferredBatchSizes: preferred,
    },
    ...(execution === undefined ? {} : { execution }),
    ...(user === undefined ? {} : { user }),
    ...(logLevel === undefined ? {} : { logLevel }),
    ...(family === undefined ? {} : { family }),
  };
}
