/**
 * Retiring backends: once out of rotation, a backend's requests in flight may finish before its
 * channel closes, for at most the drain time. Checked every 10 ms (a drain lasts from one request's
 * time to `timeoutMs`; a late close costs at most 10 ms of a channel kept open).
 */
import type { Backend } from './pick.js';

const POLL_MS = 10;

/**
 * Waits until none of `backends` has a request outstanding, or `timeoutMs` has passed on `now`,
 * then closes their channels (a request still running then fails). The caller has already taken
 * them out of rotation.
 */
export async function drainAndClose(backends: readonly Backend[], timeoutMs: number, now: () => number = Date.now): Promise<void> {
  const deadline = now() + timeoutMs;
  while (backends.some((b) => b.outstanding > 0) && now() < deadline) await new Promise((r) => setTimeout(r, POLL_MS));
  for (const b of backends) b.channel.close();
}
