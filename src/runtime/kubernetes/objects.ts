/**
 * The Kubernetes objects of one replica group: pure functions of a replica spec and the runtime's
 * settings, so tests validate exactly what the runtime sends against the official schemas.
 *
 * A group is one served entity with one replica identity (model version and artifact, flavor,
 * workload type, batching, limits): every replica of that identity is a pod of the group's
 * Deployment, and a Service, a NetworkPolicy and a PodDisruptionBudget select the same pods.
 * A new identity (a new version, other limits) is a new group, so a Deployment's template never
 * changes and Kubernetes never rolls pods behind Ferry's back.
 */
import { createHash } from 'node:crypto';
import type { V1Deployment, V1NetworkPolicy, V1PodDisruptionBudget, V1ResourceRequirements, V1Service } from '@kubernetes/client-node';
import type { ArtifactStoreLocation } from '../../artifacts/index.js';
import { FLAVOR_CAPABILITIES } from '../../flavors/index.js';
import type { ReplicaSpec } from '../types.js';
import { replicaOptionsOf, toArgv, type ReplicaCommand } from '../../replica/options.js';
import type { LogLevel } from '../../logs/index.js';

/** Labels every object Ferry creates carries; `open` lists by the first. */
export const MANAGED_BY = 'app.kubernetes.io/managed-by';
export const LABEL_ENDPOINT = 'ferry.dev/endpoint';
export const LABEL_ENTITY = 'ferry.dev/served-entity';
export const LABEL_GROUP = 'ferry.dev/group';
/** On a pod: the id of the replica it serves (diagnostics; the next control plane re-claims by group). */
export const ANNOTATION_REPLICA = 'ferry.dev/replica-id';
/** On a Deployment: the full endpoint and entity names (labels hold sanitised ones). */
export const ANNOTATION_ENDPOINT = 'ferry.dev/endpoint-name';
export const ANNOTATION_ENTITY = 'ferry.dev/served-entity-name';
/** The ReplicaSet controller removes the pod with the lowest cost first on a scale-down. */
export const DELETION_COST = 'controller.kubernetes.io/pod-deletion-cost';
export const LOWEST_DELETION_COST = '-2147483648';
export const CONTAINER = 'replica';
/** Where the pod's writable emptyDir is mounted: the replica fetches its model there. */
export const MODEL_DIR = '/var/lib/ferry/model';

/** What the runtime's configuration decides about every pod. */
export interface PodSettings {
  namespace: string;
  /** The Ferry image; its entrypoint is `ferry` (the pod's args start with `replica`). */
  image: string;
  /**
   * The image of replicas whose flavor runs Python (`pythonEnvironment`: the python flavor): the
   * Ferry image with Python and the models' packages baked in (Dockerfile PYTHON_PACKAGES).
   */
  pythonImage: string;
  imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never' | undefined;
  /** Port replicas listen on (the pod IP's); the Service and NetworkPolicy use it. */
  replicaPort: number;
  /** Labels of the Ferry server pods (gateway): the only pods the NetworkPolicy admits. */
  serverPodLabels: Readonly<Record<string, string>>;
  /** The non-root uid (and gid) replicas run as. */
  replicaUid: number;
  /** Model threads per replica (onnxruntime intra-op threads); also the pod's CPU request. */
  replicaThreads: number;
  /** Where replicas fetch artifacts from (no credentials: those come from `artifactStoreSecret`). */
  artifactStore: ArtifactStoreLocation;
  /** A Secret whose keys become the replica's environment (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). */
  artifactStoreSecret: string | undefined;
  startTimeoutMs: number;
  drainTimeoutMs: number;
  logLevel: LogLevel;
}

/** A group's identity: its name and the labels its objects and pods carry. */
export interface Group {
  name: string;
  labels: Record<string, string>;
  /** Selects the group's pods (a subset of `labels`). */
  selector: Record<string, string>;
}

export interface GroupObjects {
  deployment: V1Deployment;
  service: V1Service;
  networkPolicy: V1NetworkPolicy;
  podDisruptionBudget: V1PodDisruptionBudget;
}

const NAME_PREFIX = 'ferry-';
/** Hex digits of the identity hash in names: 10 (40 bits) make a collision between groups negligible. */
const HASH_CHARS = 10;
/** Longest group name: a Service name is a DNS-1035 label (≤ 63); pods append "-<hash>-<5>" to it. */
const MAX_GROUP_NAME = 47;
const GPU_RESOURCE = 'nvidia.com/gpu';
const MIB = 1024 * 1024;

/**
 * The group of `spec`: e.g. endpoint "iris-ep", entity "champion" → "ferry-iris-ep-champion-3fa94c01d2".
 * Names keep DNS-1123 characters of the names (lower-cased, others become "-"), cut so the whole
 * stays ≤ 47 characters; the hash covers the full identity, so cutting never merges two groups.
 * The runtime passes its `settings` too: the pod template depends on them (image, uid, threads,
 * port, the credentials Secret, the server pods' labels), so after a server upgrade or such a
 * config change new replicas go to a new group with the new template instead of scaling up an
 * old Deployment.
 */
export function groupOf(spec: ReplicaSpec, settings?: PodSettings): Group {
  const identity = JSON.stringify([
    spec.endpoint, spec.servedEntity, spec.modelName, spec.modelVersion, spec.artifactKey, spec.artifactSha256, spec.modelFile, spec.flavor,
    spec.workloadType, spec.memoryLimitBytes, spec.maxBodyBytes, spec.maxRowsPerRequest, spec.maxJsonDepth, spec.maxJsonElements, spec.batching,
    // What a pod needs to run differently; not where it fetches the model from (the sha256 pins
    // the model, and servers may see one store under different paths), log level or timeouts.
    ...(settings === undefined ? [] : [[imageOf(spec, settings), settings.imagePullPolicy, settings.replicaPort, settings.replicaUid, settings.replicaThreads, settings.artifactStoreSecret, settings.serverPodLabels]]),
    // Only for a family entity, so the names of single-model groups stay what they were.
    ...(spec.family === undefined ? [] : [{ familyCacheBytes: spec.family.cacheBytes, sessionFallback: spec.family.sessionFallback }]),
  ]);
  const hash = createHash('sha256').update(identity).digest('hex').slice(0, HASH_CHARS);
  const stem = dnsLabel(`${spec.endpoint}-${spec.servedEntity}`, MAX_GROUP_NAME - NAME_PREFIX.length - HASH_CHARS - 1);
  const name = `${NAME_PREFIX}${stem === '' ? '' : `${stem}-`}${hash}`;
  const selector = { [MANAGED_BY]: 'ferry', [LABEL_GROUP]: name };
  return {
    name, selector,
    labels: {
      ...selector, 'app.kubernetes.io/name': 'ferry', 'app.kubernetes.io/component': 'replica',
      [LABEL_ENDPOINT]: labelValue(spec.endpoint), [LABEL_ENTITY]: labelValue(spec.servedEntity),
    },
  };
}

/** The label selector of an entity's pods (the same sanitised values `groupOf` sets). */
export function entitySelector(endpoint: string, servedEntity: string): string {
  return `${MANAGED_BY}=ferry,${LABEL_ENDPOINT}=${labelValue(endpoint)},${LABEL_ENTITY}=${labelValue(servedEntity)}`;
}

/**
 * A label value for a name: itself when valid (≤ 63 characters of [A-Za-z0-9._-], alphanumeric at
 * both ends), else a sanitised prefix and a hash of the whole, e.g. "a/b" → "a-b-1c2b6e43".
 */
export function labelValue(name: string): string {
  if (/^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/.test(name)) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  const stem = name.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 54).replace(/[^A-Za-z0-9]+$/, '');
  return stem === '' ? hash : `${stem}-${hash}`;
}

/** Lower-case DNS-1123 label characters of `s`, at most `max` long, alphanumeric at both ends ("" when none). */
function dnsLabel(s: string, max: number): string {
  return s.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^[^a-z]+/, '').slice(0, max).replace(/-+$/, '');
}

/**
 * CPU: the request is the model's threads (one replica per core, as locally); the limit one more,
 * for the main thread that parses requests while the model computes. Memory: request = limit = the
 * spec's memory limit, so the kernel enforces what the local watchdog does (an over-limit replica
 * is OOM-killed and reported 'oom'). GPU workload types get one `nvidia.com/gpu`.
 * Example: CPU, 2 GiB, 1 thread → requests {cpu: "1", memory: "2048Mi"}, limits {cpu: "2", memory: "2048Mi"}.
 */
function resourcesOf(spec: ReplicaSpec, threads: number): V1ResourceRequirements {
  const memory = `${Math.ceil(spec.memoryLimitBytes / MIB)}Mi`;
  const gpu = spec.workloadType.startsWith('GPU_') ? { [GPU_RESOURCE]: '1' } : {};
  return {
    requests: { cpu: String(threads), memory, ...gpu },
    limits: { cpu: String(threads + 1), memory, ...gpu },
  };
}

/** The image a replica runs: the Python one for flavors that run Python (the image is part of a group's name). */
function imageOf(spec: ReplicaSpec, s: PodSettings): string {
  return FLAVOR_CAPABILITIES[spec.flavor].pythonEnvironment ? s.pythonImage : s.image;
}

/** The group's Deployment (created with 0 replicas: the runtime scales it), Service, NetworkPolicy and PodDisruptionBudget. */
export function groupObjects(spec: ReplicaSpec, group: Group, s: PodSettings): GroupObjects {
  // A family pod starts with no model and fetches each member from the store on a miss, as the
  // gateway's request names it (src/replica/family-store.ts); any other pod fetches its one model at start.
  let fetch: Pick<ReplicaCommand, 'artifact' | 'membersFromStore'>;
  if (spec.family !== undefined) fetch = { membersFromStore: {} };
  else if (spec.artifactKey !== undefined && spec.artifactSha256 !== undefined) fetch = { artifact: { path: spec.artifactKey, sha256: spec.artifactSha256 } };
  else throw new Error(`replica '${spec.id}' has no artifactKey/artifactSha256: pods fetch their model from the artifact store`);
  const metadata = {
    name: group.name, namespace: s.namespace, labels: group.labels,
    annotations: { [ANNOTATION_ENDPOINT]: spec.endpoint, [ANNOTATION_ENTITY]: spec.servedEntity },
  };
  const options = {
    ...replicaOptionsOf(spec, { socketPath: '', modelDir: MODEL_DIR, drainTimeoutMs: s.drainTimeoutMs, user: undefined, logLevel: s.logLevel }),
    // An empty host: the replica listens on its pod IP (env POD_IP).
    listen: { host: '', port: s.replicaPort },
  };
  options.loadOptions.intraOpThreads = s.replicaThreads;
  const args = ['replica', ...toArgv({ options, ...fetch })];
  const gpu = spec.workloadType.startsWith('GPU_');
  const probe = (path: string, periodSeconds: number, failureThreshold: number): Record<string, unknown> => ({
    httpGet: { path, port: 'http' }, periodSeconds, failureThreshold, timeoutSeconds: 1,
  });
  const deployment: V1Deployment = {
    apiVersion: 'apps/v1', kind: 'Deployment', metadata,
    spec: {
      replicas: 0,
      selector: { matchLabels: group.selector },
      // Pods are added and removed one by one through the scale subresource; the template never changes.
      revisionHistoryLimit: 1,
      template: {
        metadata: { labels: group.labels },
        spec: {
          // A replica needs no Kubernetes API access and no service discovery.
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          // SIGTERM drains in-flight requests for drainTimeoutMs; then the replica exits by itself.
          terminationGracePeriodSeconds: Math.ceil(s.drainTimeoutMs / 1000) + 5,
          securityContext: {
            runAsNonRoot: true, runAsUser: s.replicaUid, runAsGroup: s.replicaUid, fsGroup: s.replicaUid,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          ...(gpu ? { tolerations: [{ key: GPU_RESOURCE, operator: 'Exists', effect: 'NoSchedule' }] } : {}),
          containers: [{
            name: CONTAINER, image: imageOf(spec, s), ...(s.imagePullPolicy === undefined ? {} : { imagePullPolicy: s.imagePullPolicy }),
            args,
            env: [
              { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
              { name: 'FERRY_ARTIFACT_STORE', value: JSON.stringify(s.artifactStore) },
            ],
            ...(s.artifactStoreSecret === undefined ? {} : { envFrom: [{ secretRef: { name: s.artifactStoreSecret } }] }),
            ports: [{ name: 'http', containerPort: s.replicaPort, protocol: 'TCP' }],
            resources: resourcesOf(spec, s.replicaThreads),
            // The replica listens only once its model is loaded: the startup probe allows the whole
            // start timeout for that, the liveness probe then watches a live process.
            startupProbe: probe('/v2/health/live', 1, Math.max(1, Math.ceil(s.startTimeoutMs / 1000))),
            readinessProbe: probe('/v2/health/ready', 2, 2),
            livenessProbe: probe('/v2/health/live', 10, 3),
            // The replica's own error line ("replica failed to start") becomes the termination message.
            terminationMessagePolicy: 'FallbackToLogsOnError',
            securityContext: {
              allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, privileged: false,
              capabilities: { drop: ['ALL'] },
            },
            volumeMounts: [{ name: 'model', mountPath: MODEL_DIR }, { name: 'tmp', mountPath: '/tmp' }],
          }],
          volumes: [{ name: 'model', emptyDir: {} }, { name: 'tmp', emptyDir: {} }],
        },
      },
    },
  };
  const service: V1Service = {
    apiVersion: 'v1', kind: 'Service', metadata,
    spec: { selector: group.selector, ports: [{ name: 'http', port: s.replicaPort, targetPort: 'http', protocol: 'TCP' }] },
  };
  const networkPolicy: V1NetworkPolicy = {
    apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata,
    spec: {
      podSelector: { matchLabels: group.selector },
      policyTypes: ['Ingress'],
      ingress: [{ _from: [{ podSelector: { matchLabels: s.serverPodLabels } }], ports: [{ protocol: 'TCP', port: s.replicaPort }] }],
    },
  };
  const podDisruptionBudget: V1PodDisruptionBudget = {
    apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', metadata,
    spec: {
      selector: { matchLabels: group.selector },
      // Node drains take the group's pods one at a time; a crash-looping pod never blocks a drain.
      maxUnavailable: 1,
      unhealthyPodEvictionPolicy: 'AlwaysAllow',
    },
  };
  return { deployment, service, networkPolicy, podDisruptionBudget };
}
