/**
 * What changes when several Ferry servers run side by side (Kubernetes): only the elected leader
 * runs the control plane. `LeaderRuntime` opens the Kubernetes runtime (which adopts the running
 * pods) when this server becomes leader, so the controller is the same object on every server and
 * only starts on the leader; `leaderOnly` answers the serving-endpoints API on the others.
 */
import type { Access } from '../auth/index.js';
import { FerryError } from '../errors.js';
import type { Middleware } from '../http/index.js';
import type { ReplicaExit, ReplicaHandle, ReplicaSpec, Runtime } from '../runtime/index.js';

/** The install manifests' Service that selects the leader (`ferry.dev/role=leader`). */
const LEADER_SERVICE = 'ferry-api';
const ENDPOINTS_API = '/api/2.0/serving-endpoints';
/** Routes under ENDPOINTS_API that every server serves. */
const ANY_SERVER = /^\/api\/2\.0\/serving-endpoints\/:name\/(inference-table|metrics)(\/|$)/;

function notLeader(): FerryError {
  return new FerryError('TEMPORARILY_UNAVAILABLE',
    `This Ferry server is not the elected leader; the serving-endpoints API is served by the leader: call it through the '${LEADER_SERVICE}' Service.`, { retryAfterS: 1 });
}

/** A runtime opened on becoming leader; until then it runs nothing (the controller asks nothing of it before it starts). */
export class LeaderRuntime implements Runtime {
  private inner: Runtime | undefined;
  private readonly exitListeners: Array<(exit: ReplicaExit) => void> = [];
  /** Set once this server stopped leading: nothing reaches the cluster any more. */
  private fenced = false;
  /** It wraps the Kubernetes runtime, whose pods fetch their own models. */
  readonly fetchesArtifacts = true;

  constructor(private readonly open: () => Promise<Runtime>) {}

  /** Opens the runtime (once). */
  async activate(): Promise<void> {
    if (this.inner !== undefined || this.fenced) return;
    const inner = await this.open();
    if (this.fenced) {
      await inner.close();
      return;
    }
    for (const listener of this.exitListeners) inner.onExit(listener);
    this.inner = inner;
  }

  /**
   * This server lost (or gave up) the leadership: from now on it starts, stops and deletes
   * nothing, even while its controller winds down, since the new leader may already have adopted
   * the pods. The runtime closes at once (pods keep serving).
   */
  async fence(): Promise<void> {
    this.fenced = true;
    const inner = this.inner;
    this.inner = undefined;
    await inner?.close();
  }

  startReplica(spec: ReplicaSpec): Promise<ReplicaHandle> {
    return this.active().startReplica(spec);
  }

  /** A fenced runtime stops nothing: the replicas are the new leader's now. */
  stopReplica(id: string): Promise<void> {
    if (this.fenced) return Promise.resolve();
    return this.active().stopReplica(id);
  }

  onExit(listener: (exit: ReplicaExit) => void): void {
    this.exitListeners.push(listener);
    this.inner?.onExit(listener);
  }

  list(): ReplicaHandle[] {
    return this.inner?.list() ?? [];
  }

  logs(endpoint: string, servedEntity: string, maxBytes: number): Promise<string> {
    return this.active().logs(endpoint, servedEntity, maxBytes);
  }

  deleteLogs(endpoint: string): Promise<void> {
    if (this.fenced) return Promise.resolve();
    return this.active().deleteLogs(endpoint);
  }

  /** Leaves the pods serving (the Kubernetes runtime's close). */
  async close(): Promise<void> {
    await this.inner?.close();
  }

  private active(): Runtime {
    if (this.inner === undefined) throw notLeader();
    return this.inner;
  }
}

/**
 * The serving-endpoints API (reads included: an endpoint's state, its replicas and its rollout's
 * progress live in the leader's memory) answers 503 TEMPORARILY_UNAVAILABLE, naming the leader's
 * Service, while `leading()` is false. Runs after authentication, so an anonymous caller still gets 401.
 */
export function leaderOnly(leading: () => boolean): Middleware<Access> {
  return (next, _rule, route) => {
    // Inference tables live in the shared store and metrics are this server's own gateway's:
    // any server answers those.
    if (!route.pattern.startsWith(ENDPOINTS_API) || ANY_SERVER.test(route.pattern)) return next;
    return (ctx) => {
      if (!leading()) throw notLeader();
      return next(ctx);
    };
  };
}
