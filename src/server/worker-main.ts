/**
 * A gateway worker process (forked by ./workers.ts when `gatewayWorkers` ≥ 2). It accepts the
 * server's connections on the shared port and answers the data plane itself: inference, model
 * metadata and readiness (reads and `CAN_QUERY` routes: nothing the audit trail records), with the
 * same middlewares as the primary (request tracing, authentication, access rules; tokens and
 * grants read from the shared store, cached as in the primary and dropped when the primary says a
 * control-plane change happened). Any other request (the control-plane API, the console,
 * registry uploads, metrics) is relayed as is to the primary's Unix socket, whose listener
 * applies audit, auth and limits exactly as on a one-process server.
 *
 * It never writes to the store. It exits when told to drain (after its requests are answered) or
 * when the primary goes away.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { authenticate, Authorizer, authorize, isDataPlane, type Access } from '../auth/index.js';
import { FerryError } from '../errors.js';
import { errorBodyFor, gatewayRoutes, RoutingTable } from '../gateway/index.js';
import { WorkerGateway } from '../gateway/worker-gateway.js';
import type { PrimaryToWorker, WorkerToPrimary } from '../gateway/worker-protocol.js';
import { listener, Router, sendError, type Handler } from '../http/index.js';
import { atLevel, type LogFn } from '../logs/index.js';
import { openStore } from '../store/index.js';
import { OtlpExporter, requestTracing } from '../tracing/index.js';
import { LOAD_REPORT_INTERVAL_MS } from '../control/index.js';
import { createServer, loadTlsCredentials } from './listen.js';
import { CLIENT_ADDRESS_HEADER, type WorkerInit } from './workers.js';

/** Marks the routes a worker relays to the primary. */
const RELAYED: unique symbol = Symbol('relayed');
type WorkerRule = Access | typeof RELAYED;

function send(msg: WorkerToPrimary): void {
  if (process.connected) process.send?.(msg);
}

async function main(init: WorkerInit): Promise<void> {
  const { config } = init;
  const log: LogFn = atLevel(config.logLevel, (level, msg, fields) => send({ type: 'log', level, msg, fields }));
  const store = await openStore(config.databaseUrl === undefined
    ? { kind: 'sqlite', path: path.join(path.resolve(config.dataDir), 'ferry.db'), opened: true }
    : { kind: 'postgres', url: config.databaseUrl });
  const authz = new Authorizer(store);
  const table = new RoutingTable();
  const gateway = new WorkerGateway({
    table, maxBodyBytes: config.maxBodyBytes, drainTimeoutMs: config.replicaDrainTimeoutMs, reportIntervalMs: LOAD_REPORT_INTERVAL_MS, send,
    traffic: { maxConcurrencyPerReplica: config.replicaMaxConcurrency, maxQueued: config.bufferDepth, queueTimeoutMs: config.bufferTimeoutMs },
  });
  const exporter = config.otlpEndpoint === undefined ? undefined : new OtlpExporter({ endpoint: config.otlpEndpoint, log });
  const own = new Router<Handler, Access>();
  gatewayRoutes(own, table, { maxBodyBytes: config.maxBodyBytes, stats: gateway.stats, log, logLevel: config.logLevel, exporter, authz });
  const served = new Map(own.list().map((r) => [`${r.method} ${r.pattern}`, r]));
  // The primary's routes in its order, so a path matches here as it would there.
  const router = new Router<Handler, WorkerRule>();
  for (const { method, pattern } of init.routes) {
    const r = served.get(`${method} ${pattern}`);
    if (r !== undefined && servedHere(method, r.meta)) router.add(method, pattern, r.handler, r.meta);
    else router.add(method, pattern, (ctx) => relay(ctx.req, ctx.res), RELAYED);
  }
  const handle = listener<WorkerRule>(router, [requestTracing(), skipRelayed(authenticate(authz)), skipRelayed(authorize(authz))], (err, ctx) => {
    log('error', 'request failed', { method: ctx.method, path: ctx.path, error: err instanceof Error ? err.stack : String(err) });
  }, errorBodyFor);

  const agent = new http.Agent({ keepAlive: true });
  /** Relays a request to the primary as it came (headers, body stream), and its answer back. */
  function relay(req: http.IncomingMessage, res: http.ServerResponse): undefined {
    // Hop-by-hop headers are the client's connection's, not the relay's: a client's
    // `Connection: close` would make the primary close the relay's connection after an early
    // answer (a refused change) while the body is still being written to it.
    const headers: http.OutgoingHttpHeaders = { ...req.headers, [CLIENT_ADDRESS_HEADER]: req.socket.remoteAddress ?? '' };
    for (const h of HOP_BY_HOP) delete headers[h];
    const upstream = http.request({ socketPath: init.primarySocket, agent, method: req.method, path: req.url, headers }, (answer) => {
      const headers = { ...answer.headers };
      delete headers['keep-alive'];
      res.writeHead(answer.statusCode ?? 502, headers);
      answer.pipe(res);
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      // Not reached at all: nothing was done, say so. Lost on the way (the primary died while it
      // held the request): the client cannot know whether a change was made, so, as with one
      // process, its connection ends without an answer.
      if (!res.headersSent && (err.code === 'ECONNREFUSED' || err.code === 'ENOENT')) {
        sendError(res, new FerryError('TEMPORARILY_UNAVAILABLE', `The server's control plane did not answer (${err.code}); retry shortly.`, { retryAfterS: 1 }), (e) => errorBodyFor(req.url ?? '/', e));
      } else if (!res.writableFinished) {
        res.destroy();
      }
    });
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
    return undefined;
  }
  // A path no route matches is answered here as the primary would (404, 405, in the path's error shape).
  const server = createServer(handle, config, await loadTlsCredentials(config.tls));
  process.on('message', (msg: PrimaryToWorker) => {
    if (msg.type === 'authz-changed') authz.changed();
    else if (msg.type === 'drain') void drain();
    else gateway.onMessage(msg);
  });
  // node:cluster crashes a worker whose server is closed while the primary still answers its
  // listen (a failed listen's null handle is closed): a drain waits for the listen to settle.
  const listened = new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(init.port, config.host, () => resolve());
  });
  let draining: Promise<void> | undefined;
  const drain = (): Promise<void> => (draining ??= (async () => {
    await listened.catch(() => undefined);
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    const timer = setTimeout(() => server.closeAllConnections(), DRAIN_FORCE_MS);
    await closed;
    clearTimeout(timer);
    gateway.close();
    agent.destroy();
    await exporter?.close();
    await store.close();
    process.disconnect();
  })());
  // The primary is gone (it crashed, or closed the channel): nothing routes or counts here any more.
  process.once('disconnect', () => {
    void drain().finally(() => process.exit(0));
  });
  await listened;
  const addr = server.address() as AddressInfo;
  send({ type: 'listening', address: addr.address, family: addr.family, port: addr.port });
}

/** Headers of one connection (RFC 9110 §7.6.1), not passed on by the relay. */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade'];

/** Time a draining worker gives its open connections before closing them (as the one-process server). */
const DRAIN_FORCE_MS = 5000;

/** Whether a worker answers a route itself: reads and inference, which the audit trail does not record. */
function servedHere(method: string, rule: Access | undefined): boolean {
  return method === 'GET' || method === 'HEAD' || rule?.kind === 'public' || isDataPlane(rule);
}

/** A middleware that leaves relayed routes alone (the primary applies it). */
function skipRelayed(mw: (next: Handler, rule: Access | undefined, route: { method: string; pattern: string }) => Handler) {
  return (next: Handler, rule: WorkerRule | undefined, route: { method: string; pattern: string }): Handler => (rule === RELAYED ? next : mw(next, rule, route));
}

process.once('message', (init: WorkerInit) => {
  main(init).catch((err: unknown) => {
    const code = (err as NodeJS.ErrnoException).code;
    send({ type: 'failed', message: err instanceof Error ? err.message : String(err), code: typeof code === 'string' ? code : undefined });
    process.disconnect();
    process.exitCode = 1;
  });
});
send({ type: 'loaded' });
