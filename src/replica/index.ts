/**
 * A replica: one process serving ONE model version over a private Unix socket. The main thread
 * speaks HTTP (MLflow scoring at `/invocations`, Open Inference Protocol v2 under `/v2/`, health
 * probes), decodes and validates requests against the signature, and hands tensors to the model
 * worker thread. SIGTERM drains in-flight requests, then exits.
 */
import fs from 'node:fs';
import http from 'node:http';
import { FerryError } from '../errors.js';
import type { FlavorName, LoadOptions } from '../flavors/index.js';
import type { BatchingConfig } from '../runtime/index.js';
import { listener, parseJson, readBody, Router, type Context } from '../http/index.js';
import {
  decodeMlflowRequest, decodeV2Request, encodeMlflowResponse, encodeV2Response, v2ModelMetadata,
} from '../protocols/index.js';
import { ModelRunner } from './runner.js';

export interface ReplicaOptions {
  /** Unix socket path to listen on (the parent directory should be 0700). */
  socketPath: string;
  /** Artifact directory of the version. */
  dir: string;
  flavor: FlavorName;
  loadOptions: LoadOptions;
  /** Name the model answers to under /v2/models/{name}. */
  modelName: string;
  modelVersion: string;
  maxBodyBytes: number;
  /** How long SIGTERM waits for in-flight requests before exiting anyway. */
  drainTimeoutMs: number;
  batching: BatchingConfig;
}

export interface Replica {
  close(): Promise<void>;
}

/** Loads the model, then listens. Rejects (without listening) when the model cannot load. */
export async function startReplica(opts: ReplicaOptions): Promise<Replica> {
  const runner = await ModelRunner.start({ flavor: opts.flavor, dir: opts.dir, loadOptions: opts.loadOptions });
  const signature = runner.signature;
  let draining = false;

  const readJsonBody = async (ctx: Context): Promise<unknown> => parseJson(await readBody(ctx.req, opts.maxBodyBytes));
  const checkModel = (ctx: Context): void => {
    const { name, version } = ctx.params;
    if (name !== opts.modelName) throw new FerryError('RESOURCE_DOES_NOT_EXIST', `Model '${name ?? ''}' is not served here (this replica serves '${opts.modelName}').`);
    if (version !== undefined && version !== opts.modelVersion) {
      throw new FerryError('RESOURCE_DOES_NOT_EXIST', `Model '${name}' version '${version}' is not served here (this replica serves version ${opts.modelVersion}).`);
    }
  };
  const notReady = (): FerryError => new FerryError('TEMPORARILY_UNAVAILABLE', 'Replica is shutting down.', { retryAfterS: 1 });
  const ready = (): { body: unknown } => {
    if (draining) throw notReady();
    return { body: { ready: true } };
  };
  const infer = async (ctx: Context): Promise<{ body: unknown }> => {
    checkModel(ctx);
    const req = decodeV2Request(await readJsonBody(ctx), signature);
    const outputs = await runner.predict(req.inputs, req.parameters);
    return { body: encodeV2Response(outputs, { modelName: opts.modelName, modelVersion: opts.modelVersion, id: req.id, requestedOutputs: req.requestedOutputs }) };
  };
  const metadata = (ctx: Context): { body: unknown } => {
    checkModel(ctx);
    return { body: v2ModelMetadata(opts.modelName, opts.modelVersion, signature, platformOf(opts.flavor)) };
  };

  const router = new Router()
    .add('GET', '/v2/health/live', () => ({ body: { live: true } }))
    .add('GET', '/v2/health/ready', ready)
    .add('GET', '/ping', ready)
    .add('GET', '/v2', () => ({ body: { name: 'ferry-replica', version: '1', extensions: [] } }))
    .add('POST', '/invocations', async (ctx) => {
      const req = decodeMlflowRequest(await readJsonBody(ctx), signature);
      const outputs = await runner.predict(req.inputs, req.params);
      return { body: encodeMlflowResponse(outputs, req.format) };
    })
    .add('GET', '/v2/models/:name', metadata)
    .add('GET', '/v2/models/:name/versions/:version', metadata)
    .add('GET', '/v2/models/:name/ready', (ctx) => (checkModel(ctx), ready()))
    .add('GET', '/v2/models/:name/versions/:version/ready', (ctx) => (checkModel(ctx), ready()))
    .add('POST', '/v2/models/:name/infer', infer)
    .add('POST', '/v2/models/:name/versions/:version/infer', infer);

  const handle = listener(router, [], (err) => log('error', 'request failed', { error: String(err) }));
  let inFlight = 0;
  let idle: (() => void) | undefined;
  const server = http.createServer((req, res) => {
    inFlight++;
    res.once('close', () => {
      if (--inFlight === 0) idle?.();
    });
    if (draining) res.setHeader('connection', 'close');
    handle(req, res);
  });
  server.keepAliveTimeout = 60_000;
  fs.rmSync(opts.socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.socketPath, () => resolve());
  });
  fs.chmodSync(opts.socketPath, 0o600);
  log('info', 'replica ready', { model: opts.modelName, version: opts.modelVersion, socket: opts.socketPath });

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => (closing ??= (async () => {
    draining = true;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    // In-flight requests finish, then every connection closes and the model goes. Past the
    // deadline, whatever is left is cut.
    const drained = new Promise<void>((resolve) => {
      idle = resolve;
      if (inFlight === 0) resolve();
    });
    const timer = setTimeout(() => idle?.(), opts.drainTimeoutMs);
    await drained;
    clearTimeout(timer);
    server.closeAllConnections();
    await closed;
    await runner.close();
    fs.rmSync(opts.socketPath, { force: true });
  })());

  // A replica never outlives the server that started it: when the server dies, even by SIGKILL,
  // the OS closes the IPC channel and 'disconnect' fires; drain as on SIGTERM. If the server died
  // while the model was loading, the channel is already closed and the replica exits now.
  if (process.send !== undefined) {
    const exitWithParent = (): void => {
      log('info', 'server disconnected; draining');
      close().then(() => process.exit(0), () => process.exit(1));
    };
    if (process.connected) process.once('disconnect', exitWithParent);
    else exitWithParent();
  }
  return { close };
}

function platformOf(flavor: FlavorName): string {
  return flavor === 'onnx' ? 'onnxruntime_onnx' : flavor;
}

/** One JSON line per event on stdout; the runtime collects it into the replica's log file. */
export function log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({ ts: new Date().toISOString(), level, msg, ...fields }) + '\n');
}
