/**
 * A replica: one process serving ONE model version over a private Unix socket. The main thread
 * speaks HTTP (MLflow scoring at `/invocations`, Open Inference Protocol v2 under `/v2/`, health
 * probes), decodes and validates requests against the signature, and hands tensors to the model
 * worker thread. SIGTERM drains in-flight requests, then exits. In pool mode (`awaitPoolClaim`) the
 * process starts before its model is known and gets its options over the control channel. Given
 * a `user` (the runtime passes one when the server is root and there is no OS sandbox; in the
 * sandbox the process is that user from its start), it switches to that uid/gid once its model is
 * loaded and its socket listens, before it answers anything.
 */
import fs from 'node:fs';
import http from 'node:http';
import { framePayloadLimit, listenShared, serveFrames, type FramedConnection, type FrameHandler, type RequestMeta } from '../channel/index.js';
import { clientError, FerryError, toFerryError } from '../errors.js';
import { FLAVOR_CAPABILITIES } from '../flavors/index.js';
import { listener, parseJson, readBody, Router, type JsonLimits } from '../http/index.js';
import {
  checkRowCount, decodeMlflowRequest, decodeV2Request, encodeMlflowResponse, encodeV2Answer, v2ModelConfig, v2ModelMetadata,
} from '../protocols/index.js';
import { ModelCallMetrics } from '../telemetry/replica.js';
import type { OutputValue, Signature, Tensor } from '../tensor/index.js';
import { jsonLogger, type LogFields } from '../logs/index.js';
import { newSpanId, parseTraceparent, unixMicros } from '../tracing/index.js';
import { LlmModel } from '../flavors/llm/index.js';
import { decodeEmbeddingRequest, encodeEmbeddingResponse, openAiKind } from '../protocols/openai.js';
import { batchable, DynamicBatcher, realClock } from './batcher.js';
import { llmHandlers, Streamed } from './llm.js';
import { ModelRunner } from './runner.js';
import { controlChannel } from './control.js';
import { familyModel, stageThroughRuntime, type StageReply, type StageRequest } from './family.js';
import { optionsFromMessage, type ReplicaOptions } from './options.js';
import { rowsOf, v2Body, type Inference, type ModelContext, type ModelRoutes, type RouteRow } from './model-routes.js';

/**
 * Messages over the control channel between the local runtime and its replica processes (frames:
 * `src/channel/control.ts`; this end: ./control.ts). A replica started with all its flags sends only
 * `listening`; one started in pool mode (`ferry replica --pool ID`) first sends `warm` once it has
 * imported everything and waits, then gets exactly one `start` with the options the flags would
 * have carried. `drain` asks the replica to stop as SIGTERM does (in a sandbox the runtime's child
 * is the sandbox, not the replica, so a signal would not reach it).
 */
export type ReplicaToRuntime =
  /** Pool mode: Node, onnxruntime and the replica code are loaded; send `start` now. */
  | { type: 'warm' }
  /** The replica listens on its socket: a hint to probe readiness now rather than at the next poll. */
  | { type: 'listening' }
  /** A family replica needs a member staged (./family.ts). */
  | StageRequest;
export type RuntimeToReplica = { type: 'start'; options: ReplicaOptions } | StageReply | { type: 'drain' };
export type { StageReply, StageRequest } from './family.js';
export type { BatchingConfig, ReplicaOptions } from './options.js';
export { openControl } from './control.js';

/** The batch queue holds at most this many full batches (and at least MIN_QUEUE_ROWS rows). */
const MAX_QUEUED_BATCHES = 16;
const MIN_QUEUE_ROWS = 1024;
const EMPTY = Buffer.alloc(0);

export interface Replica {
  close(): Promise<void>;
}


/** Loads the model, then listens. Rejects (without listening) when the model cannot load. */
/** How long a drained replica lets its connections flush answers already written before cutting them. */
const FLUSH_GRACE_MS = 1000;

export async function startReplica(opts: ReplicaOptions): Promise<Replica> {
  let draining = false;
  const notReady = (): FerryError => new FerryError('TEMPORARILY_UNAVAILABLE', 'Replica is shutting down.', { retryAfterS: 1 });
  const ready = (): unknown => {
    if (draining) throw notReady();
    return { ready: true };
  };
  const logLevel = opts.logLevel ?? 'info';
  const logger = jsonLogger(logLevel, writeStdout);
  const jsonLimits: JsonLimits = {
    maxDepth: opts.maxJsonDepth,
    maxElements: opts.maxJsonElements,
  };
  const model = opts.family === undefined
    ? await singleModel(opts, { ready, logger, jsonLimits })
    : familyModel(opts.family, {
      ready, logger, jsonLimits, maxRows: opts.maxRowsPerRequest,
      // A pod's members come from the artifact store: its code is loaded only then.
      stage: opts.family.artifactStore === undefined ? stageThroughRuntime
        : await (await import('./family-store.js')).stageFromStore(opts.family.artifactStore, opts.dir, opts.family.cacheBytes),
    });
  const table: RouteRow[] = [
    ['GET', '/v2/health/live', () => ({ live: true })],
    ['GET', '/v2/health/ready', ready],
    ['GET', '/ping', ready],
    ['GET', '/v2', () => ({ name: 'ferry-replica', version: '1', extensions: [] })],
    ['GET', '/metrics', model.metrics],
    ...model.routes,
  ];
  // The same routes over HTTP (each body read within the limit) and over frames.
  const router = new Router();
  const frameRoutes = new Router<Inference>();
  for (const [method, pattern, handler] of table) {
    frameRoutes.add(method, pattern, handler);
    router.add(method, pattern, async (ctx) => {
      const body = method === 'POST' ? await readBody(ctx.req, opts.maxBodyBytes) : EMPTY;
      const answer = await handler(ctx.params, body, () => closedSignal(ctx.res), undefined);
      if (Buffer.isBuffer(answer)) {
        ctx.res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': answer.length });
        ctx.res.end(answer);
        return undefined;
      }
      if (!(answer instanceof Streamed)) return { body: answer };
      ctx.res.writeHead(200, { 'content-type': answer.contentType, 'cache-control': 'no-cache' });
      for await (const chunk of answer.chunks) ctx.res.write(chunk);
      ctx.res.end();
      return undefined;
    });
  }

  const debug = logLevel === 'debug';
  const handle = listener(router, [], (err) => logger('error', 'request failed', { error: String(err) }));
  // Inference from the gateway arrives as frames on the same socket (docs/channel.md), with the
  // request id and trace context in their metadata. The replica's span (this handler, model call
  // included) is a child of the gateway's; its id goes into the debug line and, when the gateway
  // exports spans, back to the gateway in the response.
  const frameConnections = new Set<FramedConnection>();
  const onFrame: FrameHandler = async (req) => {
    const { method, path, body, meta } = req;
    const wantSpan = meta?.wantSpan === true;
    const t0 = wantSpan || debug ? performance.now() : 0;
    let status = 200;
    let answer: string | Buffer;
    try {
      const { route, params } = frameRoutes.match(method, path);
      const result = await route.handler(params, body, () => req.signal, meta);
      // A stream's span and debug line would cover only its start: it has neither.
      if (result instanceof Streamed) return { status: 200, body: '', stream: result.chunks, contentType: result.contentType };
      // A Buffer is a v2 binary answer (protocols/v2-binary.ts), sent as is.
      answer = Buffer.isBuffer(result) ? result : JSON.stringify(result);
    } catch (err) {
      const e = toFerryError(err);
      status = e.status;
      // An unexpected error's details stay in this log, under the request id the answer names.
      answer = JSON.stringify(clientError(e, meta?.requestId).toBody());
      // Client errors are the caller's business (the debug line has them); 5xx are the model's or ours.
      if (status >= 500) logger('error', 'request failed', { ...requestFields(meta), path, status, error_code: e.code, error: e.unexpected && err instanceof Error ? err.stack : e.message });
    }
    if (!wantSpan && !debug) return { status, body: answer };
    const spanId = newSpanId();
    const durationMs = performance.now() - t0;
    if (debug) logger('debug', 'request', { ...requestFields(meta), span_id: spanId, method, path, status, duration_ms: Math.round(durationMs * 1000) / 1000 });
    return { status, body: answer, span: wantSpan ? { spanId, startUnixUs: unixMicros(t0), durationUs: durationMs * 1000 } : undefined };
  };
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
  listenShared(server, (socket) => {
    const conn = serveFrames(socket, onFrame, {
      maxPayloadBytes: framePayloadLimit(opts.maxBodyBytes),
      // A stream that fails part way (the handler itself catches everything else).
      onHandlerError: (err, meta) => logger('error', 'request failed', { ...requestFields(meta), error: err instanceof Error ? err.stack : String(err) }),
    });
    frameConnections.add(conn);
    void conn.closed.then(() => frameConnections.delete(conn));
  });
  if (opts.listen === undefined) fs.rmSync(opts.socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listen ?? opts.socketPath, () => resolve());
  });
  if (opts.listen === undefined) fs.chmodSync(opts.socketPath, 0o600);
  // Synchronously after listening: no request is handled before the switch (requests are
  // answered on later event-loop turns).
  if (opts.user !== undefined) dropPrivileges(opts.user);
  // A lost hint costs only the rest of one poll interval; the probe stays the proof of readiness.
  const control = controlChannel();
  control?.send({ type: 'listening' } satisfies ReplicaToRuntime);
  logger('info', 'replica ready', {
    ...model.readyFields, socket: opts.listen === undefined ? opts.socketPath : `${opts.listen.host}:${opts.listen.port}`,
    uid: process.getuid?.(), maxRowsPerRequest: opts.maxRowsPerRequest, maxJsonDepth: opts.maxJsonDepth, maxJsonElements: opts.maxJsonElements, logLevel,
  });

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => (closing ??= (async () => {
    draining = true;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    // In-flight requests finish, then every connection closes and the model goes. Past the
    // deadline, whatever is left is cut.
    const httpDrained = new Promise<void>((resolve) => {
      idle = resolve;
      if (inFlight === 0) resolve();
    });
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, opts.drainTimeoutMs)));
    await Promise.race([Promise.all([httpDrained, ...[...frameConnections].map((c) => c.drain())]), deadline]);
    clearTimeout(timer);
    // Answers already written may still sit in a socket's buffer: connections get a moment to
    // flush and close on their own (the server is closing) before the rest are cut.
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, FLUSH_GRACE_MS).unref())]);
    server.closeAllConnections();
    for (const c of frameConnections) c.destroy();
    await closed;
    await model.close();
    // After a drop the socket's directory (0700, the server's) is out of reach; the runtime
    // removes the socket once this process is gone.
    if (opts.user === undefined && opts.listen === undefined) fs.rmSync(opts.socketPath, { force: true });
  })());

  // A replica never outlives the server that started it: when the server dies, even by SIGKILL,
  // the OS closes the control channel; drain as on SIGTERM. If the server died while the model
  // was loading, the channel is already closed and the replica exits now.
  void control?.closed.then(() => {
    logger('info', 'server disconnected; draining');
    close().then(() => process.exit(0), () => process.exit(1));
  });
  return { close };
}

/** ONE model version: loaded now, its inference and metadata routes, batching, and llm routes for a GGUF model. */
async function singleModel(opts: ReplicaOptions, { ready, logger, jsonLimits }: ModelContext): Promise<ModelRoutes> {
  // An llm model runs on this thread: llama.cpp computes on its own threads, asynchronously, and
  // the OpenAI routes call the model itself (calibration would only time a long generation).
  const runner = await ModelRunner.start(
    { flavor: opts.flavor, dir: opts.dir, loadOptions: { ...opts.loadOptions, ...(opts.user === undefined ? {} : { processUser: opts.user }) } },
    { execution: FLAVOR_CAPABILITIES[opts.flavor].inline ? 'inline' : opts.execution ?? 'auto', calibrationBatchRows: opts.batching.maxBatchSize },
  );
  const signature = runner.signature;
  const llmModel = runner.inlineModel instanceof LlmModel ? runner.inlineModel : undefined;
  // Every model call (a batch, or a request run alone) is timed and its rows counted; the server
  // reads the totals from GET /metrics.
  const modelMetrics = new ModelCallMetrics();
  const runModel = async (inputs: Record<string, Tensor>, params: Record<string, unknown> | undefined): Promise<Record<string, OutputValue>> => {
    const t0 = performance.now();
    try {
      return await runner.predict(inputs, params);
    } finally {
      modelMetrics.observe(rowsOf(inputs), (performance.now() - t0) / 1000);
    }
  };
  const batcher = opts.batching.enabled && batchable(signature)
    ? new DynamicBatcher({
      run: (inputs) => runModel(inputs, undefined),
      maxBatchSize: opts.batching.maxBatchSize,
      maxQueueDelayUs: opts.batching.maxQueueDelayUs,
      preferredBatchSizes: opts.batching.preferredBatchSizes,
      maxQueueRows: Math.max(opts.batching.maxBatchSize * MAX_QUEUED_BATCHES, MIN_QUEUE_ROWS),
      clock: realClock,
    })
    : undefined;
  /** Requests with params run alone: one batch can carry only one set of params. */
  const predict = (inputs: Record<string, Tensor>, params: Record<string, unknown> | undefined): Promise<Record<string, OutputValue>> =>
    batcher && (params === undefined || Object.keys(params).length === 0) ? batcher.submit(inputs, rowsOf(inputs)) : runModel(inputs, params);
  const maxRows = opts.maxRowsPerRequest;

  const checkModel = (params: Record<string, string>): void => {
    const { name, version } = params;
    if (name !== opts.modelName) throw new FerryError('RESOURCE_DOES_NOT_EXIST', `Model '${name ?? ''}' is not served here (this replica serves '${opts.modelName}').`);
    if (version !== undefined && version !== opts.modelVersion) {
      throw new FerryError('RESOURCE_DOES_NOT_EXIST', `Model '${name}' version '${version}' is not served here (this replica serves version ${opts.modelVersion}).`);
    }
  };
  const infer: Inference = async (params, body) => {
    checkModel(params);
    const { header, binary } = v2Body(params, body, jsonLimits);
    const req = decodeV2Request(header, signature, binary);
    checkRowCount(req.inputs, maxRows);
    const outputs = await predict(req.inputs, req.parameters);
    return encodeV2Answer(outputs, { modelName: opts.modelName, modelVersion: opts.modelVersion, id: req.id, requestedOutputs: req.requestedOutputs }, req);
  };
  const metadata: Inference = (params) => {
    checkModel(params);
    return v2ModelMetadata(opts.modelName, opts.modelVersion, signature, FLAVOR_CAPABILITIES[opts.flavor].platform);
  };
  const config: Inference = (params) => {
    checkModel(params);
    return v2ModelConfig(opts.modelName, signature, FLAVOR_CAPABILITIES[opts.flavor].platform, batcher === undefined ? undefined : opts.batching);
  };

  const llm = llmModel === undefined ? undefined : llmHandlers(llmModel, opts.modelName, (stats) => {
    modelMetrics.observe(1, stats.durationMs / 1000);
    logger('debug', 'generation', {
      prompt_tokens: stats.promptTokens, completion_tokens: stats.completionTokens, ttft_ms: stats.timeToFirstTokenMs,
      tokens_per_s: stats.durationMs > 0 ? Math.round((stats.completionTokens / stats.durationMs) * 1e6) / 1000 : undefined,
    });
  });
  const mlflowInvocations: Inference = async (_params, body) => {
    const req = decodeMlflowRequest(parseJson(body, jsonLimits), signature);
    checkRowCount(req.inputs, maxRows);
    return encodeMlflowResponse(await predict(req.inputs, req.params), req.format);
  };
  const embedding = embeddingModel(signature);
  /**
   * OpenAI embeddings on a model that turns texts into vectors (a feature-extraction model):
   * the texts as the model's one string input, batched like any request.
   */
  const embeddings: Inference | undefined = embedding === undefined ? undefined : async (_params, body) => {
    const r = decodeEmbeddingRequest(parseJson(body, jsonLimits));
    const inputs: Record<string, Tensor> = { [embedding.input]: { dtype: 'string', shape: [r.inputs.length], data: r.inputs } };
    checkRowCount(inputs, maxRows);
    const out = (await predict(inputs, undefined))[embedding.output];
    if (out === undefined || out.dtype !== 'float32' || out.shape.length !== 2 || out.shape[0] !== r.inputs.length) {
      throw new FerryError('MODEL_ERROR', `Model execution failed: output '${embedding.output}' is not float32 [${r.inputs.length}, dim].`);
    }
    return encodeEmbeddingResponse(r, opts.modelName, out.data as Float32Array, out.shape[1] as number, undefined);
  };
  const routes: RouteRow[] = [
    ['POST', '/invocations', llm === undefined ? mlflowInvocations : (params, body, signal, meta) => {
      // Databricks accepts OpenAI bodies at /invocations of a chat, completions or embeddings
      // endpoint; anything else is MLflow scoring (a `prompt` column).
      const parsed = parseJson(body, jsonLimits);
      const kind = openAiKind(parsed);
      if (kind === 'chat') return llm.chat(parsed, signal);
      if (kind === 'embedding') return llm.embeddings(parsed);
      if (kind === 'completion' && !('dataframe_split' in (parsed as object)) && !('inputs' in (parsed as object))) return llm.completion(parsed, signal);
      return mlflowInvocations(params, body, signal, meta);
    }],
    ...(llm === undefined ? [] : [
      ['POST', '/v1/chat/completions', (_params, body, signal) => llm.chat(parseJson(body, jsonLimits), signal)],
      ['POST', '/v1/completions', (_params, body, signal) => llm.completion(parseJson(body, jsonLimits), signal)],
      ['POST', '/v1/embeddings', (_params, body) => llm.embeddings(parseJson(body, jsonLimits))],
    ] satisfies Array<[method: 'GET' | 'POST', pattern: string, handler: Inference]>),
    ...(embeddings === undefined ? [] : [['POST', '/v1/embeddings', embeddings] satisfies RouteRow]),
    ['GET', '/v2/models/:name', metadata],
    ['GET', '/v2/models/:name/versions/:version', metadata],
    ['GET', '/v2/models/:name/config', config],
    ['GET', '/v2/models/:name/versions/:version/config', config],
    ['GET', '/v2/models/:name/ready', (params) => (checkModel(params), ready())],
    ['GET', '/v2/models/:name/versions/:version/ready', (params) => (checkModel(params), ready())],
    ['POST', '/v2/models/:name/infer', infer],
    ['POST', '/v2/models/:name/versions/:version/infer', infer],
    ['POST', '/v2/models/:name/infer/binary/:headerBytes', infer],
    ['POST', '/v2/models/:name/versions/:version/infer/binary/:headerBytes', infer],
  ];
  return {
    routes,
    metrics: () => modelMetrics.snapshot(),
    readyFields: { model: opts.modelName, version: opts.modelVersion, execution: runner.choice.mode, executionReason: runner.choice.reason, batching: batcher !== undefined },
    close: () => runner.close(),
  };
}

/** Aborted when the HTTP response closes before it finished (the client went away). */
function closedSignal(res: http.ServerResponse): AbortSignal {
  const c = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) c.abort();
  });
  return c.signal;
}

/**
 * Switches the whole process (every thread: glibc applies set*id to all of them) to `user`:
 * supplementary groups first, then the group, then the user, since after setuid the process may no
 * longer change groups. Throws (EPERM) when the process is not root; the replica then fails to
 * start rather than run with more rights than it was told to.
 */
function dropPrivileges(user: { uid: number; gid: number }): void {
  process.setgroups?.([]);
  process.setgid?.(user.gid);
  process.setuid?.(user.uid);
  if (process.getuid?.() !== user.uid || process.getgid?.() !== user.gid) {
    throw new Error(`could not switch to uid ${user.uid} gid ${user.gid}`);
  }
}

/**
 * Pool mode (`ferry replica --pool ID`): loads everything a replica needs that does not depend on
 * the model, tells the runtime it is `warm`, and resolves with the options of the ONE `start`
 * message that follows; the caller then starts the replica exactly as if those options had come
 * as flags. The process moves into the artifact directory, as a spawned replica starts in it.
 * While idle it exits as soon as the runtime's control channel closes (the server died).
 */
export async function awaitPoolClaim(): Promise<ReplicaOptions> {
  const control = controlChannel();
  if (control === undefined || !control.isOpen) throw new Error('pool mode needs a control channel to the runtime that started it (--control).');
  await warmUp();
  const options = await new Promise<unknown>((resolve) => {
    let claimed = false;
    void control.closed.then(() => {
      if (claimed) return; // the replica's own lifeline handles it from then on
      log('info', 'server disconnected while idle in the pool; exiting');
      process.exit(0);
    });
    control.onFrame(({ header }) => {
      if (claimed || header.type !== 'start') return;
      claimed = true;
      resolve(header);
    });
    log('info', 'pool process warm; waiting for a replica to serve', { pid: process.pid });
    control.send({ type: 'warm' } satisfies ReplicaToRuntime);
  }).then(optionsFromMessage);
  process.chdir(options.dir);
  return options;
}

/**
 * What a cold start would otherwise pay after the options arrive, besides the model itself:
 * importing onnxruntime-node (its native binding) and onnxruntime's one-time process setup, which
 * the first session pays (measured here: a worker's first linear.onnx load took ~20–35 ms in a
 * fresh process, ~3 ms once any session had been created in it). This imports it and builds a
 * session of a tiny fixture model (linear.onnx, built in memory), then releases the session. Of the flavors a pool process may be claimed for (`warmPool` in
 * src/flavors/capabilities.ts: onnx, transformers, xgboost), onnx and the session fallback of
 * family members gain from this; transformers and xgboost pay their own first-load setup.
 */
async function warmUp(): Promise<void> {
  const [{ default: ort }, { linearFixture }] = await Promise.all([import('onnxruntime-node'), import('../fixtures/index.js')]);
  const session = await ort.InferenceSession.create(linearFixture.build(), { intraOpNumThreads: 1 });
  await session.release();
}

/**
 * An embedding model: one string input (a text per row) and one float32 output of shape
 * [-1, dim], as a feature-extraction model has. Its input and output names; undefined otherwise.
 */
function embeddingModel(signature: Signature): { input: string; output: string } | undefined {
  const [input, ...moreInputs] = signature.inputs;
  const [output, ...moreOutputs] = signature.outputs;
  if (input === undefined || output === undefined || moreInputs.length > 0 || moreOutputs.length > 0) return undefined;
  if (input.dtype !== 'string' || output.dtype !== 'float32' || output.shape?.length !== 2) return undefined;
  return { input: input.name, output: output.name };
}

/** The request-scoped fields of a log line: the gateway's request id, and the trace and parent span ids. */
function requestFields(meta: RequestMeta | undefined): LogFields {
  const parent = parseTraceparent(meta?.traceparent);
  return { request_id: meta?.requestId, trace_id: parent?.traceId, parent_span_id: parent?.parentId };
}

function writeStdout(line: string): void {
  process.stdout.write(line);
}

/**
 * One JSON line per event on stdout; the runtime collects it into the replica's log file. For the
 * process's own life (start, pool, drain) at info and above, before its options (and its
 * `logLevel`) are known; `startReplica` logs through a logger at the configured level.
 */
export const log = jsonLogger('info', writeStdout);
