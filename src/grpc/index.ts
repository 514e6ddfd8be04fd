/**
 * The OIP v2 gRPC front end: KServe's `inference.GRPCInferenceService` (proto/grpc_predict_v2.proto:
 * ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer) on its own port
 * (`grpcPort`), with the server's TLS certificate when it has one.
 *
 * It is a second front end of ONE gateway path, not a second gateway: each call becomes the OIP v2
 * REST request it stands for (./codec.ts), run in process through the server's own request
 * listener (`inject`), so authentication (the bearer token in the `authorization` metadata),
 * permissions, rate limits, traffic split, the activator buffer, batching in the replica,
 * metrics, tracing (`traceparent` / `x-request-id` metadata) and inference tables are exactly
 * those of REST. The REST status becomes the gRPC status (`GRPC_STATUS`), the error message its
 * details. A message that does not decode is INVALID_ARGUMENT, never INTERNAL.
 */
import { fileURLToPath } from 'node:url';
import type http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { clientError, FerryError, isErrorCode, toFerryError } from '../errors.js';
import { inject, type InjectedResponse } from '../http/index.js';
import type { LogFn } from '../logs/index.js';
import { inferBody, inferResponse, modelPath, type ModelInferRequest } from './codec.js';

/** The service definition, kept in the repository as KServe publishes it. */
export const PROTO_FILE = fileURLToPath(new URL('../../../proto/grpc_predict_v2.proto', import.meta.url));

/**
 * gRPC status for each HTTP status the REST API answers (Ferry's error table → HTTP → gRPC, as
 * the gRPC HTTP mapping and Triton do). Unlisted statuses are UNKNOWN.
 */
export const GRPC_STATUS: Readonly<Record<number, grpc.status>> = {
  400: grpc.status.INVALID_ARGUMENT,
  401: grpc.status.UNAUTHENTICATED,
  403: grpc.status.PERMISSION_DENIED,
  404: grpc.status.NOT_FOUND,
  405: grpc.status.UNIMPLEMENTED,
  408: grpc.status.DEADLINE_EXCEEDED,
  409: grpc.status.ABORTED,
  413: grpc.status.RESOURCE_EXHAUSTED,
  415: grpc.status.INVALID_ARGUMENT,
  429: grpc.status.RESOURCE_EXHAUSTED,
  431: grpc.status.RESOURCE_EXHAUSTED,
  500: grpc.status.INTERNAL,
  501: grpc.status.UNIMPLEMENTED,
  502: grpc.status.UNAVAILABLE,
  503: grpc.status.UNAVAILABLE,
  504: grpc.status.DEADLINE_EXCEEDED,
};

/** Call metadata passed on as the HTTP headers of the same name (lower-case, as gRPC sends them). */
const FORWARDED_METADATA = ['authorization', 'x-request-id', 'traceparent', 'tracestate', 'x-ferry-model'] as const;
/** Answer headers returned as the call's initial metadata. */
const RETURNED_HEADERS = ['x-request-id', 'served-model-name'] as const;

export interface GrpcServerOptions {
  host: string;
  /** 0: any free port. */
  port: number;
  /** The HTTP server's certificate and key (PEM); undefined: plaintext. */
  tls: { cert: Buffer; key: Buffer } | undefined;
  /** Largest request message accepted (the server's `maxBodySize`); larger is RESOURCE_EXHAUSTED. */
  maxMessageBytes: number;
  /** The server's HTTP request listener: every call runs through it. */
  handle: (req: http.IncomingMessage, res: http.ServerResponse) => void;
  log: LogFn;
}

export interface GrpcServer {
  /** "host:port" it listens on. */
  address: string;
  port: number;
  close(): Promise<void>;
}

/** A request message that did not decode; the handler answers INVALID_ARGUMENT with its reason. */
class Malformed {
  constructor(readonly reason: string) {}
}

type Unary = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => void;

/** How long `close` waits for calls in flight before cutting them. */
const SHUTDOWN_GRACE_MS = 5000;

/** Starts the gRPC front end; rejects when the port cannot be bound. */
export async function startGrpcServer(o: GrpcServerOptions): Promise<GrpcServer> {
  const definition = protoLoader.loadSync(PROTO_FILE, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const service = (grpc.loadPackageDefinition(definition) as unknown as { inference: { GRPCInferenceService: { service: grpc.ServiceDefinition } } })
    .inference.GRPCInferenceService.service;
  // A message that fails to decode must be the caller's error, not INTERNAL (grpc-js's answer).
  const tolerant: grpc.ServiceDefinition = Object.fromEntries(Object.entries(service).map(([name, m]) => [name, {
    ...m,
    requestDeserialize: (bytes: Buffer): unknown => {
      try {
        return m.requestDeserialize(bytes);
      } catch (err) {
        return new Malformed(err instanceof Error ? err.message : String(err));
      }
    },
  }]));

  /** Runs the REST request a call stands for; a REST error becomes the call's gRPC error. */
  const rest = async (call: grpc.ServerUnaryCall<unknown, unknown>, method: 'GET' | 'POST', url: string, body?: Buffer, headers: Record<string, string> = {}): Promise<InjectedResponse> => {
    const forwarded: Record<string, string> = {};
    for (const key of FORWARDED_METADATA) {
      const value = call.metadata.get(key)[0];
      if (typeof value === 'string') forwarded[key] = value;
    }
    const injection = inject(o.handle, { method, url, headers: { ...forwarded, ...headers }, body, remoteAddress: peerAddress(call.getPeer()) });
    call.once('cancelled', () => injection.cancel());
    const res = await injection.response;
    const md = new grpc.Metadata();
    for (const key of RETURNED_HEADERS) {
      const value = res.headers[key];
      if (typeof value === 'string') md.set(key, value);
    }
    call.sendMetadata(md);
    if (res.status >= 400 || !res.complete) throw new RestError(res);
    return res;
  };
  const json = (res: InjectedResponse): Record<string, unknown> => JSON.parse(res.body.toString('utf8')) as Record<string, unknown>;
  const unary = <T>(run: (req: T, call: grpc.ServerUnaryCall<unknown, unknown>) => Promise<unknown>): Unary => (call, callback) => {
    if (call.request instanceof Malformed) {
      callback({ code: grpc.status.INVALID_ARGUMENT, details: `The request message does not decode: ${call.request.reason}` });
      return;
    }
    run(call.request as T, call).then((answer) => callback(null, answer), (err: unknown) => callback(grpcError(err, o.log)));
  };

  const server = new grpc.Server({ 'grpc.max_receive_message_length': o.maxMessageBytes, 'grpc.max_send_message_length': -1 });
  server.addService(tolerant, {
    ServerLive: unary(async (_req, call) => ({ live: json(await rest(call, 'GET', '/v2/health/live')).live === true })),
    ServerReady: unary(async (_req, call) => ({ ready: json(await rest(call, 'GET', '/v2/health/ready')).ready === true })),
    ServerMetadata: unary(async (_req, call) => json(await rest(call, 'GET', '/v2'))),
    ModelReady: unary<{ name: string; version: string }>(async (req, call) => {
      try {
        await rest(call, 'GET', `${modelPath(req.name, req.version)}/ready`);
        return { ready: true };
      } catch (err) {
        // An endpoint with no ready replica is "not ready", not an error.
        if (err instanceof RestError && err.res.status === 503) return { ready: false };
        throw err;
      }
    }),
    ModelMetadata: unary<{ name: string; version: string }>(async (req, call) => json(await rest(call, 'GET', modelPath(req.name, req.version)))),
    ModelInfer: unary<ModelInferRequest>(async (req, call) => {
      const { body, headerBytes } = inferBody(req);
      const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
      if (headerBytes !== undefined) headers['inference-header-content-length'] = String(headerBytes);
      const res = await rest(call, 'POST', `${modelPath(req.model_name, req.model_version)}/infer`, body, headers);
      const answerHeader = res.headers['inference-header-content-length'];
      if (answerHeader === undefined) throw new FerryError('BAD_GATEWAY', 'The inference answer has no binary outputs.');
      return inferResponse(res.body, Number(answerHeader));
    }),
  });
  const credentials = o.tls === undefined
    ? grpc.ServerCredentials.createInsecure()
    : grpc.ServerCredentials.createSsl(null, [{ private_key: o.tls.key, cert_chain: o.tls.cert }]);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port}`, credentials, (err, bound) => (err ? reject(err) : resolve(bound)));
  });
  const close = (): Promise<void> => new Promise<void>((resolve) => {
    const timer = setTimeout(() => server.forceShutdown(), SHUTDOWN_GRACE_MS);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  return { address: `${o.host}:${port}`, port, close };
}

/** A REST answer of 400 or more (or one cut off after its head). */
class RestError extends Error {
  constructor(readonly res: InjectedResponse) {
    super(`HTTP ${res.status}`);
  }
}

/** The error a call answers with: a REST error keeps its status and message, a FerryError its table status. */
function grpcError(err: unknown, log: LogFn): Partial<grpc.StatusObject> {
  if (err instanceof RestError) {
    const { res } = err;
    const md = new grpc.Metadata();
    const retryAfter = res.headers['retry-after'];
    if (typeof retryAfter === 'string') md.set('retry-after', retryAfter);
    return { code: res.complete ? GRPC_STATUS[res.status] ?? grpc.status.UNKNOWN : grpc.status.UNAVAILABLE, details: restMessage(res), metadata: md };
  }
  const e = toFerryError(err);
  if (e.status >= 500) log('error', 'gRPC call failed', { error: err instanceof Error ? err.stack : String(err) });
  return { code: GRPC_STATUS[e.status] ?? grpc.status.UNKNOWN, details: clientError(e, undefined).message };
}

/** The message of a REST error body: `{"error": "..."}` (OIP v2) or Ferry's `{"error_code", "message"}`. */
function restMessage(res: InjectedResponse): string {
  if (!res.complete) return 'The answer was cut off.';
  try {
    const body = JSON.parse(res.body.toString('utf8')) as { error?: unknown; error_code?: unknown; message?: unknown };
    if (typeof body.error === 'string') return body.error;
    if (typeof body.message === 'string') return typeof body.error_code === 'string' && isErrorCode(body.error_code) ? `${body.error_code}: ${body.message}` : body.message;
  } catch {
    // Not JSON: its text below.
  }
  return res.body.toString('utf8').slice(0, 1000);
}

/** The address in a grpc-js peer string: "ipv4:127.0.0.1:5000" → "127.0.0.1", "ipv6:[::1]:5000" → "::1". */
function peerAddress(peer: string): string {
  const m = /^ipv[46]:\[?([^\]]*?)\]?:\d+$/.exec(peer);
  return m?.[1] ?? peer;
}
