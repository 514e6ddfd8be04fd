/**
 * The seam between a replica's transport (HTTP and frames on one socket, drain, privilege drop:
 * ./index.ts) and what it serves: one model version (`singleModel` in ./index.ts) or a model
 * family (./family.ts).
 */
import type { RequestMeta } from '../channel/index.js';
import { invalidParameter } from '../errors.js';
import { parseJson, type JsonLimits } from '../http/index.js';
import type { jsonLogger, LogFields } from '../logs/index.js';
import type { Tensor } from '../tensor/index.js';

/** Rows of a request: the first dimension of its (validated, consistent) inputs. */
export function rowsOf(inputs: Record<string, Tensor>): number {
  for (const t of Object.values(inputs)) return t.shape[0] ?? 1;
  return 0;
}

/**
 * An inference route shared by both transports (HTTP for debugging and probes, frames from the
 * gateway): path parameters and the raw body in, a JSON-able answer out; errors are FerryErrors.
 * `meta` is the frame's request metadata (undefined over HTTP).
 */
export type Inference = (params: Record<string, string>, body: Buffer, signal: () => AbortSignal, meta: RequestMeta | undefined) => unknown;

/** One route of the replica: served over HTTP and over frames alike. */
export type RouteRow = [method: 'GET' | 'POST', pattern: string, handler: Inference];

/** What the replica's model side gives the transport side. */
export interface ModelRoutes {
  routes: RouteRow[];
  /** The answer to `GET /metrics`. */
  metrics: () => unknown;
  /** Fields of the "replica ready" log line. */
  readyFields: LogFields;
  close(): Promise<void>;
}

export interface ModelContext {
  /** Throws 503 while the replica drains. */
  ready: () => unknown;
  logger: ReturnType<typeof jsonLogger>;
  jsonLimits: JsonLimits;
}

/**
 * The JSON part and the binary part of a v2 inference body. The gateway sends a body with binary
 * tensors (the binary tensor extension) to `.../infer/binary/{headerBytes}`, the client's
 * `Inference-Header-Content-Length`; without that parameter the whole body is JSON.
 */
export function v2Body(params: Record<string, string>, body: Buffer, limits: JsonLimits): { header: unknown; binary: Buffer | undefined } {
  const raw = params.headerBytes;
  if (raw === undefined) return { header: parseJson(body, limits), binary: undefined };
  const headerBytes = /^\d{1,10}$/.test(raw) ? Number(raw) : NaN;
  if (!(headerBytes <= body.length)) throw invalidParameter('Inference-Header-Content-Length', raw, `a byte count within the body's ${body.length} bytes`);
  return { header: parseJson(body.subarray(0, headerBytes), limits), binary: body.subarray(headerBytes) };
}
