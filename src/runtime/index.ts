/**
 * Runtimes: WHERE replicas run. One interface, two implementations chosen by configuration:
 * `local` (child processes of `ferry server` on Unix sockets, the default) and `kubernetes`
 * (pods of Deployments in one namespace). The control plane decides how many replicas of what; a runtime only starts,
 * stops and watches them, and tells the control plane when one dies.
 */
import type { KubernetesRuntimeOptions } from './kubernetes/index.js';
import { LocalRuntime, type LocalRuntimeOptions } from './local/index.js';
import type { Cluster, ClusterOptions, Runtime } from './types.js';
export { ReplicaProtocolError } from './errors.js';
export type * from './types.js';

/** For other Ferry processes under the permission model (the registry's inspector): Ferry's code paths, and a process's resident memory. */
export { ferryCodePaths } from './local/index.js';
export { residentBytes } from './local/proc.js';

/** Joins the server's peers in a namespace (the Kubernetes client is imported only here, when configured). */
export async function openCluster(opts: ClusterOptions): Promise<Cluster> {
  return (await import('./kubernetes/index.js')).KubernetesCluster.open(opts);
}

export type RuntimeOptions = ({ kind: 'local' } & LocalRuntimeOptions) | ({ kind: 'kubernetes' } & KubernetesRuntimeOptions);

/**
 * Opens the configured runtime. The Kubernetes one (and its client library) is imported only when
 * configured: every `ferry` process, replicas included, may load this module.
 */
export async function openRuntime(opts: RuntimeOptions): Promise<Runtime> {
  if (opts.kind === 'kubernetes') return (await import('./kubernetes/index.js')).KubernetesRuntime.open(opts);
  return LocalRuntime.open(opts);
}
