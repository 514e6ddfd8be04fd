/**
 * Capped exponential backoff, the one rule for every retry loop in Ferry (a crashed replica's
 * restart, the warm pool's refill, the Kubernetes watches): the first retry waits `baseMs`, each
 * further one twice as long, never more than `maxMs`. Example: base 1 s, cap 30 s → 1, 2, 4, 8,
 * 16, 30, 30 … s for retries 1, 2, 3, …. No jitter: each loop has one caller per process.
 */
export interface Backoff {
  baseMs: number;
  maxMs: number;
}

/** The wait before retry number `retry` (1 for the first; values below 1 count as 1). */
export function backoffDelayMs(retry: number, { baseMs, maxMs }: Backoff): number {
  return Math.min(maxMs, baseMs * 2 ** (Math.max(1, retry) - 1));
}
