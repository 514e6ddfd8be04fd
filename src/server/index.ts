/**
 * `ferry server`: the composition root. Opens the metadata and artifact stores in the data
 * directory, bootstraps the admin token, starts the artifact inspector, finishes interrupted
 * registrations (through the inspector: one that fails is FAILED_REGISTRATION, never retried at
 * every start), mounts the APIs, listens, and only then brings the stored endpoints back up.
 * Every request passes the audit trail, authentication and the route's access rule (src/auth);
 * health probes are public, every other route requires a bearer token.
 */
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { openArtifactStore } from '../artifacts/index.js';
import { access, auditRoutes, AuditTrail, authenticate, Authorizer, authorize, authRoutes, bootstrapAdminToken, type Access, type ServerRouter } from '../auth/index.js';
import type { ServerConfig } from '../config/index.js';
import { consoleRoutes } from '../console/index.js';
import { AliasFollower, EndpointController, endpointRoutes, endpointsServing, LOAD_REPORT_INTERVAL_MS, PeerLoad, RouteFollower } from '../control/index.js';
import { FramedChannel } from '../channel/index.js';
import { errorBodyFor, gatewayRoutes, RoutingTable } from '../gateway/index.js';
import { RouteMirror } from '../gateway/route-mirror.js';
import { FerryError } from '../errors.js';
import type { GrpcServer } from '../grpc/index.js';
import { InferenceTableWriter, inferenceTableRoutes } from '../inference-tables/index.js';
import { listener, Router, type Handler } from '../http/index.js';
import { atLevel, type LogFn } from '../logs/index.js';
import { Inspector, Registry, registryRoutes } from '../registry/index.js';
import { openCluster, openRuntime, type Cluster, type Runtime } from '../runtime/index.js';
import { openInferenceTableStore, openStore, type MetadataStore } from '../store/index.js';
import { simulatorRoutes } from '../simulator/index.js';
import { Telemetry, telemetryRoutes } from '../telemetry/index.js';
import { trackingRoutes } from '../tracking/index.js';
import { OtlpExporter, requestTracing, traceOf } from '../tracing/index.js';
import { lockDataDir, restrictDataDir } from './data-dir.js';
import { LeaderRuntime, leaderOnly } from './leadership.js';
import { bindWarning, createServer, listenError, loadTlsCredentials } from './listen.js';
import { GatewayWorkers } from './workers.js';

export interface FerryServer {
  /** Base URL, e.g. http://127.0.0.1:8080 (https:// with TLS) */
  url: string;
  /** "host:port" of the OIP v2 gRPC front end; undefined without `grpcPort`. */
  grpcAddress: string | undefined;
  /** The admin token when this start generated it (first start without FERRY_ADMIN_TOKEN). */
  generatedAdminToken: string | undefined;
  store: MetadataStore;
  router: ServerRouter;
  controller: EndpointController;
  close(): Promise<void>;
}

export interface ServerDeps {
  /** FERRY_ADMIN_TOKEN, when set. */
  adminToken: string | undefined;
  now?: () => number;
  /** Where log lines go; those below the configured `logLevel` are dropped before. */
  log?: LogFn;
  /**
   * Kubernetes runtime: this server's pod (env POD_NAME), its name in the leader election and the
   * pod the leader labels; undefined: hostname and pid, and no label.
   */
  podName?: string | undefined;
  /**
   * Kubernetes runtime: called once this server, having led, lost the leadership (or failed to
   * take it up) and has closed itself; the CLI exits non-zero, so Kubernetes restarts the
   * container, which comes back as a follower.
   */
  onStepDown?: () => void;
}

export async function startServer(config: ServerConfig, deps: ServerDeps): Promise<FerryServer> {
  const now = deps.now ?? Date.now;
  const log = atLevel(config.logLevel, deps.log ?? (() => undefined));
  const dataDir = path.resolve(config.dataDir);
  const tlsCredentials = await loadTlsCredentials(config.tls);
  for (const warning of await restrictDataDir(dataDir)) log('warn', warning);
  const releaseLock = await lockDataDir(dataDir);
  const store = await openStore(config.databaseUrl === undefined
    ? { kind: 'sqlite', path: path.join(dataDir, 'ferry.db') }
    : { kind: 'postgres', url: config.databaseUrl });
  const audit = new AuditTrail({
    store, now, retentionMs: config.auditRetentionMs, anonymousRowsPerMinute: config.auditAnonymousRowsPerMinute,
    onError: (err) => log('error', 'writing the audit log failed', { error: String(err) }),
  });
  /** What to stop if the start fails half way (replicas, the warm pool, timers). */
  let stopStarted: (() => Promise<void>) | undefined;
  try {
    const artifacts = await openArtifactStore(config.artifactStore.kind === 'local'
      ? { kind: 'local', root: path.join(dataDir, 'artifacts') }
      : { ...config.artifactStore, credentials: config.artifactStore.credentials ?? takeAwsCredentials(process.env), cacheDir: path.join(dataDir, 'artifact-cache') });
    const generatedAdminToken = await bootstrapAdminToken(store, dataDir, deps.adminToken, now());
    // Uploaded artifacts are parsed in inspector processes, never in this one (src/registry/inspector.ts).
    const inspector = new Inspector({
      memoryLimitBytes: config.inspectorMemoryLimitBytes, timeoutMs: config.inspectionTimeoutMs,
      readRoots: [path.join(dataDir, 'artifacts'), path.join(dataDir, 'artifact-cache')],
    });
    stopStarted = () => inspector.close();
    const registry = new Registry(store, artifacts, { maxUploadBytes: config.maxUploadBytes, now, inspector });
    // Several servers share the store on Kubernetes: a version another one is registering right
    // now is PENDING too, so only those pending for longer than any upload takes are finished.
    await registry.recoverPending(config.runtime.kind === 'kubernetes' ? SHARED_STORE_RECOVERY_AGE_MS : 0);

    await audit.start();
    const authz = new Authorizer(store, now);
    const router: ServerRouter = new Router<Handler, Access>()
      .add('GET', '/v2/health/live', () => ({ body: { live: true } }), access.public)
      .add('GET', '/v2/health/ready', () => ({ body: { ready: true } }), access.public);
    await consoleRoutes(router);
    const jsonLimits = { maxDepth: config.maxJsonDepth, maxElements: config.maxJsonElements };
    authRoutes(router, authz, { maxBodyBytes: config.maxBodyBytes, jsonLimits, now, deleteOwned: (principal) => registry.deleteUploadsOf(principal) });
    auditRoutes(router, store);
    registryRoutes(router, registry, authz, {
      maxBodyBytes: config.maxBodyBytes, maxUploadBytes: config.maxUploadBytes, jsonLimits,
      servedBy: async (model) => endpointsServing(await store.listEndpoints(), model),
    });
    trackingRoutes(router, store, authz, { maxBodyBytes: config.maxBodyBytes, jsonLimits, now });

    const runtimeOptions: Parameters<typeof openRuntime>[0] = config.runtime.kind === 'kubernetes'
      ? {
        ...config.runtime, startTimeoutMs: config.replicaStartTimeoutMs, drainTimeoutMs: config.replicaDrainTimeoutMs, logLevel: config.logLevel, log,
        // Pods fetch artifacts themselves: from the bucket (credentials via the runtime's
        // artifactStoreSecret), or from the local store's directory, which the pods must then see
        // at the same path (Ferry mounts nothing for it: in a real cluster, use S3).
        artifactStore: config.artifactStore.kind === 'local'
          ? { kind: 'local', root: path.resolve(dataDir, 'artifacts') }
          : {
            kind: 's3', bucket: config.artifactStore.bucket, prefix: config.artifactStore.prefix, region: config.artifactStore.region,
            forcePathStyle: config.artifactStore.forcePathStyle, ...(config.artifactStore.endpoint === undefined ? {} : { endpoint: config.artifactStore.endpoint }),
          },
      }
      : {
        kind: 'local', stateDir: path.join(dataDir, 'runtime'),
        startTimeoutMs: config.replicaStartTimeoutMs, drainTimeoutMs: config.replicaDrainTimeoutMs,
        warmPoolSize: config.warmPoolSize, warmPoolMemoryLimitBytes: config.replicaMemoryLimitBytes, replicaUser: config.replicaUser,
        logLevel: config.logLevel, sandbox: config.sandbox, allowUnsandboxedUserCode: config.allowUnsandboxedUserCode,
        python: config.python, pythonEnvManager: config.pythonEnvManager, pythonPipArgs: [...config.pythonPipArgs],
        pythonWarmPoolSize: config.pythonWarmPoolSize, maxProcessesPerSandbox: config.maxProcessesPerSandbox,
        ...(config.pythonPreload === undefined ? {} : { pythonPreload: [...config.pythonPreload] }),
        gpu: { gpus: config.gpus, gpuFallback: config.gpuFallback, gpuLibraries: config.gpuLibraries },
      };
    // Kubernetes: several servers may run side by side; one, elected over a Lease, runs the
    // control plane (its runtime opens, adopting the pods, when it becomes leader). Joined before
    // anything else starts, so an unreachable API server fails the start.
    const cluster: Cluster | undefined = config.runtime.kind === 'kubernetes'
      ? await openCluster({
        namespace: config.runtime.namespace, identity: deps.podName ?? `${os.hostname()}-${process.pid}`, podName: deps.podName,
        leaseName: config.runtime.leaseName, leaseDurationMs: config.runtime.leaseDurationMs, renewIntervalMs: config.runtime.renewIntervalMs,
        onError: (err) => log('warn', 'Kubernetes API call failed (retrying)', { error: err instanceof Error ? err.message : String(err) }),
      })
      : undefined;
    stopStarted = async () => {
      await cluster?.close();
      await inspector.close();
    };
    const leaderRuntime = cluster === undefined ? undefined : new LeaderRuntime(() => openRuntime(runtimeOptions));
    const runtime: Runtime = leaderRuntime ?? await openRuntime(runtimeOptions);
    if (runtime.sandbox !== undefined) {
      const { kind, reason } = runtime.sandbox;
      const userCode = kind === 'bwrap' ? 'sandboxed' : config.allowUnsandboxedUserCode ? 'allowed unsandboxed (allowUnsandboxedUserCode)' : 'refused (allowUnsandboxedUserCode is false)';
      log(kind === 'none' ? 'warn' : 'info', 'replica sandbox', { sandbox: kind, reason, userCodeModels: userCode, processLimit: runtime.processLimit });
    }
    if (runtime.gpus !== undefined) {
      log('info', 'replica GPUs', { gpus: runtime.gpus.devices.map((d) => (d.name === undefined ? d.id : `${d.id} (${d.name})`)), source: runtime.gpus.source, gpuFallback: config.gpuFallback });
    }
    stopStarted = async () => {
      await runtime.close();
      await cluster?.close();
      await inspector.close();
    };
    // With gateway workers (./workers.ts), the table and its backends are mirrored to them.
    let mirror: RouteMirror | undefined;
    const mirrored = config.gatewayWorkers > 1 ? (): void => mirror?.changed() : undefined;
    const table = new RoutingTable(mirrored);
    const traffic = {
      maxConcurrencyPerReplica: config.replicaMaxConcurrency, maxQueued: config.bufferDepth, queueTimeoutMs: config.bufferTimeoutMs,
      ...(mirrored === undefined ? {} : { onBackendsChange: mirrored }),
    };
    let workers: GatewayWorkers | undefined;
    if (mirrored !== undefined) {
      mirror = new RouteMirror({
        table, inferenceTableOn: (name) => settingsOf(name)?.enabled === true, send: (w, msg) => workers?.sendTo(w, msg),
        addressOf: (b) => (b.channel instanceof FramedChannel ? b.channel.address : undefined),
      });
      workers = new GatewayWorkers({ count: config.gatewayWorkers, config, table, mirror, now, log });
      const w = workers;
      authz.onChange(() => w.authzChanged());
    }
    const controller = new EndpointController({
      store, authz, registry, artifacts, runtime, table, now, log,
      defaultRequestTimeoutMs: config.requestTimeoutMs,
      replicaMemoryLimitBytes: config.replicaMemoryLimitBytes,
      maxBodyBytes: config.maxBodyBytes,
      inputLimits: { maxRowsPerRequest: config.maxRowsPerRequest, maxJsonDepth: config.maxJsonDepth, maxJsonElements: config.maxJsonElements },
      drainTimeoutMs: config.replicaDrainTimeoutMs,
      traffic,
      // In a cluster, the followers' gateways serve too: their load counts in the autoscaler.
      // With gateway workers, theirs (the primary serves only gRPC).
      peers: cluster !== undefined ? new PeerLoad({ store, self: cluster.identity, log }) : workers?.load,
      workerLoad: workers?.loadOf,
    });
    // Until it leads, a server in a cluster routes from the stored configs and the discovered pods.
    const follower = cluster === undefined ? undefined : new RouteFollower({
      store, authz, table, replicas: cluster, traffic, log,
      defaultRequestTimeoutMs: config.requestTimeoutMs, maxBodyBytes: config.maxBodyBytes, drainTimeoutMs: config.replicaDrainTimeoutMs,
      refreshIntervalMs: FOLLOWER_REFRESH_MS, server: cluster.identity, reportIntervalMs: LOAD_REPORT_INTERVAL_MS, now,
    });
    /** Whether this server runs the control plane: always without a cluster; in one, once its controller has started. */
    let leading = cluster === undefined;
    // Endpoints with follow_alias roll forward when their alias moves (the leader's controller does it).
    const aliases = new AliasFollower({
      store, log,
      update: (name, body) => (leading ? controller.updateConfig(name, body) : Promise.reject(new FerryError('RESOURCE_CONFLICT', 'This server does not lead: the leader follows aliases.'))),
    });
    /** Whether the API listens (the controller restores the stored endpoints from then on). */
    let listening = false;
    // Subscribed before the controller starts, so the replicas it brings back are counted.
    const exporter = config.otlpEndpoint === undefined ? undefined : new OtlpExporter({ endpoint: config.otlpEndpoint, log });
    const telemetry = new Telemetry({
      now, entities: () => controller.entityGauges(), replicas: () => runtime.list(), routed: (name) => table.get(name) !== undefined,
      ...(exporter === undefined ? {} : { spanExport: () => exporter.stats }),
    });
    stopStarted = async () => {
      telemetry.close();
      follower?.close();
      await aliases.close();
      await controller.close();
      await exporter?.close();
      await cluster?.close();
      await inspector.close();
    };
    endpointRoutes(router, controller, authz, { maxBodyBytes: config.maxBodyBytes, jsonLimits });
    const inferenceStore = await openInferenceTableStore(config.databaseUrl === undefined
      ? { kind: 'sqlite', path: path.join(dataDir, 'inference.db') }
      : { kind: 'postgres', url: config.databaseUrl });
    const settingsOf = (name: string): ReturnType<EndpointController['inferenceTableOf']> => (leading || follower === undefined ? controller.inferenceTableOf(name) : follower.inferenceTableOf(name));
    const inferenceTable = new InferenceTableWriter({
      store: inferenceStore, settingsOf, bufferRows: config.inferenceTableBufferRows, retentionMs: config.inferenceTableRetentionMs, now,
      onError: (err) => log('error', 'inference table write failed', { error: String(err) }),
    });
    stopStarted = async () => {
      await workers?.close();
      telemetry.close();
      await inferenceTable.close();
      await inferenceStore.close();
      follower?.close();
      await aliases.close();
      await controller.close();
      await exporter?.close();
      await cluster?.close();
      await inspector.close();
    };
    await inferenceTable.start();
    // The stores created their files with the umask's mode.
    for (const warning of await restrictDataDir(dataDir)) log('warn', warning);
    inferenceTableRoutes(router, { store: inferenceStore, writer: inferenceTable, settingsOf });
    // Telemetry first: its `GET /v2/models/stats` must win over the gateway's `GET /v2/models/:name`.
    telemetryRoutes(router, telemetry, authz);
    simulatorRoutes(router, {
      controller, telemetry, inferenceStore, inferenceTableOf: settingsOf, gateway: traffic, now, maxBodyBytes: config.maxBodyBytes, jsonLimits,
    });
    gatewayRoutes(router, table, { maxBodyBytes: config.maxBodyBytes, stats: controller.stats, log, logLevel: config.logLevel, exporter, authz });
    /** This server's pod carries the leader label (removed at close). */
    let labelled = false;
    let steppedDown = false;
    /** Closes the server and tells the CLI (`onStepDown`); nothing until the server is up (then it runs at once). */
    let finishStepDown = (): void => undefined;
    /** Stops leading at once; the close follows (at once, or once the start is done). */
    const stepDown = (reason: string, err?: unknown): void => {
      if (steppedDown) return;
      steppedDown = true;
      leading = false;
      log('error', `stepping down: ${reason}; closing so that Kubernetes restarts this server as a follower`, { error: err instanceof Error ? err.message : undefined });
      // Fenced before anything else: the controller winds down during the close, and none of its
      // stops may reach pods the new leader may have adopted already.
      void leaderRuntime?.fence().catch((e: unknown) => log('warn', 'closing the runtime on step-down failed', { error: String(e) }));
      finishStepDown();
    };
    if (cluster === undefined || follower === undefined || leaderRuntime === undefined) {
      await controller.start();
    } else {
      let promoting: Promise<void> | undefined;
      cluster.onLeadershipChange((isLeader) => {
        if (steppedDown) return; // closing: the elector may still take a free Lease before it stops
        if (!isLeader) return stepDown('lost the leadership');
        promoting = (async () => {
          log('info', 'elected leader: starting the control plane', { identity: cluster.identity });
          await leaderRuntime.activate();
          // A step-down while this ran wins: no control plane, no label.
          if (steppedDown) return;
          await controller.start();
          if (steppedDown) return;
          leading = true;
          if (listening) controller.restore();
          follower.handOver();
          await cluster.markLeader(true).then(() => {
            labelled = true;
          }, (err: unknown) => log('error', 'labelling this pod as the leader failed', { error: String(err) }));
        })();
        promoting.catch((err: unknown) => stepDown('could not start the control plane', err));
      });
      cluster.onAddressesChange(() => follower.syncReplicas());
      await cluster.elect();
      // A free Lease (or our own, after a restart): lead before listening; else follow.
      if (promoting !== undefined) {
        await promoting;
      } else {
        // A leader's container that crashed restarts in the same pod, still labelled: unlabel it,
        // or the leader's Service would send control-plane calls here too.
        await cluster.markLeader(false).catch((err: unknown) => log('warn', 'removing a stale leader label failed', { error: String(err) }));
        await follower.start();
      }
      log('info', leading ? 'leading the control plane' : 'following: serving inference, the control plane runs on the leader', { identity: cluster.identity });
    }

    const middlewares = [
      requestTracing(),
      audit.record,
      authenticate(authz),
      authorize(authz),
      leaderOnly(() => leading),
      audit.writeAhead,
    ];
    const handle = listener(router, middlewares, (err, ctx) => {
      const trace = traceOf(ctx);
      log('error', 'request failed', { method: ctx.method, path: ctx.path, request_id: trace?.requestId, trace_id: trace?.traceId, error: err instanceof Error ? err.stack : String(err) });
    }, errorBodyFor);
    // One process: it listens. With gateway workers: they listen (on the same port), this
    // process answers what they relay and runs the control plane.
    const server = workers === undefined ? createServer(handle, config, tlsCredentials) : undefined;
    const addr: Pick<AddressInfo, 'address' | 'family' | 'port'> = server === undefined
      ? await (workers as GatewayWorkers).start({ handle, routes: router.list().map((r) => ({ method: r.method, pattern: r.pattern })), stats: controller.stats })
      : await new Promise((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) => reject(listenError(config, err)));
        server.listen(config.port, config.host, () => resolve(server.address() as AddressInfo));
      });
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    const url = `${tlsCredentials === undefined ? 'http' : 'https'}://${host}:${addr.port}`;
    log('info', 'ferry server listening', { url, dataDir });
    // The gRPC front end runs every call through `handle`: the same path as HTTP requests.
    let grpcServer: GrpcServer | undefined;
    if (config.grpcPort !== undefined) {
      try {
        // Imported only when configured: grpc-js stays out of servers that do not speak gRPC.
        const { startGrpcServer } = await import('../grpc/index.js');
        grpcServer = await startGrpcServer({ host: config.host, port: config.grpcPort, tls: tlsCredentials, maxMessageBytes: config.maxBodyBytes, handle, log });
      } catch (err) {
        server?.close();
        await workers?.close();
        throw new FerryError('INVALID_PARAMETER_VALUE', `Cannot listen for gRPC on ${config.host}:${config.grpcPort}: ${(err as Error).message}; choose another grpcPort.`);
      }
      log('info', 'gRPC (OIP v2) listening', { address: grpcServer.address, tls: tlsCredentials !== undefined });
    }
    // Endpoints come back only now: replicas that misbehave cannot keep the API from answering.
    listening = true;
    if (leading) controller.restore();
    const exposed = bindWarning(addr.address, addr.port, tlsCredentials !== undefined);
    if (exposed !== undefined) log('warn', exposed, { address: addr.address, port: addr.port, tls: tlsCredentials !== undefined });

    let closing: Promise<void> | undefined;
    const close = (): Promise<void> => (closing ??= (async () => {
      await grpcServer?.close();
      if (server !== undefined) {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const timer = setTimeout(() => server.closeAllConnections(), 5000);
        await closed;
        clearTimeout(timer);
      }
      await workers?.close(); // each drains its connections as above
      telemetry.close();
      await inferenceTable.close(); // writes what is still queued
      await inferenceStore.close();
      follower?.close();
      await aliases.close();
      if (labelled) await cluster?.markLeader(false).catch((err: unknown) => log('warn', 'removing the leader label failed', { error: String(err) }));
      await controller.close(); // the Kubernetes runtime leaves the pods serving
      await cluster?.close(); // releases the Lease: a follower takes over at its next look
      await exporter?.close();
      await inspector.close();
      await audit.close();
      await store.close();
      await releaseLock();
    })());
    finishStepDown = () => void close().finally(() => deps.onStepDown?.());
    if (steppedDown) finishStepDown();
    return { url, grpcAddress: grpcServer?.address, generatedAdminToken, store, router, controller, close };
  } catch (err) {
    await stopStarted?.();
    await audit.close();
    await store.close();
    await releaseLock();
    throw err;
  }
}

/** A registration pending for this long on a shared store was interrupted (a 2 GiB upload takes minutes, not an hour). */
const SHARED_STORE_RECOVERY_AGE_MS = 60 * 60 * 1000;

/** How often a follower reads the stored endpoints again (a config the leader activated shows within this). */
const FOLLOWER_REFRESH_MS = 2000;
/**
 * The AWS access key of the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally
 * AWS_SESSION_TOKEN), removed from this process's environment so that nothing the server starts
 * inherits it (the kernel's copy in /proc/<pid>/environ stays: see docs/security.md); the S3 client gets it explicitly
 * (the AWS SDK would otherwise read the variables lazily, at its first call). Undefined when
 * unset: the SDK's other sources (profiles, web identity, instance metadata) apply.
 */
function takeAwsCredentials(env: NodeJS.ProcessEnv): { accessKeyId: string; secretAccessKey: string; sessionToken?: string } | undefined {
  const { AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey, AWS_SESSION_TOKEN: sessionToken } = env;
  if (accessKeyId === undefined || secretAccessKey === undefined) return undefined;
  delete env.AWS_ACCESS_KEY_ID;
  delete env.AWS_SECRET_ACCESS_KEY;
  delete env.AWS_SESSION_TOKEN;
  return { accessKeyId, secretAccessKey, ...(sessionToken === undefined ? {} : { sessionToken }) };
}
