/**
 * Gateway workers (`gatewayWorkers` ≥ 2): the primary process keeps the control plane (controller,
 * autoscaler, registry writes, runtime, telemetry, inference tables) and forks that many gateway
 * worker processes with node:cluster. The workers accept the server's connections on the shared
 * port (cluster's round-robin on Linux) and serve inference themselves (./worker-main.ts); every
 * other request goes to the primary over a Unix socket only the server's user can reach, where the
 * primary's own request listener (audit, authentication, access rules, limits) answers it.
 *
 * How routes, replica addresses and load flow (the design of several servers on Kubernetes, with
 * IPC in place of the store): routes and replica addresses go from the primary's routing table to
 * the workers (`RouteMirror`); load goes from the workers to the primary every second and at once
 * for an entity at zero, and the autoscaler adds it as it adds other servers' load (`peerDemand`);
 * rate-limit admissions, family lookups, finished-request events and canary samples go to the
 * primary, which holds the buckets and publishes the events once.
 *
 * A worker that dies is replaced (requests on the others go on); `close` drains every worker.
 */
import cluster, { type Worker } from 'node:cluster';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServerConfig } from '../config/index.js';
import { PEER_LOAD_MAX_AGE_MS, peerDemand } from '../control/index.js';
import { FerryError } from '../errors.js';
import { gatewayRequests, gatewayStreams, type GatewayRequestEvent, type GatewayStats, type RoutingTable } from '../gateway/index.js';
import type { RouteMirror } from '../gateway/route-mirror.js';
import type { PrimaryToWorker, WorkerEntityLoad, WorkerToPrimary } from '../gateway/worker-protocol.js';
import type { LogFn } from '../logs/index.js';
import { listenError } from './listen.js';
import type { GatewayLoadReport } from '../store/index.js';

/** What a worker is told when it starts (its first message). */
export interface WorkerInit {
  type: 'init';
  config: ServerConfig;
  /** The primary's Unix socket, for the requests a worker does not serve itself. */
  primarySocket: string;
  /** The primary's routes in match order: a worker matches a request as the primary would. */
  routes: Array<{ method: string; pattern: string }>;
  /** The port to listen on: `config.port`, or the free port chosen for them when that is 0. */
  port: number;
}

/** The header that carries a forwarded request's client address (set by the worker, trusted only on the primary's socket). */
export const CLIENT_ADDRESS_HEADER = 'x-ferry-client-address';

export interface GatewayWorkersOptions {
  count: number;
  config: ServerConfig;
  /** The primary's routing table (a waiting request pokes its entity's autoscaler). */
  table: RoutingTable;
  mirror: RouteMirror;
  now: () => number;
  log: LogFn;
}

/** What the workers need of the primary once its routes and controller exist. */
export interface PrimaryParts {
  /** The primary's request listener: answers what workers relay. */
  handle: http.RequestListener;
  /** The primary's routes in match order (`Router.list()`). */
  routes: WorkerInit['routes'];
  /** Where the workers' canary samples go (the controller's `GatewayStats`). */
  stats: Pick<GatewayStats, 'record'>;
}

/** Time a replaced worker waits before it is forked again after dying young, so a crash loop does not spin. */
const REPLACE_BACKOFF_MS = 1000;
/** A worker that lived this long died "old": replaced at once. */
const STABLE_AFTER_MS = 10_000;
/** Time draining workers get before their remaining connections are closed (as the one-process server's close). */
const DRAIN_FORCE_MS = 5000;

export class GatewayWorkers {
  private readonly workers = new Map<number, { worker: Worker; startedMs: number }>();
  private readonly reports = new Map<number, GatewayLoadReport>();
  /** Each worker's last report as it sent it (with the in-flight counts). */
  private readonly inFlight = new Map<number, WorkerEntityLoad[]>();
  private primaryServer: http.Server | undefined;
  private parts: PrimaryParts | undefined;
  private port = 0;
  private socketDir: string | undefined;
  private closing = false;

  constructor(private readonly options: GatewayWorkersOptions) {}

  /** Listens on the primary's socket, forks the workers, and resolves once all of them listen. */
  async start(parts: PrimaryParts): Promise<{ address: string; family: string; port: number }> {
    this.parts = parts;
    this.socketDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'ferry-gw-'));
    const socketPath = path.join(this.socketDir, 'primary.sock');
    this.primaryServer = http.createServer({ maxHeaderSize: this.options.config.maxHeaderBytes }, (req, res) => {
      // The worker's client: the audit trail records it as if the client had called the primary.
      const client = req.headers[CLIENT_ADDRESS_HEADER];
      delete req.headers[CLIENT_ADDRESS_HEADER];
      if (typeof client === 'string') Object.defineProperty(req.socket, 'remoteAddress', { value: client, configurable: true });
      parts.handle(req, res);
    });
    this.primaryServer.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      this.primaryServer?.once('error', reject);
      this.primaryServer?.listen(socketPath, () => resolve());
    });
    await fsp.chmod(socketPath, 0o600);
    // node:cluster shares one listening socket per (address, port) among the workers of this
    // process: with port 0 the workers of two servers in one process (tests) would share one, so
    // port 0 becomes a free port first.
    this.port = this.options.config.port === 0 ? await freePort(this.options.config.host) : this.options.config.port;
    const addresses = await Promise.all(Array.from({ length: this.options.count }, () => this.fork(socketPath)));
    return addresses[0] as { address: string; family: string; port: number };
  }

  /** The workers' load by served entity, for the autoscaler (as other servers' load: `PeerLoad`). */
  readonly load = {
    demand: (nowMs: number): Map<string, number> => peerDemand([...this.reports.values()], '', nowMs),
    refresh: (): Promise<void> => Promise.resolve(),
  };

  /**
   * The workers' requests in flight and queued for a served entity, as of their last reports (at
   * most a second old; a report older than `PEER_LOAD_MAX_AGE_MS` is a gone worker's: not counted).
   */
  readonly loadOf = (endpoint: string, servedEntity: string): { inFlight: number; queued: number } => {
    const nowMs = this.options.now();
    const sum = { inFlight: 0, queued: 0 };
    for (const [worker, r] of this.reports) {
      if (nowMs - r.reportedMs > PEER_LOAD_MAX_AGE_MS) continue;
      for (const e of this.inFlight.get(worker) ?? []) {
        if (e.endpoint !== endpoint || e.servedEntity !== servedEntity) continue;
        sum.inFlight += e.inFlight;
        sum.queued += e.queued;
      }
    }
    return sum;
  };

  /** Tells every worker to drop its token and grant caches (after a control-plane change). */
  authzChanged(): void {
    this.broadcast({ type: 'authz-changed' });
  }

  /** Drains every worker (each stops accepting, finishes its requests, exits), then closes the primary's socket. */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.workers.values()].map(({ worker }) => new Promise<void>((resolve) => {
      if (worker.isDead()) return resolve();
      worker.once('exit', () => resolve());
      const kill = setTimeout(() => worker.process.kill('SIGKILL'), DRAIN_FORCE_MS + 5000);
      worker.once('exit', () => clearTimeout(kill));
      this.send(worker, { type: 'drain' });
    })));
    await new Promise<void>((resolve) => {
      if (this.primaryServer === undefined) return resolve();
      this.primaryServer.close(() => resolve());
      this.primaryServer.closeAllConnections();
    });
    if (this.socketDir !== undefined) await fsp.rm(this.socketDir, { recursive: true, force: true });
  }

  private fork(socketPath: string): Promise<{ address: string; family: string; port: number }> {
    cluster.setupPrimary({
      exec: fileURLToPath(new URL('./worker-main.js', import.meta.url)), serialization: 'advanced', args: [],
      // A server started inside a test runner must not make its workers test runners too.
      execArgv: withoutTestRunnerFlags(process.execArgv),
    });
    const worker = cluster.fork();
    const startedMs = Date.now();
    this.workers.set(worker.id, { worker, startedMs });
    const init: WorkerInit = { type: 'init', config: this.options.config, primarySocket: socketPath, routes: this.parts?.routes ?? [], port: this.port };
    return new Promise((resolve, reject) => {
      let up = false;
      let failure: Error | undefined;
      worker.on('message', (msg: WorkerToPrimary) => {
        if (msg.type === 'loaded') {
          worker.send(init);
          return;
        }
        if (msg.type === 'failed') {
          failure = listenError(this.options.config, Object.assign(new Error(msg.message), { code: msg.code }));
          return;
        }
        if (msg.type === 'listening' && !up) {
          up = true;
          this.options.mirror.addWorker(worker.id);
          resolve({ address: msg.address, family: msg.family, port: msg.port });
          return;
        }
        this.onMessage(worker, msg);
      });
      worker.once('exit', (code, signal) => {
        this.workers.delete(worker.id);
        this.reports.delete(worker.id);
        this.inFlight.delete(worker.id);
        this.options.mirror.removeWorker(worker.id);
        if (!up) reject(failure ?? new FerryError('INTERNAL_ERROR', `Gateway worker ${worker.id} exited (${signal ?? `code ${code}`}) before it listened; see the log lines above.`));
        if (this.closing || !up) return;
        this.options.log('error', 'gateway worker exited; starting another', { worker: worker.id, code, signal });
        const delay = Date.now() - startedMs < STABLE_AFTER_MS ? REPLACE_BACKOFF_MS : 0;
        setTimeout(() => {
          if (this.closing) return;
          this.fork(socketPath).catch((err: unknown) => this.options.log('error', 'starting a gateway worker failed', { error: String(err) }));
        }, delay).unref();
      });
    });
  }

  private onMessage(worker: Worker, msg: WorkerToPrimary): void {
    switch (msg.type) {
      case 'telemetry':
        for (const s of msg.stats) this.parts?.stats.record(s[0], s[1], s[2]);
        if (gatewayRequests.hasSubscribers) for (const ev of msg.requests) gatewayRequests.publish(revive(ev));
        if (gatewayStreams.hasSubscribers) for (const ev of msg.streams) gatewayStreams.publish(ev);
        return;
      case 'admit':
        void Promise.all(msg.calls.map(async (c) => ({ id: c.id, error: await this.options.mirror.admit(c.endpoint, c.principal) })))
          .then((answers) => this.send(worker, { type: 'admitted', answers }));
        return;
      case 'charge':
        this.options.mirror.charge(msg.endpoint, msg.principal, msg.tokens);
        return;
      case 'resolve':
        void this.options.mirror.resolve(msg.endpoint, msg.servedEntity, msg.raw, msg.field).then(({ member, error }) => this.send(worker, { type: 'member', id: msg.id, member, error }));
        return;
      case 'load':
        this.reports.set(worker.id, { server: `worker-${worker.id}`, reportedMs: this.options.now(), entities: msg.entities });
        this.inFlight.set(worker.id, msg.entities);
        // A request waits for an entity: the autoscaler is poked as for a request of its own
        // (it starts a replica at once when the entity has none).
        for (const e of msg.entities) {
          if (e.queued > 0) this.options.table.get(e.endpoint)?.entities.find((x) => x.name === e.servedEntity)?.traffic.opts.onDemand();
        }
        return;
      case 'released':
        this.options.mirror.released(worker.id, msg.backends);
        return;
      case 'log':
        this.options.log(msg.level, msg.msg, { ...msg.fields, gateway_worker: worker.id });
        return;
      case 'listening':
      case 'loaded':
      case 'failed':
        return;
    }
  }

  private broadcast(msg: PrimaryToWorker): void {
    for (const { worker } of this.workers.values()) this.send(worker, msg);
  }

  /** Sends unless the worker is gone (its exit handler cleans up). */
  readonly sendTo = (id: number, msg: PrimaryToWorker): void => {
    const w = this.workers.get(id);
    if (w !== undefined) this.send(w.worker, msg);
  };

  private send(worker: Worker, msg: PrimaryToWorker): void {
    if (!worker.isConnected()) return;
    worker.send(msg, (err: Error | null) => {
      if (err !== null && !this.closing) this.options.log('warn', 'a message to a gateway worker failed', { worker: worker.id, error: err.message });
    });
  }
}

/** Bodies cross the IPC channel as plain byte arrays: Buffers again for the subscribers. */
function revive(ev: GatewayRequestEvent): GatewayRequestEvent {
  const buf = (b: Uint8Array | undefined): Buffer | undefined => (b === undefined ? undefined : Buffer.from(b.buffer, b.byteOffset, b.byteLength));
  return { ...ev, requestBody: buf(ev.requestBody), responseBody: buf(ev.responseBody) };
}

/** A port free on `host` right now (the kernel's choice for port 0). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, host, () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** `execArgv` without node's test-runner flags and their values (`--test-name-pattern x` as well as `--test-name-pattern=x`). */
function withoutTestRunnerFlags(argv: string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (!a.startsWith('--test') && !a.startsWith('--experimental-test')) kept.push(a);
    else if (!a.includes('=') && argv[i + 1]?.startsWith('-') === false) i++;
  }
  return kept;
}
