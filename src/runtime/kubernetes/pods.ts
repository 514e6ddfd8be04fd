/**
 * What a replica pod's status and log say, read without the API: ready or not, why it will not
 * become ready (a terminated container, a crash loop, an image error), the replica's own
 * "replica failed to start" reason, and log tails; and the API's errors in a line.
 */
import { ApiException, type V1Pod } from '@kubernetes/client-node';
import { CONTAINER } from './objects.js';

/** Waiting reasons after which a container will not become ready without a change. */
const FAILED_WAITING = new Set(['CrashLoopBackOff', 'ErrImagePull', 'ImagePullBackOff', 'InvalidImageName', 'CreateContainerConfigError', 'CreateContainerError']);
const LAST_LOG_LINES = 20;

export function isReady(pod: V1Pod): boolean {
  return pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

export interface PodFailure {
  /** What Kubernetes saw, e.g. "its container terminated (exit code 137, OOMKilled)" or "ErrImagePull (...)". */
  summary: string;
  /** The container's termination message (with FallbackToLogsOnError: its log's tail); '' when none. */
  terminationMessage: string;
  /** The failed container was restarted since: its log is the previous container's. */
  restarted: boolean;
}

/**
 * Why a pod will not become ready: its container terminated (now or, with `includePast`, before a
 * restart), or waits for good (crash loop, image errors).
 */
export function podFailure(pod: V1Pod, includePast: boolean): PodFailure | undefined {
  const status = pod.status?.containerStatuses?.find((c) => c.name === CONTAINER);
  if (status === undefined) return undefined;
  const terminated = status.state?.terminated ?? (includePast ? status.lastState?.terminated : undefined);
  if (terminated !== undefined) {
    const what = `its container terminated (exit code ${terminated.exitCode}${terminated.reason === undefined ? '' : `, ${terminated.reason}`})`;
    return { summary: what, terminationMessage: terminated.message?.trim() ?? '', restarted: status.state?.terminated === undefined };
  }
  const waiting = status.state?.waiting;
  if (waiting?.reason !== undefined && FAILED_WAITING.has(waiting.reason)) {
    return { summary: `${waiting.reason}${waiting.message === undefined ? '' : ` (${waiting.message})`}`, terminationMessage: '', restarted: false };
  }
  return undefined;
}

/** The replica's own reason from its "replica failed to start" log line, if `text` holds one. */
export function replicaError(text: string): string | undefined {
  for (const line of text.split('\n').reverse()) {
    try {
      const entry = JSON.parse(line) as { msg?: unknown; error?: unknown };
      if (entry.msg === 'replica failed to start' && typeof entry.error === 'string') return entry.error;
    } catch {
      // Not a JSON log line.
    }
  }
  return undefined;
}

export function lastLines(text: string): string {
  return text.split('\n').filter((l) => l !== '').slice(-LAST_LOG_LINES).join('\n');
}

export function tailBytes(text: string, maxBytes: number): string {
  const buf = Buffer.from(text);
  return buf.length <= maxBytes ? text : buf.subarray(buf.length - maxBytes).toString('utf8');
}

export function hasCode(err: unknown, code: number): boolean {
  return err instanceof ApiException && err.code === code;
}

export function describeApiError(err: unknown): string {
  if (err instanceof ApiException) {
    let message: unknown;
    try {
      message = (typeof err.body === 'string' ? JSON.parse(err.body) as { message?: unknown } : err.body as { message?: unknown }).message;
    } catch {
      message = undefined;
    }
    return `HTTP ${err.code}${typeof message === 'string' ? `: ${message}` : ''}`;
  }
  return err instanceof Error ? err.message : String(err);
}
