/** The Kubernetes runtime's options, and the pod settings compiled from them (objects.ts). */
import type { ArtifactStoreLocation } from '../../artifacts/index.js';
import type { LogFn, LogLevel } from '../../logs/index.js';
import type { PodSettings } from './objects.js';

export interface KubernetesRuntimeOptions {
  /** Namespace of every object the runtime creates (and lists at `open`). */
  namespace: string;
  /** The Ferry image replicas run (`ferry replica`). */
  image: string;
  /** The image replicas of flavors that run Python (a flavor's `pythonEnvironment`) run; default `image`. */
  pythonImage?: string | undefined;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never' | undefined;
  /** A kubeconfig's text; undefined: the default (KUBECONFIG, ~/.kube/config, or the pod's service account). */
  kubeconfig?: string;
  /** How long a replica may take from the start call to a ready pod (image pull and model load included). */
  startTimeoutMs: number;
  /** How long a stopping replica drains; its pod's grace period is this plus 5 s. */
  drainTimeoutMs: number;
  /** Port replicas listen on; default 8080. */
  replicaPort?: number;
  /** Labels of the Ferry server pods, the only ones the NetworkPolicy admits; default name=ferry, component=server. */
  serverPodLabels?: Readonly<Record<string, string>>;
  /** Non-root uid/gid of replica containers; default 10001. */
  replicaUid?: number;
  /** Model threads per replica, and its CPU request; default 1. */
  replicaThreads?: number;
  /** Where replicas fetch artifacts (JSON for `ferry replica`; credentials only via `artifactStoreSecret`). */
  artifactStore: ArtifactStoreLocation;
  /** Secret mapped into replicas' environment (S3 credentials); undefined: none. */
  artifactStoreSecret?: string | undefined;
  /** How long objects found at `open` wait to be claimed before they are deleted; default 2 min. */
  adoptionGraceMs?: number;
  logLevel?: LogLevel;
  /** The server's log (a pod watch that keeps failing is logged); default: none. */
  log?: LogFn;
}

const DEFAULT_SERVER_POD_LABELS = { 'app.kubernetes.io/name': 'ferry', 'app.kubernetes.io/component': 'server' };
export const DEFAULT_ADOPTION_GRACE_MS = 120_000;

/** The settings every group's objects are built from: the options, defaults filled in. */
export function podSettings(opts: KubernetesRuntimeOptions): PodSettings {
  return {
    namespace: opts.namespace, image: opts.image, pythonImage: opts.pythonImage ?? opts.image, imagePullPolicy: opts.imagePullPolicy, replicaPort: opts.replicaPort ?? 8080,
    serverPodLabels: opts.serverPodLabels ?? DEFAULT_SERVER_POD_LABELS, replicaUid: opts.replicaUid ?? 10001, replicaThreads: opts.replicaThreads ?? 1,
    artifactStore: opts.artifactStore, artifactStoreSecret: opts.artifactStoreSecret,
    startTimeoutMs: opts.startTimeoutMs, drainTimeoutMs: opts.drainTimeoutMs, logLevel: opts.logLevel ?? 'info',
  };
}
