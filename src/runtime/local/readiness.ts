/**
 * Readiness of a starting replica of the local runtime: its `GET /v2/health/ready` polled over its
 * socket until 200, its exit, or the start deadline.
 */
import http from 'node:http';
import type { LocalReplica } from './types.js';

const READY_POLL_MS = 20;
/** One readiness probe may take this long before it counts as "not ready yet". */
const PROBE_TIMEOUT_MS = 1000;

/**
 * Polls the readiness probe every 20 ms until 200, the process exits, or the start deadline
 * (`startTimeoutMs`). The replica's `listening` message cuts the wait before the next probe short.
 */
export async function waitReady(r: LocalReplica, socketPath: string, exited: Promise<unknown>, startTimeoutMs: number): Promise<'ready' | 'exited' | 'timeout'> {
  let settled = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  r.link.onMessage((msg) => {
    if (msg.type === 'listening' && !settled) wake?.();
  });
  const deadline = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), startTimeoutMs); });
  const poll = async (): Promise<'ready'> => {
    while (!settled) {
      if (await probeReady(socketPath)) return 'ready';
      await new Promise<void>((res) => {
        const t = setTimeout(res, READY_POLL_MS);
        wake = () => { clearTimeout(t); res(); };
      });
      wake = undefined;
    }
    return 'ready'; // unreachable in effect: the race below has already settled
  };
  try {
    const outcome = await Promise.race([poll(), deadline, exited.then(() => 'exited' as const)]);
    // A replica can answer its probe and die an instant later; trust the exit, and a protocol
    // violation (its kill may not have landed yet).
    if (outcome === 'ready' && (r.child.exitCode !== null || r.child.signalCode !== null || r.link.violation !== undefined)) return 'exited';
    return outcome;
  } finally {
    settled = true;
    clearTimeout(timer);
    wake?.();
  }
}

/** Whether the replica behind `socketPath` answers `GET /v2/health/ready` with 200. */
function probeReady(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ socketPath, path: '/v2/health/ready', agent: false, timeout: PROBE_TIMEOUT_MS }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

