/**
 * The runtime interface and the shapes it passes (a leaf of types): the runtimes import these
 * from here, not from ./index.ts, which imports the runtimes.
 */
import type { ReplicaAddress } from '../channel/index.js';
import type { FlavorName, WorkloadType } from '../flavors/index.js';
import type { BatchingConfig } from '../replica/options.js';

export type { BatchingConfig } from '../replica/options.js';
export type { ReplicaAddress } from '../channel/index.js';

/** Everything a runtime needs to start one replica of one served entity. */
export interface ReplicaSpec {
  /** Unique id of this replica, e.g. "iris-ep.champion.r3f9c"; safe as a file name. */
  id: string;
  /** Endpoint and served-entity names this replica belongs to (for logs and cleanup). */
  endpoint: string;
  servedEntity: string;
  /** Artifact directory of the model version, on this machine (the Kubernetes runtime's pods fetch `artifactKey` instead). */
  artifactDir: string;
  /**
   * The model version's tree in the artifact store and its recorded tree digest (sha256). The
   * control plane sets both; runtimes whose replicas fetch their own model (Kubernetes pods)
   * require them, and the replica refuses a tree that does not hash to `artifactSha256`.
   */
  artifactKey?: string;
  artifactSha256?: string;
  /** Model file inside `artifactDir`. */
  modelFile: string;
  flavor: FlavorName;
  workloadType: WorkloadType;
  /** Name and version the replica answers to under /v2/models/{name}/versions/{version}. */
  modelName: string;
  modelVersion: string;
  /** The replica is killed (and reported as exited) when its resident memory exceeds this. */
  memoryLimitBytes: number;
  /** Largest request body the replica accepts. */
  maxBodyBytes: number;
  /** Most rows (first dimension of each input) one request may carry. */
  maxRowsPerRequest: number;
  /** Deepest nesting of arrays and objects accepted in a JSON body. */
  maxJsonDepth: number;
  /** Most values accepted in one JSON body. */
  maxJsonElements: number;
  batching: BatchingConfig;
  /**
   * Set for a replica of a model family (docs/multi-model.md): it loads no model at start
   * (`artifactDir` is empty) and keeps the members it is asked for in a cache of `cacheBytes`.
   */
  family?: {
    cacheBytes: number;
    sessionFallback: boolean;
    /**
     * A member's model file, read from the artifact store and checked against the version's
     * sha256 (the server's lookup; rejects with a FerryError for a model that is not a READY
     * member of the family, or whose artifact is over `cacheBytes`). The runtime sends it to
     * the replica.
     */
    stage: (name: string, version: number) => Promise<{ modelFile: string; bytes: Buffer }>;
  };
}


export interface ReplicaHandle {
  id: string;
  spec: ReplicaSpec;
  address: ReplicaAddress;
  /** OS process id (local runtime), for diagnostics. */
  pid: number | undefined;
  /**
   * Cold-start cost: milliseconds from the `startReplica` call to the replica answering ready
   * (e.g. ~270 ms for linear.onnx in a freshly spawned local replica). Set once it is ready, by
   * runtimes that measure it.
   */
  coldStartMs?: number;
  /**
   * Whether the replica runs in a pre-started generic process taken from a warm pool (local
   * runtime, `warmPoolSize`) rather than one started for it.
   */
  fromPool?: boolean;
}

export type ReplicaExitReason = 'crashed' | 'oom' | 'processes' | 'protocol';

/** Why a replica stopped without being asked to. */
export interface ReplicaExit {
  id: string;
  /** Exit code, or undefined when killed by a signal. */
  code: number | undefined;
  signal: string | undefined;
  /**
   * 'crashed' (exited on its own), 'oom' (over its memory limit, killed by the runtime),
   * 'processes' (its sandbox reached its process limit, e.g. a fork bomb: killed by the runtime),
   * 'protocol' (sent the local runtime something that is not a valid control message, killed).
   */
  reason: ReplicaExitReason;
  /** The last lines of the replica's log, for the entity's state message. */
  lastLogLines: string;
}

export interface Runtime {
  /**
   * Whether replicas fetch their model from the artifact store themselves (`artifactKey`,
   * `artifactSha256`; Kubernetes pods): then the control plane does not copy it to its own disk
   * and `artifactDir` is empty.
   */
  readonly fetchesArtifacts?: boolean;
  /** The local runtime's process-count limit per sandbox, or why there is none (logged at start). */
  readonly processLimit?: string;
  /** The local runtime's GPUs for `GPU_*` replicas, found at open, and where from (logged at start). */
  readonly gpus?: { readonly devices: readonly { id: string; name?: string }[]; readonly source: string };
  /**
   * Starts a replica and resolves once it reports ready. Rejects with a FerryError
   * (MODEL_ERROR) whose message holds the replica's own error (e.g. the model failed to load)
   * when it exits before that, or DEADLINE_EXCEEDED after `startTimeoutMs`; nothing is left running.
   */
  startReplica(spec: ReplicaSpec): Promise<ReplicaHandle>;
  /** Stops a replica: SIGTERM (it drains in-flight requests), SIGKILL after `drainTimeoutMs`. */
  stopReplica(id: string): Promise<void>;
  /** Called once for each replica that exits without `stopReplica` (crash, OOM kill). */
  onExit(listener: (exit: ReplicaExit) => void): void;
  /** The local runtime's OS sandbox around replica processes, as chosen at open, and why (logged at start). */
  readonly sandbox?: { kind: 'bwrap' | 'none'; reason: string };
  /** Replicas this runtime currently runs. */
  list(): ReplicaHandle[];
  /** The tail of the logs of a served entity's replicas (newest replica last), at most `maxBytes`. */
  logs(endpoint: string, servedEntity: string, maxBytes: number): Promise<string>;
  /**
   * Deletes what the runtime kept of an endpoint's replicas' logs (files, tails of gone pods),
   * once the endpoint is deleted and its replicas stopped: a new endpoint of the same name must
   * not read them.
   */
  deleteLogs(endpoint: string): Promise<void>;

  /**
   * The tail (at most `maxBytes`) of the build log of the environment a model in `artifactDir`
   * runs in (a python model's virtualenv), "" when none was built; absent: the runtime builds none.
   */
  buildLogs?(artifactDir: string, flavor: FlavorName, maxBytes: number): Promise<string>;
  /**
   * Server shutdown. The local runtime stops every replica (they are its child processes). The
   * Kubernetes runtime stops watching and forgets its replicas but leaves their pods serving: a
   * control-plane restart must not take endpoints down, and the next `open` adopts them (the
   * runtime contract's `replicasOutliveClose`).
   */
  close(): Promise<void>;
}

/** One ready replica of a served entity, as the cluster's EndpointSlices list it. */
export interface DiscoveredReplica {
  host: string;
  port: number;
  /** The pod behind it, when known. */
  pod: string | undefined;
}

export interface ClusterOptions {
  /** The namespace of the server pods, the Lease and the replicas. */
  namespace: string;
  /** A kubeconfig's text; undefined: the default (KUBECONFIG, or the pod's service account). */
  kubeconfig?: string;
  /** This server's name in the election: unique among the servers, stable across a restart of its pod. */
  identity: string;
  /** This server's pod, which the leader labels; undefined outside a pod (nothing is labelled). */
  podName: string | undefined;
  leaseName: string;
  leaseDurationMs: number;
  renewIntervalMs: number;
  /** Errors talking to the API server; each is retried. */
  onError: (err: unknown) => void;
}

/**
 * A Ferry server among its peers (Kubernetes only): one of them, elected over a Lease, runs the
 * control plane; every one routes inference to the replicas its EndpointSlices list.
 */
export interface Cluster {
  readonly identity: string;
  /** Starts the election; resolves after its first look (`isLeader()` then says whether the Lease was free or ours). */
  elect(): Promise<void>;
  isLeader(): boolean;
  /** Called with true on becoming leader, false on losing it. */
  onLeadershipChange(listener: (leading: boolean) => void): void;
  /** Ready replicas of a served entity (all its replica groups). */
  addresses(endpoint: string, servedEntity: string): DiscoveredReplica[];
  /** Called when any served entity's ready replicas change. */
  onAddressesChange(listener: () => void): void;
  /** Sets (true) or removes (false) the leader label on this server's pod; nothing without a pod name. */
  markLeader(leading: boolean): Promise<void>;
  /** Stops watching; a held Lease is released so a peer takes over at its next look. */
  close(): Promise<void>;
}

