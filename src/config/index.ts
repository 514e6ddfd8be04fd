/**
 * Configuration: one strict zod schema (unknown keys are errors) → its defaults → a compiled,
 * frozen object, cross-field rules checked in the compile step. Users write human units
 * ("30s", "16MiB"); the compiled form carries numbers with the unit in the name
 * (`requestTimeoutMs: 30000`, `maxBodyBytes: 16777216`). Errors name the key, the value and what
 * is allowed.
 */
import os from 'node:os';
import { z } from 'zod';
import { validateKey, type S3Settings } from '../artifacts/index.js';
import { FerryError, describeValue, invalidParameter } from '../errors.js';
import { DEFAULT_MAX_JSON_DEPTH, DEFAULT_MAX_JSON_ELEMENTS, DEFAULT_MAX_ROWS_PER_REQUEST } from './defaults.js';
export { DEFAULT_MAX_JSON_DEPTH, DEFAULT_MAX_JSON_ELEMENTS, DEFAULT_MAX_ROWS_PER_REQUEST } from './defaults.js';
export type { SchemasFit } from './request-fits.js';

/** What a GPU_* replica does when the server has no GPU for it: fail to start, or run on the CPU. */
export const GPU_FALLBACKS = ['fail', 'cpu'] as const;
export type GpuFallback = (typeof GPU_FALLBACKS)[number];
/** An entry of the `gpus` setting: an index ("0"), a GPU UUID ("GPU-5d3e…") or a MIG UUID ("MIG-…"). */
export const GPU_ENTRY_PATTERN = /^(\d{1,3}|GPU-[0-9A-Fa-f-]{8,64}|MIG-[0-9A-Za-z/-]{8,80})$/;

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS_BYTES: Record<string, number> = {
  B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3,
};

/** "30s" → 30000, "250ms" → 250, "2m" → 120000, "30d" → 2592000000; a bare number is milliseconds. Undefined when invalid. */
export function parseDurationMs(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(value.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * (DURATION_UNITS_MS[m[2] ?? 'ms'] ?? 1));
}

/** "16MiB" → 16777216, "2GB" → 2e9; a bare number is bytes. Undefined when invalid. */
export function parseBytes(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  const m = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?$/.exec(value.trim());
  if (!m) return undefined;
  return Math.floor(Number(m[1]) * (SIZE_UNITS_BYTES[m[2] ?? 'B'] ?? 1));
}


const duration = z.union([z.string(), z.number()]);
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const size = z.union([z.string(), z.number()]);

/** What a user may set for `ferry server` (flags or a JSON config file). Unknown keys are errors. */
export const serverConfigSchema = z.strictObject({
  host: z.string().min(1).default('127.0.0.1'),
  port: z.number().int().min(0).max(65535).default(8080),
  /**
   * Port of the OIP v2 gRPC front end (KServe's GRPCInferenceService) on `host`, with the same
   * TLS as HTTP; 0 picks a free port. Unset: no gRPC (Triton's and KServe's usual port is 8081).
   */
  grpcPort: z.number().int().min(0).max(65535).optional(),
  dataDir: z.string().min(1).default('./.ferry'),
  /** Largest artifact upload accepted (one file). */
  maxUploadSize: size.default('2GiB'),
  /** Largest API request body (JSON) accepted. */
  maxBodySize: size.default('16MiB'),
  /** How long a replica may take to load its model and report ready. */
  replicaStartTimeout: duration.default('60s'),
  /** How long a stopping replica may take to finish its in-flight requests. */
  replicaDrainTimeout: duration.default('30s'),
  /** A replica whose resident memory grows past this is killed and restarted. */
  replicaMemoryLimit: size.default('2GiB'),
  /**
   * The inspector process (which parses uploaded artifacts at registration) is killed past this
   * resident memory, and its V8 heap is limited to it; the artifact it was reading fails
   * registration. Real inspections use a few MiB over the ~60 MiB Node needs to start.
   */
  inspectorMemoryLimit: size.default('256MiB'),
  /** Longest one artifact's inspection may take before the inspector is killed and the version fails. */
  inspectionTimeout: duration.default('30s'),
  /** Generic replica processes kept started (runtime loaded, no model) so cold starts skip process start-up. */
  warmPoolSize: z.number().int().min(0).max(64).default(1),
  /** Default time the gateway waits for a model's answer (per endpoint: request_timeout_ms). */
  requestTimeout: duration.default('30s'),
  /** Requests one replica carries at once; more wait in the gateway or go to another replica. */
  replicaMaxConcurrency: z.number().int().min(1).max(100_000).default(64),
  /**
   * Gateway processes: each accepts connections on the server's port and serves inference, while
   * one primary process runs the control plane (docs/architecture.md, "Gateway workers"). 1 serves
   * everything in one process. Default: the machine's cores (`os.availableParallelism()`) with the
   * local runtime, 1 on Kubernetes (scale out with more server pods there).
   */
  gatewayWorkers: z.number().int().min(1).max(256).optional(),
  /** Requests that may wait per served entity for a replica with room (scale from zero, bursts). */
  bufferDepth: z.number().int().min(0).max(1_000_000).default(1000),
  /** How long a request may wait in that buffer before a 503. */
  bufferTimeout: duration.default('10s'),
  logLevel: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  /** Largest request head (request line plus headers) accepted; more is answered 431. */
  maxHeaderSize: size.default('16KiB'),
  /** A client must send its whole request head within this time (slow-header clients get 408). */
  headersTimeout: duration.default('10s'),
  /** A client must send its whole request, body included, within this time (slow-body clients get 408). */
  bodyTimeout: duration.default('10m'),
  /** Deepest nesting of arrays and objects accepted in a JSON body. */
  maxJsonDepth: z.number().int().min(2).max(10_000).default(DEFAULT_MAX_JSON_DEPTH),
  /** Most values (numbers, strings, arrays, objects...) accepted in one JSON body. */
  maxJsonElements: z.number().int().min(1).max(1_000_000_000).default(DEFAULT_MAX_JSON_ELEMENTS),
  /** Most rows (the first dimension of each input) one inference request may carry. */
  maxRowsPerRequest: z.number().int().min(1).max(100_000_000).default(DEFAULT_MAX_ROWS_PER_REQUEST),
  /** PEM certificate chain file: with tlsKey, the server speaks HTTPS only. */
  tlsCert: z.string().min(1).optional(),
  /** PEM private key file for tlsCert. */
  tlsKey: z.string().min(1).optional(),
  /**
   * When the server runs as root, replicas drop to this user after loading their model: a user name
   * from /etc/passwd or "uid:gid". Default "nobody".
   */
  replicaUser: z.string().min(1).default('nobody'),
  /**
   * The Python interpreter that python-flavor models (MLflow python_function) run in, as it is
   * (MLflow's `env_manager: local`): a path, or a command looked up on the server's PATH.
   * Default "python3".
   */
  python: z.string().min(1).default('python3'),
  /**
   * How a python model's environment is made: "local" runs it in `python` as it is; "virtualenv"
   * builds a venv per distinct python_env.yaml + requirements.txt (from `python`, with its system
   * site-packages), once, before the first replica, cached under the data directory.
   */
  pythonEnvManager: z.enum(['local', 'virtualenv']).default('local'),
  /**
   * Extra `pip install` arguments for virtualenv builds, e.g. ["--index-url", "https://pypi.internal/simple"]
   * or ["--no-index", "--find-links", "/srv/wheels"]. Default none: pip's default index.
   */
  pythonPipArgs: z.array(z.string().min(1)).default([]),
  /**
   * Idle Python fork servers kept per Python environment (the Python warm pool): each has imported
   * `pythonPreload` and forks the workers of one model's replicas, so a python replica starts in
   * milliseconds and its replicas share those pages. 0 disables it (each replica starts its own
   * worker). Default 1 (~120 MiB resident while idle).
   */
  pythonWarmPoolSize: z.number().int().min(0).max(16).default(1),
  /** Modules a Python fork server imports before it forks. Default numpy, pandas, scikit-learn and cloudpickle. */
  pythonPreload: z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_.]*$/)).optional(),
  /**
   * Most processes and threads in one local sandbox (a replica, or a Python fork server with its
   * model's workers), enforced with a pids cgroup where the host lets the server make one; a
   * sandbox that reaches it (a fork bomb) is killed. 0: no limit. Default 512.
   */
  maxProcessesPerSandbox: z.number().int().min(0).max(1_000_000).default(512),
  /**
   * The OS sandbox (bubblewrap) around every local replica process: "auto" uses it when `bwrap`
   * works on this host (checked at start), "bwrap" requires it (the start fails otherwise), "none"
   * never uses it. Kubernetes replicas are isolated by their pods instead.
   */
  sandbox: z.enum(['auto', 'bwrap', 'none']).default('auto'),
  /**
   * Whether replicas that run user code (js and python models) may start without the sandbox. Default
   * false: they are refused (their deployment FAILED, naming this setting).
   */
  allowUnsandboxedUserCode: z.boolean().default(false),
  /**
   * The GPUs local replicas of GPU_* workload types may use, one per replica: "auto" (default) finds
   * them (/proc/driver/nvidia/gpus, else `nvidia-smi -L`; only those in the server's
   * CUDA_VISIBLE_DEVICES when it is set), or a list of GPU UUIDs ("GPU-…", "MIG-…") or indices ("0").
   */
  gpus: z.union([z.literal('auto'), z.array(z.string().regex(GPU_ENTRY_PATTERN, 'a GPU index ("0"), GPU UUID ("GPU-…") or MIG UUID ("MIG-…")')).max(256)]).default('auto'),
  /** What a GPU_* replica does when the server has no GPU for it: "fail" (default: it does not start) or "cpu" (it runs on the CPU). */
  gpuFallback: z.enum(GPU_FALLBACKS).default('fail'),
  /**
   * NVIDIA driver libraries bound read-only into a GPU replica's sandbox: "auto" (default) takes
   * the driver's libraries `ldconfig -p` lists (libcuda, libnvidia-*, ...), or a list of absolute paths. Those under the
   * system directories the sandbox binds anyway (/usr, /lib*) need no bind and get none.
   */
  gpuLibraries: z.union([z.literal('auto'), z.array(z.string().regex(/^\//, 'an absolute path')).max(1024)]).default('auto'),
  /** Inference table rows older than this are deleted (at start and then periodically). */
  inferenceTableRetention: duration.default('30d'),
  /** Inference table rows held in memory awaiting their write; more are dropped and counted. */
  inferenceTableBufferSize: z.number().int().min(1).max(1_000_000).default(10_000),
  /** Audit log rows older than this are deleted (at start and then hourly). */
  auditRetention: duration.default('90d'),
  /**
   * Audit rows for calls without a valid token, per minute; the calls over it are summed up in one
   * row (with their count) when the minute ends, so anonymous traffic cannot grow the log without bound.
   */
  auditAnonymousRowsPerMinute: z.number().int().min(1).max(1_000_000).default(100),
  /**
   * Most client connections the server holds at once; more are closed as they arrive. Keeps a
   * flood of connections from using up the process's file descriptors. Unset: three quarters of
   * the open-file limit (`ulimit -n`), at most 10,000.
   */
  maxConnections: z.number().int().min(1).max(1_000_000).optional(),
  /**
   * Connections from one client address that have not yet sent a whole request head; more from
   * that address are closed on arrival. A caller without a valid token costs a connection only
   * until its head is in (its 401 closes it), so this bounds what one address can hold.
   */
  maxPendingConnectionsPerIp: z.number().int().min(1).max(1_000_000).default(128),

  /**
   * Base URL of an OpenTelemetry collector's OTLP/HTTP receiver, e.g. "http://127.0.0.1:4318":
   * gateway spans are POSTed to `{otlpEndpoint}/v1/traces` as OTLP JSON. Unset: no export.
   */
  otlpEndpoint: z.string().min(1).optional(),
  /**
   * Metadata store in Postgres instead of SQLite in the data directory, e.g.
   * "postgres://ferry:secret@db:5432/ferry" (docs/storage.md). Unset: SQLite (`<dataDir>/ferry.db`).
   */
  databaseUrl: z.string().min(1).optional(),
  /**
   * Where model artifacts live: `{"kind": "local"}` (the data directory) or an S3 bucket,
   * `{"kind": "s3", "bucket": "models", "endpoint": "http://127.0.0.1:9000", "forcePathStyle": true}`.
   */
  artifactStore: z.discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('local') }),
    z.strictObject({
      kind: z.literal('s3'),
      bucket: z.string().min(1),
      /** Key prefix inside the bucket, e.g. "ferry/". */
      prefix: z.string().default(''),
      /** S3-compatible server (MinIO, Ceph...); unset: AWS. */
      endpoint: z.string().min(1).optional(),
      region: z.string().min(1).default('us-east-1'),
      forcePathStyle: z.boolean().default(false),
      /** Unset: the standard AWS chain (AWS_ACCESS_KEY_ID..., ~/.aws, instance roles). */
      accessKeyId: z.string().min(1).optional(),
      secretAccessKey: z.string().min(1).optional(),
      sessionToken: z.string().min(1).optional(),
    }),
  ]).default({ kind: 'local' }),
  /**
   * Where replicas run: `{"kind": "local"}` (child processes of the server, the default) or pods,
   * `{"kind": "kubernetes", "namespace": "ferry", "image": "ghcr.io/example/ferry:1.0"}`.
   */
  runtime: z.discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('local') }),
    z.strictObject({
      kind: z.literal('kubernetes'),
      /** Namespace of the replicas' Deployments, Services, NetworkPolicies and PodDisruptionBudgets. */
      namespace: z.string().regex(DNS_LABEL, 'expected a DNS-1123 label (lower-case letters, digits and "-", at most 63 characters)'),
      /** The Ferry image replicas run (`ferry replica`). */
      image: z.string().min(1),
      /**
       * The image python-flavor replicas run: the Ferry image built with Python and the models'
       * packages (Dockerfile build argument PYTHON_PACKAGES). Default: `image`.
       */
      pythonImage: z.string().min(1).optional(),
      imagePullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']).optional(),
      /** Port replicas listen on in their pods. */
      replicaPort: z.number().int().min(1).max(65535).default(8080),
      /** Labels of the Ferry server pods: replicas' NetworkPolicy admits only these. */
      serverPodLabels: z.record(z.string(), z.string()).default({ 'app.kubernetes.io/name': 'ferry', 'app.kubernetes.io/component': 'server' }),
      /** Non-root uid (and gid) of replica containers. */
      replicaUid: z.number().int().min(1).max(2_147_483_647).default(10001),
      /** Model threads per replica, also its CPU request (its limit is one more). */
      replicaThreads: z.number().int().min(1).max(256).default(1),
      /** A Secret mapped into replicas' environment: the S3 credentials of `artifactStore`. */
      artifactStoreSecret: z.string().regex(DNS_SUBDOMAIN, 'expected a Secret name (a DNS-1123 subdomain)').optional(),
      /** How long replicas found running at start wait to be adopted before they are removed. */
      adoptionGrace: duration.default('2m'),
      /**
       * Several server replicas elect one leader over this Lease (the control plane: reconciler,
       * rollouts, autoscaler); the others serve inference only. A leader that dies is replaced
       * after `leaseDuration` at most; `renewInterval` is how often the leader renews and the
       * others look, below two thirds of `leaseDuration` (the leader's renew deadline).
       */
      leaseName: z.string().regex(DNS_SUBDOMAIN, 'expected a Lease name (a DNS-1123 subdomain)').default('ferry-server-leader'),
      leaseDuration: duration.default('15s'),
      renewInterval: duration.default('2s'),
    }),
  ]).default({ kind: 'local' }),
});

const MIN_INSPECTOR_MEMORY_BYTES = 96 * 1024 * 1024;

export type ServerConfigInput = z.input<typeof serverConfigSchema>;

export interface ServerConfig {
  readonly host: string;
  readonly port: number;
  /** Undefined: no gRPC front end. */
  readonly grpcPort: number | undefined;
  readonly dataDir: string;
  readonly maxUploadBytes: number;
  readonly maxBodyBytes: number;
  readonly replicaStartTimeoutMs: number;
  readonly replicaDrainTimeoutMs: number;
  readonly replicaMemoryLimitBytes: number;
  readonly inspectorMemoryLimitBytes: number;
  readonly inspectionTimeoutMs: number;
  readonly warmPoolSize: number;
  readonly requestTimeoutMs: number;
  readonly replicaMaxConcurrency: number;
  readonly bufferDepth: number;
  readonly bufferTimeoutMs: number;
  /** Gateway processes (see the schema); 1: one process serves everything. */
  readonly gatewayWorkers: number;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
  readonly maxHeaderBytes: number;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  readonly maxJsonDepth: number;
  readonly maxJsonElements: number;
  readonly maxRowsPerRequest: number;
  /** Both set, or neither (checked at compile). */
  readonly tls: { certFile: string; keyFile: string } | undefined;
  readonly replicaUser: string;
  /** See the schema's `python`. */
  readonly python: string;
  readonly pythonEnvManager: 'local' | 'virtualenv';
  readonly pythonPipArgs: readonly string[];
  readonly pythonWarmPoolSize: number;
  readonly pythonPreload: readonly string[] | undefined;
  readonly maxProcessesPerSandbox: number;
  readonly sandbox: 'auto' | 'bwrap' | 'none';
  readonly allowUnsandboxedUserCode: boolean;
  /** See the schema's `gpus`, `gpuFallback` and `gpuLibraries`. */
  readonly gpus: 'auto' | readonly string[];
  readonly gpuFallback: GpuFallback;
  readonly gpuLibraries: 'auto' | readonly string[];
  readonly inferenceTableRetentionMs: number;
  readonly inferenceTableBufferRows: number;
  readonly auditRetentionMs: number;
  readonly auditAnonymousRowsPerMinute: number;
  /** Undefined: derived from the open-file limit when the server listens (see src/server/listen.ts). */
  readonly maxConnections: number | undefined;
  readonly maxPendingConnectionsPerIp: number;
  readonly otlpEndpoint: string | undefined;
  /** A postgres:// URL, or undefined for SQLite in the data directory. */
  readonly databaseUrl: string | undefined;
  /** Local: `<dataDir>/artifacts`; S3: the bucket, with copies for replicas in `<dataDir>/artifact-cache`. */
  readonly artifactStore: { readonly kind: 'local' } | ({ readonly kind: 's3' } & Readonly<S3Settings>);
  /** Local child processes, or Kubernetes pods (the kubeconfig comes from the environment: KUBECONFIG, or the pod's service account). */
  readonly runtime: { readonly kind: 'local' } | KubernetesRuntimeConfig;
}

export interface KubernetesRuntimeConfig {
  readonly kind: 'kubernetes';
  readonly namespace: string;
  readonly image: string;
  readonly pythonImage: string | undefined;
  readonly imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never' | undefined;
  readonly replicaPort: number;
  readonly serverPodLabels: Readonly<Record<string, string>>;
  readonly replicaUid: number;
  readonly replicaThreads: number;
  readonly artifactStoreSecret: string | undefined;
  readonly adoptionGraceMs: number;
  /** The Lease the server replicas elect their leader with. */
  readonly leaseName: string;
  readonly leaseDurationMs: number;
  readonly renewIntervalMs: number;
}

/** Validates and compiles server settings; throws a FerryError naming the first bad key. */
export function compileServerConfig(input: unknown): ServerConfig {
  const parsed = serverConfigSchema.safeParse(input ?? {});
  if (!parsed.success) throw configError(parsed.error, input);
  const c = parsed.data;
  const compiled: ServerConfig = Object.freeze({
    host: c.host,
    port: c.port,
    grpcPort: c.grpcPort,
    dataDir: c.dataDir,
    maxUploadBytes: requireUnit('maxUploadSize', c.maxUploadSize, parseBytes, 'a size such as "2GiB" or a byte count'),
    maxBodyBytes: requireUnit('maxBodySize', c.maxBodySize, parseBytes, 'a size such as "16MiB" or a byte count'),
    replicaStartTimeoutMs: requireUnit('replicaStartTimeout', c.replicaStartTimeout, parseDurationMs, 'a duration such as "60s"'),
    replicaDrainTimeoutMs: requireUnit('replicaDrainTimeout', c.replicaDrainTimeout, parseDurationMs, 'a duration such as "30s"'),
    replicaMemoryLimitBytes: requireUnit('replicaMemoryLimit', c.replicaMemoryLimit, parseBytes, 'a size such as "2GiB"'),
    inspectorMemoryLimitBytes: requireUnit('inspectorMemoryLimit', c.inspectorMemoryLimit, parseBytes, 'a size such as "256MiB"'),
    inspectionTimeoutMs: requireUnit('inspectionTimeout', c.inspectionTimeout, parseDurationMs, 'a duration such as "30s"'),
    warmPoolSize: c.warmPoolSize,
    requestTimeoutMs: requireUnit('requestTimeout', c.requestTimeout, parseDurationMs, 'a duration such as "30s"'),
    replicaMaxConcurrency: c.replicaMaxConcurrency,
    bufferDepth: c.bufferDepth,
    bufferTimeoutMs: requireUnit('bufferTimeout', c.bufferTimeout, parseDurationMs, 'a duration such as "10s"'),
    gatewayWorkers: c.gatewayWorkers ?? (c.runtime.kind === 'local' ? os.availableParallelism() : 1),
    logLevel: c.logLevel,
    maxHeaderBytes: requireUnit('maxHeaderSize', c.maxHeaderSize, parseBytes, 'a size such as "16KiB"'),
    headersTimeoutMs: requireUnit('headersTimeout', c.headersTimeout, parseDurationMs, 'a duration such as "10s"'),
    bodyTimeoutMs: requireUnit('bodyTimeout', c.bodyTimeout, parseDurationMs, 'a duration such as "10m"'),
    maxJsonDepth: c.maxJsonDepth,
    maxJsonElements: c.maxJsonElements,
    maxRowsPerRequest: c.maxRowsPerRequest,
    tls: compileTls(c.tlsCert, c.tlsKey),
    replicaUser: c.replicaUser,
    python: c.python,
    pythonEnvManager: c.pythonEnvManager,
    pythonPipArgs: c.pythonPipArgs,
    pythonWarmPoolSize: c.pythonWarmPoolSize,
    pythonPreload: c.pythonPreload,
    maxProcessesPerSandbox: c.maxProcessesPerSandbox,
    sandbox: c.sandbox,
    allowUnsandboxedUserCode: c.allowUnsandboxedUserCode,
    gpus: c.gpus,
    gpuFallback: c.gpuFallback,
    gpuLibraries: c.gpuLibraries,
    inferenceTableRetentionMs: requireUnit('inferenceTableRetention', c.inferenceTableRetention, parseDurationMs, 'a duration such as "30d" or "12h"'),
    inferenceTableBufferRows: c.inferenceTableBufferSize,
    auditRetentionMs: requireUnit('auditRetention', c.auditRetention, parseDurationMs, 'a duration such as "90d"'),
    auditAnonymousRowsPerMinute: c.auditAnonymousRowsPerMinute,
    maxConnections: c.maxConnections,
    maxPendingConnectionsPerIp: c.maxPendingConnectionsPerIp,
    otlpEndpoint: compileOtlpEndpoint(c.otlpEndpoint),
    databaseUrl: compileDatabaseUrl(c.databaseUrl),
    artifactStore: compileArtifactStore(c.artifactStore),
    runtime: compileRuntime(c.runtime),
  });
  // node:http refuses a head deadline past the whole request's (0 turns either off).
  if (compiled.bodyTimeoutMs > 0 && compiled.headersTimeoutMs > compiled.bodyTimeoutMs) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${describeValue(c.headersTimeout)} for 'headersTimeout': expected at most bodyTimeout (${describeValue(c.bodyTimeout)}), which covers the head too.`);
  }
  // Node alone needs ~60 MiB resident: below 96 MiB every inspection would fail.
  if (compiled.inspectorMemoryLimitBytes < MIN_INSPECTOR_MEMORY_BYTES) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${describeValue(c.inspectorMemoryLimit)} for 'inspectorMemoryLimit': expected at least 96MiB.`);
  }
  if (compiled.inspectionTimeoutMs <= 0) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${describeValue(c.inspectionTimeout)} for 'inspectionTimeout': expected a positive duration such as "30s".`);
  }
  // Audit retention is enforced hourly; a shorter one would not hold.
  if (compiled.auditRetentionMs < 86_400_000) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${describeValue(c.auditRetention)} for 'auditRetention': expected at least 1 day ("1d").`);
  }
  // A follower server builds its routes from the store (src/control/follower.ts), not from a primary's table.
  if (compiled.gatewayWorkers > 1 && compiled.runtime.kind !== 'local') {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${describeValue(c.gatewayWorkers)} for 'gatewayWorkers': expected 1 with the Kubernetes runtime (run more server pods instead).`);
  }
  // Retention is enforced at most once a minute (see src/inference-tables), so less could not be kept.
  if (compiled.inferenceTableRetentionMs < 60_000) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${describeValue(c.inferenceTableRetention)} for 'inferenceTableRetention': expected at least 1 minute ("1m").`);
  }
  return compiled;
}

function compileOtlpEndpoint(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '') {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${describeValue(value)} for 'otlpEndpoint': expected an http:// or https:// URL without query, e.g. "http://127.0.0.1:4318".`);
  }
  return value;
}

/** The URL must name Postgres; the error shows only its scheme, as the rest may hold a password. */
function compileDatabaseUrl(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(value)?.[1];
  if (scheme !== 'postgres' && scheme !== 'postgresql') {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value for 'databaseUrl' (scheme ${describeValue(scheme ?? '')}): expected a postgres:// or postgresql:// URL, e.g. "postgres://ferry:secret@db:5432/ferry".`);
  }
  return value;
}

function compileArtifactStore(c: z.infer<typeof serverConfigSchema>['artifactStore']): ServerConfig['artifactStore'] {
  if (c.kind === 'local') return { kind: 'local' };
  if (c.endpoint !== undefined && !/^https?:\/\/[^/?#]+\/?$/.test(c.endpoint)) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${describeValue(c.endpoint)} for 'artifactStore.endpoint': expected an http:// or https:// URL without a path, e.g. "http://127.0.0.1:9000".`);
  }
  // "ferry", "/ferry/" and "ferry/" all mean the keys start with "ferry/".
  const prefix = c.prefix.replace(/^\/+|\/+$/g, '');
  if (prefix !== '') {
    try {
      validateKey(prefix, 'prefix');
    } catch (err) {
      throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${describeValue(c.prefix)} for 'artifactStore.prefix': ${(err as Error).message}`);
    }
  }
  if ((c.accessKeyId === undefined) !== (c.secretAccessKey === undefined)) {
    const missing = c.accessKeyId === undefined ? 'accessKeyId' : 'secretAccessKey';
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value undefined for 'artifactStore.${missing}': explicit S3 credentials need both accessKeyId and secretAccessKey (or neither, for the AWS credential chain).`);
  }
  return {
    kind: 's3', bucket: c.bucket, prefix: prefix === '' ? '' : `${prefix}/`, endpoint: c.endpoint, region: c.region, forcePathStyle: c.forcePathStyle,
    credentials: c.accessKeyId === undefined || c.secretAccessKey === undefined ? undefined : {
      accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, ...(c.sessionToken === undefined ? {} : { sessionToken: c.sessionToken }),
    },
  };
}

function compileRuntime(c: z.infer<typeof serverConfigSchema>['runtime']): ServerConfig['runtime'] {
  if (c.kind === 'local') return { kind: 'local' };
  const leaseDurationMs = requireUnit('runtime.leaseDuration', c.leaseDuration, parseDurationMs, 'a duration such as "15s"');
  const renewIntervalMs = requireUnit('runtime.renewInterval', c.renewInterval, parseDurationMs, 'a duration such as "2s"');
  // The leader's renew deadline is two thirds of the lease duration; it must renew (at least) once within it.
  if (!(renewIntervalMs > 0 && renewIntervalMs < Math.floor((leaseDurationMs * 2) / 3))) {
    throw invalidParameter('runtime.renewInterval', c.renewInterval, `a positive duration below two thirds of runtime.leaseDuration (${leaseDurationMs} ms)`);
  }
  return {
    kind: 'kubernetes', namespace: c.namespace, image: c.image, pythonImage: c.pythonImage, imagePullPolicy: c.imagePullPolicy,
    replicaPort: c.replicaPort, serverPodLabels: c.serverPodLabels, replicaUid: c.replicaUid,
    replicaThreads: c.replicaThreads, artifactStoreSecret: c.artifactStoreSecret,
    adoptionGraceMs: requireUnit('runtime.adoptionGrace', c.adoptionGrace, parseDurationMs, 'a duration such as "2m"'),
    leaseName: c.leaseName, leaseDurationMs, renewIntervalMs,
  };
}

function compileTls(certFile: string | undefined, keyFile: string | undefined): ServerConfig['tls'] {
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined) {
    const missing = certFile === undefined ? 'tlsCert' : 'tlsKey';
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value undefined for '${missing}': HTTPS needs both tlsCert and tlsKey.`);
  }
  return { certFile, keyFile };
}

function requireUnit(
  key: string,
  value: string | number,
  parse: (v: string | number) => number | undefined,
  expected: string,
): number {
  const n = parse(value);
  if (n === undefined) throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${describeValue(value)} for '${key}': expected ${expected}.`);
  return n;
}

/** Turns the first zod issue into a FerryError naming the key, the value and what is allowed. */
export function configError(error: z.ZodError, input: unknown, prefix = ''): FerryError {
  const issue = error.issues[0];
  if (!issue) return new FerryError('INVALID_PARAMETER_VALUE', 'Invalid configuration.');
  // Array indexes as in the API docs and other messages: `rate_limits[0].calls`.
  const key = prefix + issue.path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`)).join('');
  if (issue.code === 'unrecognized_keys') {
    // A prefix names the object ('config.'); unknown keys at its top level are in 'config'.
    const where = key === '' ? '' : ` in '${key.replace(/\.$/, '')}'`;
    return new FerryError('INVALID_PARAMETER_VALUE', `Unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}${where}.`);
  }
  let value: unknown = input;
  for (const p of issue.path) value = typeof value === 'object' && value !== null ? (value as Record<PropertyKey, unknown>)[p] : undefined;
  return new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${describeValue(value)} for '${key}': ${issue.message}.`);
}
