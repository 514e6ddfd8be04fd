/**
 * Types and constants shared by the local runtime's files (a leaf: it imports no sibling but
 * ./control.ts, so none of them needs the folder's index.ts).
 */
import type { ChildProcess } from 'node:child_process';
import type { ReplicaHandle } from '../types.js';
import type { ReplicaLink } from './control.js';
import type { PythonWorker } from './python-pool.js';

export const MIB = 1024 * 1024;

/**
 * Extra time after `drainTimeoutMs` before SIGKILL: the replica cuts its own remaining requests
 * at `drainTimeoutMs` and then needs a moment to stop its model worker and remove its socket.
 * An idle pool process, which exits at once, gets only this.
 */
export const KILL_GRACE_MS = 2000;

/** How a replica or pool process ended. */
export type Exit = { code: number | undefined; signal: string | undefined };

/** A pre-started generic replica process (see ./warm-pool.ts). */
export interface PoolProcess {
  /** `<stateDir>/pool/<key>`: its `--pool` argument, the identity orphan cleanup matches. */
  token: string;
  /** The socket and private model directory a replica that claims it uses (named in its permission flags). */
  socketPath: string;
  modelDir: string;
  child: ChildProcess;
  /** Its control channel (see ./control.ts). */
  link: ReplicaLink;
  /** Its log; renamed to the replica's log when claimed. */
  logFile: string;
  pidFile: string;
  /** Set when it reported `warm`: it waits for its options. */
  warm: boolean;
  /** Set when a replica took it; from then on it is that replica's process. */
  claimed: boolean;
  stopRequested: boolean;
  exited: Promise<Exit>;
  /** Settles once it is warm, or gone. */
  warmOrGone: Promise<void>;
  /** Settles once it exited and, unless claimed, its pool files are cleaned up. */
  gone: Promise<void>;
}

/** A replica process of the local runtime (./index.ts), spawned or claimed from the warm pool. */
export interface LocalReplica {
  handle: ReplicaHandle;
  child: ChildProcess;
  link: ReplicaLink;
  logFile: string;
  pidFile: string;
  /** Set once `startReplica` resolved; only ready replicas are listed and reported by `onExit`. */
  ready: boolean;
  stopRequested: boolean;
  /** Set by the memory watchdog just before it kills the replica. */
  oomRssBytes: number | undefined;
  /** Set by the watchdog just before it kills the replica because its sandbox reached the process limit. */
  processLimitHit: boolean;
  /** Its Python worker in a fork server, once forked (the fork server may be killed at its process limit). */
  pythonWorker: PythonWorker | undefined;
  /** Settles once the process exited and its pid file, socket and private model directory are removed. */
  gone: Promise<Exit>;
  /** Its pids cgroup (./pids-limit.ts), when there is one. */
  cgroup: string | undefined;
}

/** Whether `r` was killed because its sandbox, or its model's fork server's, reached the process limit. */
export function hitProcessLimit(r: LocalReplica): boolean {
  return r.processLimitHit || r.pythonWorker?.processLimitHit() === true;
}
