/**
 * Request ids and W3C trace context (https://www.w3.org/TR/trace-context/): checking what a
 * client sends, and making new ids. Everything here runs once or twice per request, so it avoids
 * a syscall per id (measured on Node 20 here: `crypto.randomBytes(8)` ~1.7 µs, `randomUUID()`
 * ~90 ns, a slice of a pooled random buffer ~60 ns, prefix + counter ~20 ns).
 */
import { randomBytes, randomFillSync } from 'node:crypto';

/** A client's `x-request-id` is kept when it is 1–128 of these characters, else replaced. */
const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Longest `tracestate` passed on (the spec asks to propagate at least 512 characters). */
const MAX_TRACESTATE_CHARS = 512;
/** Printable ASCII only: a tracestate is a list of `key=value` members separated by commas. */
const SANE_TRACESTATE = /^[\x20-\x7e]*$/;
/** The first 55 characters of any version: version "-" trace-id "-" parent-id "-" flags. */
const TRACEPARENT_V00 = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}/;
const TRACEPARENT_V00_CHARS = 55;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);
/** Trace flag bit 0: the caller records this trace (exported spans are those of sampled traces). */
export const SAMPLED_FLAG = 0x01;

/** Random bytes drawn 4 KiB at a time, handed out as hex. */
const pool = Buffer.allocUnsafe(4096);
let poolOffset = pool.length;
function randomHex(bytes: number): string {
  if (poolOffset + bytes > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const hex = pool.toString('hex', poolOffset, poolOffset + bytes);
  poolOffset += bytes;
  // All zeros is invalid for both ids (a 2^-64 chance for a span id): draw again.
  return hex === ZERO_TRACE_ID || hex === ZERO_SPAN_ID ? randomHex(bytes) : hex;
}

/**
 * Generated request ids: a per-process random prefix and a counter, e.g. "9f2c4e01a7b3-1k3".
 * 48 random bits keep two processes (or restarts) apart; the counter keeps one process's apart.
 */
const REQUEST_ID_PREFIX = randomBytes(6).toString('hex');
let requestSeq = 0;

/** A new request id, unique to this process and very likely across processes. */
function newRequestId(): string {
  requestSeq = (requestSeq + 1) % Number.MAX_SAFE_INTEGER;
  return `${REQUEST_ID_PREFIX}-${requestSeq.toString(36)}`;
}

/**
 * The request id of a request: the client's `x-request-id` when sane (1–128 characters of
 * `[A-Za-z0-9._:-]`), else a new one. Ids go into logs and headers, hence the strict alphabet.
 */
export function requestIdFrom(header: string | string[] | undefined): string {
  return typeof header === 'string' && SANE_REQUEST_ID.test(header) ? header : newRequestId();
}

/** A 32-hex trace id, never all zeros. */
export function newTraceId(): string {
  return randomHex(16);
}

/** A 16-hex span id, never all zeros. */
export function newSpanId(): string {
  return randomHex(8);
}

/** The parts of a valid `traceparent` header. */
export interface TraceParent {
  traceId: string;
  /** The caller's span. */
  parentId: string;
  /** Trace flags, e.g. 0x01 sampled. */
  flags: number;
}

/**
 * Parses a `traceparent` header per the W3C spec: two lowercase hex digits of version (not "ff"),
 * a 32-hex trace id and a 16-hex parent id, neither all zeros, and two hex digits of flags; version
 * 00 has exactly these 55 characters, a later version may add fields after a "-" (read as 00).
 * Undefined when absent, repeated or invalid: the caller then starts a new trace.
 * E.g. "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" → trace 4bf9…4736, parent
 * 00f0…02b7, sampled.
 */
export function parseTraceparent(header: string | string[] | undefined): TraceParent | undefined {
  // Fixed offsets after one anchored test: no captures (this runs for every request).
  if (typeof header !== 'string' || header.length < TRACEPARENT_V00_CHARS || !TRACEPARENT_V00.test(header)) return undefined;
  if (header.startsWith('ff')) return undefined;
  // Only a later version may go on, and only after a "-".
  if (header.length > TRACEPARENT_V00_CHARS && (header.startsWith('00') || header[TRACEPARENT_V00_CHARS] !== '-')) return undefined;
  const traceId = header.slice(3, 35);
  const parentId = header.slice(36, 52);
  if (traceId === ZERO_TRACE_ID || parentId === ZERO_SPAN_ID) return undefined;
  return { traceId, parentId, flags: parseInt(header.slice(53, 55), 16) };
}

/** A version-00 `traceparent` naming `spanId` as the parent of whatever receives it. */
export function formatTraceparent(traceId: string, spanId: string, flags: number): string {
  return `00-${traceId}-${spanId}-${flags < 16 ? '0' : ''}${flags.toString(16)}`;
}

/**
 * The `tracestate` to pass on: the header when it is at most 512 printable ASCII characters
 * (repeated headers arrive joined with ", ", which is how the spec combines them), else undefined.
 * Only meaningful with a valid traceparent; the caller drops it otherwise.
 */
export function tracestateFrom(header: string | string[] | undefined): string | undefined {
  return typeof header === 'string' && header !== '' && header.length <= MAX_TRACESTATE_CHARS && SANE_TRACESTATE.test(header) ? header : undefined;
}
