/**
 * The `ferry` command. Exit codes: 0 success, 1 the request failed (the server said no),
 * 2 usage error, 3 the server could not be reached.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { fetchArtifact, parseArtifactStoreLocation } from '../artifacts/index.js';
import { ADMIN_TOKEN_FILE } from '../auth/index.js';
import { compileServerConfig, parseDurationMs, type ServerConfig } from '../config/index.js';
import {
  exampleRequest, FerryApiError, FerryClient, type AccessControlEntry, type EndpointConfigInput, type ModelVersion, type ObjectPermissions, type ServedEntityInput, type ServingEndpoint,
} from '../client/index.js';
import { FerryError } from '../errors.js';
import { WORKLOAD_TYPES, isFlavorName, type WorkloadType } from '../flavors/index.js';
import { writeDemoModel, writeFixtures } from '../fixtures/index.js';
import { isLogLevel, LOG_LEVELS } from '../logs/index.js';
import { awaitPoolClaim, log, openControl, startReplica, type Replica, type ReplicaOptions } from '../replica/index.js';
import type { FerryServer } from '../server/index.js';
import { formatSimulation, SIMULATE_HELP, SIMULATE_OPTIONS, simulateBody, simulateOffline, SimulateUsageError } from './simulate.js';

const HELP = `ferry — serve models behind secure REST endpoints

Usage: ferry <command> [options]

Commands:
  server                      Run the Ferry server (API, registry) on 127.0.0.1:8080
      --host H --port P --data-dir DIR --config FILE.json
      --tls-cert FILE --tls-key FILE   Serve HTTPS only, with this PEM certificate chain and key
      --grpc-port P                    Also serve OIP v2 over gRPC (KServe/Triton clients) on P
  demo                        Run the server with a demo model registered (what \`npm start\` runs)
      --port P --data-dir DIR [--tls-cert FILE --tls-key FILE]
  models register <path> --name NAME [--description TEXT]
                              Upload a .onnx file, a directory with model.onnx, or an MLflow
                              model directory, and register it as a new version of NAME
  models import <dir|archive> Register every <name>.onnx file in DIR (or in a .tar/.tar.gz/.tgz)
                              as a new version of <name>, thousands per call (bulk
                              registration); failures listed per model
  models list [--filter "name LIKE 'iris%'"]
  models show <name> [--version N | --alias A]
  models alias <name> <alias> <version>
                              Point an alias (e.g. champion) at a version
  serve <path | models:/NAME/VERSION | models:/NAME@ALIAS> [--endpoint E] [--name MODEL]
                              Register (if a path) and serve a model; waits until READY and
                              prints a curl command that works as pasted
  endpoints create <name> --model NAME --version V|ALIAS [--workload-size Small|Medium|Large]
                    [--workload-type CPU|GPU_SMALL|...] | --file body.json  [--no-wait]
  endpoints update <name> --model NAME --version V | --file config.json  [--no-wait]
  endpoints list | get <name> | delete <name>
  endpoints cancel <name>     Cancel the update in progress (the previous config keeps serving)
  endpoints logs <name> <served-entity>
  endpoints inference-table <name> [--since 1h] [--status 500] [--served-entity E] [--limit N]
                    [--format jsonl|csv]  Logged requests and responses, newest first (CAN_MANAGE);
                              --format streams every matching row
  query <endpoint> --json '{"inputs": [[1, 2, 3, 4]]}' | --file request.json [--model NAME[/VERSION|@ALIAS]] (family endpoints)
  whoami                      The principal FERRY_TOKEN belongs to
${SIMULATE_HELP}
  principals create <name> [--service] [--admin] | list | delete <name>      (admins)
  tokens create [--for PRINCIPAL] [--lifetime 90d|12h] [--comment TEXT]
                              A new token (prints the secret once; --for: admins, for another principal)
  tokens list [--all] | revoke <token-id> [--any]
  permissions get endpoint|model <name>
  permissions grant endpoint|model <name> (--user U | --service-principal S | --group users) --level LEVEL
  permissions revoke endpoint|model <name> (--user U | --service-principal S | --group users)
                              Levels: endpoints CAN_VIEW, CAN_QUERY, CAN_MANAGE; models CAN_READ, CAN_EDIT, CAN_MANAGE
  audit [--principal P] [--since 1h] [--limit N]
                              Control-plane changes, newest first (admins)
  fixtures [dir]              Write the built-in example models (default ./fixtures)
  replica                     Run one model replica (started by the server; see docs/architecture.md);
                              --pool ID: start warm and take the options over IPC from the server;
                              pod mode: --listen [HOST]:PORT (HOST default $POD_IP) --artifact-path KEY
                              --sha256 HEX: fetch the model into --dir from the store in --artifact-store
                              JSON (default $FERRY_ARTIFACT_STORE) and verify it

Common options:
  --json                      Machine-readable output
  -h, --help                  Show help

Environment:
  FERRY_URL        Server URL for client commands (default http://127.0.0.1:8080)
  FERRY_TOKEN      API token for client commands (default: <FERRY_DATA_DIR>/admin-token)
  FERRY_DATA_DIR   Data directory of a local server (default ./.ferry)
  FERRY_ADMIN_TOKEN  Admin token for 'ferry server' (otherwise generated on first start)
  NODE_EXTRA_CA_CERTS  PEM file of extra CAs the client trusts (a server's self-signed certificate)
`;

class UsageError extends Error {}

type Values = Record<string, string | boolean | undefined>;

function parse(args: string[], options: ParseArgsConfig['options']): { values: Values; positionals: string[] } {
  try {
    const r = parseArgs({ args, options: { ...options, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
    return { values: r.values, positionals: r.positionals };
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function str(v: Values, key: string): string | undefined {
  const x = v[key];
  return typeof x === 'string' ? x : undefined;
}

/**
 * Until a command installs its own SIGTERM/SIGINT handlers (which drain), a signal exits at once.
 * Without any handler a container's pid 1 ignores SIGTERM, so a pod stopped while its server or
 * replica is still starting (fetching, loading a model) would wait out its whole grace period.
 */
const exitNow = (): void => process.exit(143);

/** Replaces `exitNow` with the command's own handler. */
function onStopSignals(stop: () => void): void {
  process.off('SIGTERM', exitNow);
  process.off('SIGINT', exitNow);
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

export async function main(argv: string[]): Promise<void> {
  process.on('SIGTERM', exitNow);
  process.on('SIGINT', exitNow);
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        process.stdout.write(HELP);
        return;
      case 'server': return await serverCommand(rest);
      case 'demo': return await demoCommand(rest);
      case 'replica': return await replicaCommand(rest);
      case 'models': return await modelsCommand(rest);
      case 'endpoints': return await endpointsCommand(rest);
      case 'query': return await queryCommand(rest);
      case 'serve': return await serveCommand(rest);
      case 'fixtures': return await fixturesCommand(rest);
      case 'whoami': return await whoamiCommand(rest);
      case 'principals': return await principalsCommand(rest);
      case 'tokens': return await tokensCommand(rest);
      case 'permissions': return await permissionsCommand(rest);
      case 'audit': return await auditCommand(rest);
      case 'simulate': return await simulateCommand(rest);
      default: throw new UsageError(`Unknown command '${cmd}'.`);
    }
  } catch (err) {
    process.exitCode = report(err);
  }
}

function report(err: unknown): number {
  if (err instanceof UsageError) {
    process.stderr.write(`ferry: ${err.message}\nRun 'ferry --help' for usage.\n`);
    return 2;
  }
  if (err instanceof FerryApiError) {
    process.stderr.write(`ferry: ${err.errorCode === 'UNREACHABLE' ? '' : `${err.errorCode}: `}${err.message}\n`);
    return err.errorCode === 'UNREACHABLE' ? 3 : 1;
  }
  if (err instanceof FerryError) {
    process.stderr.write(`ferry: ${err.code}: ${err.message}\n`);
    return 1;
  }
  process.stderr.write(`ferry: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  return 1;
}

function out(values: Values, json: unknown, text: string): void {
  process.stdout.write(values.json ? JSON.stringify(json, null, 2) + '\n' : text + '\n');
}

const serverOptions = {
  host: { type: 'string' }, port: { type: 'string' }, 'data-dir': { type: 'string' }, config: { type: 'string' },
  'tls-cert': { type: 'string' }, 'tls-key': { type: 'string' }, 'grpc-port': { type: 'string' },
} as const;

/** Starts the server from flags (and an optional JSON config file); stops it on SIGINT/SIGTERM. */
async function runServer(values: Values): Promise<{ server: FerryServer; config: ServerConfig; envAdminToken: string | undefined }> {
  // Read once and removed from the environment: nothing the server starts inherits it. (The
  // kernel's copy in /proc/<pid>/environ stays; a sandboxed replica cannot see the server's /proc.)
  const envAdminToken = process.env.FERRY_ADMIN_TOKEN;
  delete process.env.FERRY_ADMIN_TOKEN;
  const file = str(values, 'config');
  const fromFile = file === undefined ? {} : JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, unknown>;
  const port = str(values, 'port');
  const config = compileServerConfig({
    ...fromFile,
    ...(str(values, 'host') === undefined ? {} : { host: str(values, 'host') }),
    ...(port === undefined ? {} : { port: Number(port) }),
    ...(str(values, 'grpc-port') === undefined ? {} : { grpcPort: Number(str(values, 'grpc-port')) }),
    ...(str(values, 'data-dir') === undefined ? {} : { dataDir: str(values, 'data-dir') }),
    ...(str(values, 'tls-cert') === undefined ? {} : { tlsCert: str(values, 'tls-cert') }),
    ...(str(values, 'tls-key') === undefined ? {} : { tlsKey: str(values, 'tls-key') }),
  });
  const serverLog = (level: string, msg: string, fields: Record<string, unknown> = {}): void => {
    process.stderr.write(JSON.stringify({ ts: new Date().toISOString(), level, msg, ...fields }) + '\n');
  };
  // Imported here, not at the top: every replica process runs this file, and needs none of it.
  const { startServer } = await import('../server/index.js');
  const server = await startServer(config, {
    adminToken: envAdminToken, log: serverLog,
    // Kubernetes: the pod name (the install manifests set POD_NAME from the downward API).
    podName: process.env.POD_NAME,
    // A leader that lost its Lease has closed itself: exit so that Kubernetes restarts it as a follower.
    onStepDown: () => process.exit(1),
  });
  process.stdout.write(`Ferry server listening on ${server.url} (data in ${config.dataDir})\n`);
  if (server.generatedAdminToken !== undefined) {
    process.stdout.write(`Admin token (shown once; also saved to ${path.join(config.dataDir, ADMIN_TOKEN_FILE)}, mode 0600):\n  ${server.generatedAdminToken}\n`);
  }
  onStopSignals(() => {
    server.close().then(() => process.exit(0), () => process.exit(1));
  });
  return { server, config, envAdminToken };
}

async function serverCommand(args: string[]): Promise<void> {
  const { values } = parse(args, serverOptions);
  if (values.help) return void process.stdout.write(HELP);
  await runServer(values);
}

/** `npm start`: the server plus a registered demo model, and what to type next. */
async function demoCommand(args: string[]): Promise<void> {
  const { values } = parse(args, serverOptions);
  if (values.help) return void process.stdout.write(HELP);
  const { server, config, envAdminToken } = await runServer(values);
  const token = envAdminToken ?? server.generatedAdminToken ?? (await fsp.readFile(path.join(config.dataDir, ADMIN_TOKEN_FILE), 'utf8')).trim();
  const client = new FerryClient({ url: server.url, token });
  const name = 'iris';
  const existing = await client.getModelVersionByAlias(name, 'champion').catch(() => undefined);
  const version = existing?.status === 'READY' ? existing : await client.registerModel(await writeDemoModel(path.join(config.dataDir, 'demo', name)), name, { description: 'Demo iris classifier (a small ONNX tree ensemble)' });
  if (version.status !== 'READY') throw new FerryError('INTERNAL_ERROR', `The demo model failed to register: ${version.status_message}`);
  await client.setAlias(name, 'champion', version.version);
  process.stdout.write(`Demo model registered: ${name} version ${version.version} (alias @champion). Serving it at endpoint '${name}'...\n`);
  await serveVersion(client, version, name, values);
  const tokenSource = envAdminToken === undefined ? `$(cat ${path.join(config.dataDir, ADMIN_TOKEN_FILE)})` : '"$FERRY_ADMIN_TOKEN"';
  process.stdout.write([
    '',
    `Open the web console at ${server.url}/ and sign in with the admin token (FERRY_TOKEN below).`,
    '',
    'Use the CLI from another shell:',
    `  export FERRY_URL=${server.url} FERRY_TOKEN=${tokenSource}`,
    `  npx ferry endpoints get ${name}`,
    `  npx ferry query ${name} --json '{"dataframe_records": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}'`,
    '',
    'Press Ctrl+C to stop.',
    '',
  ].join('\n'));
}

async function replicaCommand(args: string[]): Promise<void> {
  const { values } = parse(args, {
    socket: { type: 'string' }, dir: { type: 'string' }, 'model-file': { type: 'string' }, flavor: { type: 'string' },
    name: { type: 'string' }, version: { type: 'string' }, 'workload-type': { type: 'string' }, threads: { type: 'string' },
    'max-body-bytes': { type: 'string' }, 'drain-timeout-ms': { type: 'string' },
    batching: { type: 'string' }, 'max-batch-size': { type: 'string' }, 'max-queue-delay-us': { type: 'string' },
    'preferred-batch-sizes': { type: 'string' }, execution: { type: 'string' }, pool: { type: 'string' },
    'max-rows-per-request': { type: 'string' }, 'max-json-depth': { type: 'string' }, 'max-json-elements': { type: 'string' },
    uid: { type: 'string' }, gid: { type: 'string' }, 'log-level': { type: 'string' }, python: { type: 'string' },
    'python-link-fd': { type: 'string' }, 'memory-limit-bytes': { type: 'string' },
    'family-cache-bytes': { type: 'string' }, 'family-session-fallback': { type: 'string' },
    listen: { type: 'string' }, 'artifact-path': { type: 'string' }, sha256: { type: 'string' }, 'artifact-store': { type: 'string' },
    control: { type: 'boolean' },
  });
  // The local runtime's control channel on descriptor 3 (its lifeline, the warm pool's claim, a
  // family's model bytes, `drain`); absent when started by hand or in a pod.
  const control = values.control === true ? openControl() : undefined;
  // SIGTERM, or `drain` from the runtime (in a sandbox a signal reaches the sandbox, not this
  // process): a replica drains and exits; a process still loading or idle in the pool just exits.
  const running: { replica?: Replica } = {};
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    log('info', 'draining');
    if (running.replica === undefined) process.exit(0);
    running.replica.close().then(() => process.exit(0), () => process.exit(1));
  };
  onStopSignals(stop);
  control?.onFrame(({ header }) => {
    if (header.type === 'drain') stop();
  });
  const failed = (err: unknown): never => {
    // The runtime reads this line to explain a failed start.
    log('error', 'replica failed to start', { error: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  };
  let options: ReplicaOptions;
  if (str(values, 'pool') !== undefined) {
    // Warm pool: the same options arrive over the control channel once a replica claims this process. The --pool
    // value is only this process's identity on its command line (orphan cleanup matches it).
    options = await awaitPoolClaim().catch(failed);
  } else {
    const need = (k: string): string => {
      const v = str(values, k);
      if (v === undefined) throw new UsageError(`replica: --${k} is required.`);
      return v;
    };
    const flavor = str(values, 'flavor') ?? 'onnx';
    if (!isFlavorName(flavor)) throw new UsageError(`replica: unknown --flavor '${flavor}'.`);
    const workloadType = (str(values, 'workload-type') ?? 'CPU') as WorkloadType;
    if (!WORKLOAD_TYPES.includes(workloadType)) throw new UsageError(`replica: --workload-type must be one of ${WORKLOAD_TYPES.join(', ')}.`);
    const execution = str(values, 'execution');
    if (execution !== undefined && execution !== 'auto' && execution !== 'inline' && execution !== 'worker') {
      throw new UsageError('replica: --execution must be one of auto, inline, worker.');
    }
    const logLevel = str(values, 'log-level');
    if (logLevel !== undefined && !isLogLevel(logLevel)) throw new UsageError(`replica: --log-level must be one of ${LOG_LEVELS.join(', ')}.`);
    const uid = str(values, 'uid');
    const gid = str(values, 'gid');
    if ((uid === undefined) !== (gid === undefined) || [uid, gid].some((v) => v !== undefined && !/^\d+$/.test(v))) {
      throw new UsageError('replica: --uid and --gid go together, as numbers.');
    }
    const memoryLimit = str(values, 'memory-limit-bytes');
    if (memoryLimit !== undefined && !/^[1-9]\d*$/.test(memoryLimit)) throw new UsageError('replica: --memory-limit-bytes must be a byte count.');
    const linkFd = str(values, 'python-link-fd');
    if (linkFd !== undefined && !/^\d+$/.test(linkFd)) throw new UsageError('replica: --python-link-fd must be a file descriptor number.');
    const familyBytes = str(values, 'family-cache-bytes');
    if (familyBytes !== undefined && !/^[1-9]\d*$/.test(familyBytes)) throw new UsageError('replica: --family-cache-bytes must be a byte count.');
    const family = familyBytes === undefined ? undefined : { cacheBytes: Number(familyBytes), sessionFallback: str(values, 'family-session-fallback') !== 'off' };
    // The server's own defaults for the shape limits, so a replica started by hand enforces the same.
    const defaults = compileServerConfig({});
    const listen = str(values, 'listen') === undefined ? undefined : parseListen(need('listen'));
    options = {
      socketPath: listen === undefined ? need('socket') : '',
      ...(listen === undefined ? {} : { listen }),
      dir: need('dir'),
      flavor,
      loadOptions: {
        modelFile: family === undefined ? need('model-file') : '', workloadType, intraOpThreads: Number(str(values, 'threads') ?? 1),
        ...(str(values, 'python') === undefined ? {} : { pythonExecutable: need('python') }),
        ...(linkFd === undefined ? {} : { pythonLinkFd: Number(linkFd) }),
        ...(memoryLimit === undefined ? {} : { memoryLimitBytes: Number(memoryLimit) }),
      },
      modelName: need('name'),
      modelVersion: need('version'),
      maxBodyBytes: Number(str(values, 'max-body-bytes') ?? 16 * 1024 * 1024),
      drainTimeoutMs: Number(str(values, 'drain-timeout-ms') ?? 30_000),
      maxRowsPerRequest: Number(str(values, 'max-rows-per-request') ?? defaults.maxRowsPerRequest),
      maxJsonDepth: Number(str(values, 'max-json-depth') ?? defaults.maxJsonDepth),
      maxJsonElements: Number(str(values, 'max-json-elements') ?? defaults.maxJsonElements),
      batching: {
        enabled: (str(values, 'batching') ?? 'on') === 'on',
        maxBatchSize: Number(str(values, 'max-batch-size') ?? 64),
        maxQueueDelayUs: Number(str(values, 'max-queue-delay-us') ?? 0),
        preferredBatchSizes: (str(values, 'preferred-batch-sizes') ?? '').split(',').filter((x) => x !== '').map(Number),
      },
      ...(execution === undefined ? {} : { execution }),
      ...(uid === undefined || gid === undefined ? {} : { user: { uid: Number(uid), gid: Number(gid) } }),
      ...(logLevel === undefined ? {} : { logLevel }),
      ...(family === undefined ? {} : { family }),
    };
  }
  const artifactPath = str(values, 'artifact-path');
  if (artifactPath !== undefined) {
    // Pod mode: the model comes from the artifact store, not from a directory the runtime prepared.
    const sha256 = str(values, 'sha256');
    const storeJson = str(values, 'artifact-store') ?? process.env.FERRY_ARTIFACT_STORE;
    if (sha256 === undefined || !/^[0-9a-f]{64}$/.test(sha256)) throw new UsageError('replica: --artifact-path needs --sha256 with the version\'s 64-hex-digit tree digest.');
    if (storeJson === undefined) throw new UsageError('replica: --artifact-path needs --artifact-store JSON or FERRY_ARTIFACT_STORE.');
    const location = (() => {
      try {
        return parseArtifactStoreLocation(storeJson, str(values, 'artifact-store') === undefined ? 'FERRY_ARTIFACT_STORE' : '--artifact-store');
      } catch (err) {
        return failed(err);
      }
    })();
    options = { ...options, dir: await fetchArtifact(location, artifactPath, sha256, options.dir).catch(failed) };
  }
  running.replica = await startReplica(options).catch(failed);
  if (stopping) await running.replica.close().then(() => process.exit(0), () => process.exit(1));
}

/** `--listen HOST:PORT`; an empty HOST is the pod's IP (env POD_IP, from the downward API), else every interface. */
function parseListen(value: string): { host: string; port: number } {
  const i = value.lastIndexOf(':');
  const port = Number(value.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`replica: --listen must be [HOST]:PORT, got '${value}'.`);
  const host = value.slice(0, i).replace(/^\[|\]$/g, '') || process.env.POD_IP || '0.0.0.0';
  return { host, port };
}

async function modelsCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const client = FerryClient.fromEnv();
  switch (sub) {
    case 'register': {
      const { values, positionals } = parse(rest, { name: { type: 'string' }, description: { type: 'string' } });
      const file = positionals[0];
      const name = str(values, 'name');
      if (file === undefined || name === undefined) throw new UsageError('models register: usage: ferry models register <path> --name NAME');
      const description = str(values, 'description');
      const v = await client.registerModel(file, name, description === undefined ? {} : { description });
      out(values, v, describeVersion(v));
      if (v.status !== 'READY') process.exitCode = 1;
      return;
    }
    case 'import': {
      const { values, positionals } = parse(rest, {});
      const source = positionals[0];
      if (source === undefined) throw new UsageError('models import: usage: ferry models import <dir | archive.tar[.gz]>');
      const r = await client.importModels(source);
      const failures = r.results.filter((x) => x.status !== 'READY').map((x) => `  ${x.name}: ${x.error_code ?? ''} ${x.message ?? ''}`);
      out(values, r, [`Registered ${r.registered} model versions; ${r.failed} failed.`, ...failures].join('\n'));
      if (r.failed > 0) process.exitCode = 1;
      return;
    }
    case 'list': {
      const { values } = parse(rest, { filter: { type: 'string' } });
      const filter = str(values, 'filter');
      const r = await client.searchRegisteredModels(filter === undefined ? {} : { filter });
      const models = r.registered_models ?? [];
      const rows = models.map((m) => `${m.name}\tlatest=${m.latest_versions[0]?.version ?? '-'}\t${m.aliases.map((a) => `${a.alias}=v${a.version}`).join(',')}`);
      out(values, models, rows.length ? rows.join('\n') : 'No registered models. Register one with: ferry models register <path> --name NAME');
      return;
    }
    case 'show': {
      const { values, positionals } = parse(rest, { version: { type: 'string' }, alias: { type: 'string' } });
      const name = positionals[0];
      if (name === undefined) throw new UsageError('models show: usage: ferry models show <name> [--version N | --alias A]');
      const version = str(values, 'version');
      const alias = str(values, 'alias');
      if (version !== undefined || alias !== undefined) {
        const v = version !== undefined ? await client.getModelVersion(name, version) : await client.getModelVersionByAlias(name, alias ?? '');
        out(values, v, describeVersion(v));
      } else {
        const m = await client.getRegisteredModel(name);
        const versions = (await client.searchModelVersions({ filter: `name = '${name.replace(/'/g, "''")}'` })).model_versions ?? [];
        out(values, { ...m, versions }, [`${m.name}${m.description ? ` — ${m.description}` : ''}`, ...versions.map((v) => `  ${describeVersion(v).split('\n')[0] ?? ''}`)].join('\n'));
      }
      return;
    }
    case 'alias': {
      const { values, positionals } = parse(rest, {});
      const [name, alias, version] = positionals;
      if (name === undefined || alias === undefined || version === undefined) throw new UsageError('models alias: usage: ferry models alias <name> <alias> <version>');
      await client.setAlias(name, alias, version);
      out(values, { name, alias, version }, `${name}@${alias} → version ${version}`);
      return;
    }
    default:
      throw new UsageError(`models: unknown subcommand '${sub ?? ''}' (register, import, list, show, alias).`);
  }
}

function describeVersion(v: ModelVersion): string {
  const lines = [`${v.name} version ${v.version}: ${v.status}${v.aliases.length ? ` (${v.aliases.join(', ')})` : ''}`];
  if (v.status_message) lines.push(`  ${v.status_message}`);
  if (v.signature) {
    const fmt = (s: { name: string; dtype: string; shape?: number[] }): string => `${s.name}: ${s.dtype}${s.shape ? `[${s.shape.join(', ')}]` : ''}`;
    lines.push(`  flavor: ${v.flavor ?? '?'}`, `  inputs: ${v.signature.inputs.map(fmt).join('; ')}`, `  outputs: ${v.signature.outputs.map(fmt).join('; ')}`);
  }
  return lines.join('\n');
}

const entityOptions = {
  model: { type: 'string' }, version: { type: 'string' }, 'workload-size': { type: 'string' }, 'workload-type': { type: 'string' },
  file: { type: 'string' }, 'no-wait': { type: 'boolean' },
} as const;

/** A config from --file (a JSON file) or from --model/--version and friends. */
async function configFromFlags(values: Values, what: string): Promise<EndpointConfigInput> {
  const file = str(values, 'file');
  if (file !== undefined) return JSON.parse(await fsp.readFile(file, 'utf8')) as EndpointConfigInput;
  const model = str(values, 'model');
  const version = str(values, 'version');
  if (model === undefined || version === undefined) throw new UsageError(`${what}: give --model NAME --version V (a number or an alias), or --file config.json`);
  const entity: ServedEntityInput = { entity_name: model, entity_version: version };
  const size = str(values, 'workload-size');
  const type = str(values, 'workload-type');
  // The server validates both and names the allowed values.
  if (size !== undefined) entity.workload_size = size as NonNullable<ServedEntityInput['workload_size']>;
  if (type !== undefined) entity.workload_type = type as NonNullable<ServedEntityInput['workload_type']>;
  return { served_entities: [entity] };
}

async function whoamiCommand(args: string[]): Promise<void> {
  const { values } = parse(args, {});
  const me = await FerryClient.fromEnv().me();
  out(values, me, `${me.name} (${me.type === 'USER' ? 'user' : 'service principal'}${me.admin ? ', admin' : ''})`);
}

async function principalsCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, { service: { type: 'boolean' }, admin: { type: 'boolean' } });
  const client = FerryClient.fromEnv();
  const name = positionals[0];
  switch (sub) {
    case 'create': {
      if (name === undefined) throw new UsageError('principals create: give the principal name');
      const p = await client.createPrincipal(name, { type: values.service ? 'SERVICE_PRINCIPAL' : 'USER', admin: values.admin === true });
      out(values, p, `Created ${p.type === 'USER' ? 'user' : 'service principal'} ${p.name}${p.admin ? ' (admin)' : ''}. Give it a token: ferry tokens create --for ${p.name}`);
      return;
    }
    case 'list': {
      const list = await client.listPrincipals();
      out(values, list, table(['NAME', 'TYPE', 'ADMIN'], list.map((p) => [p.name, p.type, p.admin ? 'yes' : ''])));
      return;
    }
    case 'delete':
      if (name === undefined) throw new UsageError('principals delete: give the principal name');
      await client.deletePrincipal(name);
      out(values, {}, `Deleted ${name} with its tokens and grants.`);
      return;
    default: throw new UsageError(`Unknown subcommand 'principals ${sub ?? ''}'.`);
  }
}

async function tokensCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, {
    for: { type: 'string' }, lifetime: { type: 'string' }, comment: { type: 'string' }, all: { type: 'boolean' }, any: { type: 'boolean' },
  });
  const client = FerryClient.fromEnv();
  switch (sub) {
    case 'create': {
      const lifetime = str(values, 'lifetime');
      const t = await client.createToken({
        ...(lifetime === undefined ? {} : { lifetimeSeconds: lifetimeSeconds(lifetime) }),
        ...(str(values, 'comment') === undefined ? {} : { comment: str(values, 'comment') as string }),
        ...(str(values, 'for') === undefined ? {} : { forPrincipal: str(values, 'for') as string }),
      });
      const expires = t.token_info.expiry_time === -1 ? 'never' : new Date(t.token_info.expiry_time).toISOString();
      out(values, t, `Token ${t.token_info.token_id} for ${t.token_info.owner} (expires ${expires}); shown once:\n  ${t.token_value}`);
      return;
    }
    case 'list': {
      const list = await client.listTokens({ all: values.all === true });
      out(values, list, table(['ID', 'OWNER', 'CREATED', 'EXPIRES', 'COMMENT'], list.map((t) => [
        t.token_id, t.owner, new Date(t.creation_time).toISOString(), t.expiry_time === -1 ? 'never' : new Date(t.expiry_time).toISOString(), t.comment,
      ])));
      return;
    }
    case 'revoke': {
      const id = positionals[0];
      if (id === undefined) throw new UsageError('tokens revoke: give the token id (see ferry tokens list)');
      await client.revokeToken(id, { any: values.any === true });
      out(values, {}, `Revoked token ${id}.`);
      return;
    }
    default: throw new UsageError(`Unknown subcommand 'tokens ${sub ?? ''}'.`);
  }
}

/** "90d" → 7776000, "12h" → 43200, "3600" / "3600s" → 3600. */
function lifetimeSeconds(text: string): number {
  const days = /^(\d+)d$/.exec(text);
  const ms = days ? Number(days[1]) * 86_400_000 : parseDurationMs(/^\d+$/.test(text) ? `${text}s` : text);
  if (ms === undefined) throw new UsageError(`tokens create: --lifetime ${JSON.stringify(text)} is not a duration such as 90d, 12h or 3600s`);
  return Math.round(ms / 1000);
}

async function permissionsCommand(args: string[]): Promise<void> {
  const [sub, kind, name, ...rest] = args;
  const { values } = parse(rest, { user: { type: 'string' }, 'service-principal': { type: 'string' }, group: { type: 'string' }, level: { type: 'string' } });
  const object = kind === 'endpoint' ? 'serving-endpoint' : kind === 'model' ? 'registered-model' : undefined;
  if (object === undefined || name === undefined) throw new UsageError(`permissions ${sub ?? ''}: give 'endpoint <name>' or 'model <name>'`);
  const client = FerryClient.fromEnv();
  const who = (): Omit<AccessControlEntry, 'permission_level'> => {
    const entries = [['user_name', str(values, 'user')], ['service_principal_name', str(values, 'service-principal')], ['group_name', str(values, 'group')]]
      .filter(([, v]) => v !== undefined);
    if (entries.length !== 1) throw new UsageError(`permissions ${sub ?? ''}: give exactly one of --user, --service-principal, --group`);
    return Object.fromEntries(entries) as Omit<AccessControlEntry, 'permission_level'>;
  };
  let p: ObjectPermissions;
  switch (sub) {
    case 'get':
      p = await client.getPermissions(object, name);
      break;
    case 'grant': {
      const level = str(values, 'level');
      if (level === undefined) throw new UsageError('permissions grant: give --level');
      p = await client.setPermissions(object, name, [{ ...who(), permission_level: level }]);
      break;
    }
    case 'revoke': {
      const target = who();
      const current = await client.getPermissions(object, name);
      const same = (e: Omit<AccessControlEntry, 'permission_level'>): boolean =>
        e.user_name === target.user_name && e.service_principal_name === target.service_principal_name && e.group_name === target.group_name;
      const kept = current.access_control_list.flatMap((e) => e.all_permissions.filter((x) => !x.inherited && !same(e)).map((x) => ({
        ...(e.user_name === undefined ? {} : { user_name: e.user_name }),
        ...(e.service_principal_name === undefined ? {} : { service_principal_name: e.service_principal_name }),
        ...(e.group_name === undefined ? {} : { group_name: e.group_name }),
        permission_level: x.permission_level,
      })));
      p = await client.setPermissions(object, name, kept, { replace: true });
      break;
    }
    default: throw new UsageError(`Unknown subcommand 'permissions ${sub ?? ''}'.`);
  }
  out(values, p, table(['WHO', 'LEVEL'], p.access_control_list.map((e) => [
    e.user_name ?? e.service_principal_name ?? `group ${e.group_name ?? ''}`,
    e.all_permissions.map((x) => x.permission_level + (x.inherited ? ' (inherited)' : '')).join(', '),
  ])));
}

/** `ferry simulate [endpoint] …`: on the server with an endpoint name, offline without. */
async function simulateCommand(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, SIMULATE_OPTIONS);
  const endpoint = positionals[0];
  try {
    const body = await simulateBody(values, endpoint !== undefined);
    const answer = endpoint === undefined ? simulateOffline(body) : await FerryClient.fromEnv().simulate(endpoint, body);
    out(values, answer, formatSimulation(answer));
  } catch (err) {
    throw err instanceof SimulateUsageError ? new UsageError(err.message) : err;
  }
}

async function auditCommand(args: string[]): Promise<void> {
  const { values } = parse(args, { principal: { type: 'string' }, since: { type: 'string' }, limit: { type: 'string' } });
  const since = str(values, 'since');
  const sinceMs = since === undefined ? undefined : parseDurationMs(since);
  if (since !== undefined && sinceMs === undefined) throw new UsageError(`audit: --since ${JSON.stringify(since)} is not a duration such as 1h or 30m`);
  const r = await FerryClient.fromEnv().auditLog({
    ...(str(values, 'principal') === undefined ? {} : { principal: str(values, 'principal') as string }),
    ...(sinceMs === undefined ? {} : { sinceMs: Date.now() - sinceMs }),
    maxResults: Number(str(values, 'limit') ?? 100),
  });
  out(values, r, table(['TIME', 'WHO', 'FROM', 'ACTION', 'PATH', 'RESULT'], r.entries.map((e) => [
    new Date(e.timestamp).toISOString(), e.principal === '' ? '(anonymous)' : e.principal, e.source_address, e.action.split(' ')[0] ?? '', e.path,
    `${e.status}${e.error_code === undefined ? '' : ` ${e.error_code}`}`,
  ])));
}

async function endpointsCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  if (sub === 'inference-table') return inferenceTableCommand(rest);
  const client = FerryClient.fromEnv();
  const { values, positionals } = parse(rest, entityOptions);
  const name = positionals[0];
  const needName = (): string => {
    if (name === undefined) throw new UsageError(`endpoints ${sub ?? ''}: give the endpoint name`);
    return name;
  };
  switch (sub) {
    case 'create': {
      const file = str(values, 'file');
      let e: ServingEndpoint;
      if (file !== undefined && name === undefined) {
        const body = JSON.parse(await fsp.readFile(file, 'utf8')) as { name: string; config: EndpointConfigInput };
        e = await client.createEndpoint(body.name, body.config);
      } else {
        e = await client.createEndpoint(needName(), await configFromFlags(values, 'endpoints create'));
      }
      if (!values['no-wait']) e = await client.waitForEndpoint(e.name, { onProgress: progress(values) });
      out(values, e, describeEndpoint(e));
      return;
    }
    case 'update': {
      let e = await client.updateEndpointConfig(needName(), await configFromFlags(values, 'endpoints update'));
      if (!values['no-wait']) e = await client.waitForEndpoint(e.name, { onProgress: progress(values) });
      out(values, e, describeEndpoint(e));
      return;
    }
    case 'list': {
      const list = await client.listEndpoints();
      out(values, list, list.length ? list.map((e) => describeEndpoint(e).split('\n')[0]).join('\n') : 'No serving endpoints. Create one with: ferry serve <model>');
      return;
    }
    case 'get': {
      const e = await client.getEndpoint(needName());
      out(values, e, describeEndpoint(e));
      return;
    }
    case 'cancel': {
      const e = await client.cancelEndpointUpdate(needName());
      out(values, e, describeEndpoint(e));
      return;
    }
    case 'delete': {
      await client.deleteEndpoint(needName());
      out(values, {}, `Deleted endpoint '${needName()}'.`);
      return;
    }
    case 'logs': {
      const served = positionals[1];
      if (served === undefined) throw new UsageError('endpoints logs: usage: ferry endpoints logs <name> <served-entity>');
      process.stdout.write(await client.endpointLogs(needName(), served));
      return;
    }
    default:
      throw new UsageError(`endpoints: unknown subcommand '${sub ?? ''}' (create, update, list, get, cancel, delete, logs, inference-table).`);
  }
}

/** `ferry endpoints inference-table <name>`: recent rows as a table, or every matching row as JSON Lines / CSV. */
async function inferenceTableCommand(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { since: { type: 'string' }, status: { type: 'string' }, 'served-entity': { type: 'string' }, format: { type: 'string' }, limit: { type: 'string' } });
  const name = positionals[0];
  if (name === undefined) throw new UsageError('endpoints inference-table: usage: ferry endpoints inference-table <name> [--since 1h] [--status 500] [--format jsonl|csv]');
  const since = str(values, 'since');
  const sinceMs = since === undefined ? undefined : parseDurationMs(since);
  if (since !== undefined && sinceMs === undefined) throw new UsageError(`endpoints inference-table: --since ${JSON.stringify(since)} is not a duration such as 1h, 30m or 7d`);
  const status = str(values, 'status');
  if (status !== undefined && !/^[1-5]\d\d$/.test(status)) throw new UsageError(`endpoints inference-table: --status ${JSON.stringify(status)} is not an HTTP status code such as 500`);
  const format = str(values, 'format');
  if (format !== undefined && format !== 'jsonl' && format !== 'csv') throw new UsageError(`endpoints inference-table: --format ${JSON.stringify(format)}: expected jsonl or csv`);
  const filters = {
    ...(sinceMs === undefined ? {} : { startMs: Date.now() - sinceMs }),
    ...(status === undefined ? {} : { status: Number(status) }),
    ...(str(values, 'served-entity') === undefined ? {} : { servedEntity: str(values, 'served-entity') as string }),
  };
  const client = FerryClient.fromEnv();
  if (format !== undefined) {
    await pipeline(await client.exportInferenceTable(name, format, filters), process.stdout, { end: false });
    return;
  }
  const r = await client.inferenceTable(name, { ...filters, maxResults: Number(str(values, 'limit') ?? 20) });
  out(values, r, r.rows.length === 0 ? `No inference table rows for '${name}' (is ai_gateway.inference_table_config enabled?).` : table(
    ['TIME', 'REQUEST ID', 'STATUS', 'MS', 'ENTITY', 'PRINCIPAL', 'CLIENT REQUEST ID'],
    r.rows.map((x) => [new Date(x.timestamp_ms).toISOString(), x.request_id, String(x.status_code), x.execution_time_ms.toFixed(1), x.served_entity, x.principal, x.client_request_id ?? '']),
  ));
}

/** Prints progress while waiting: a rewritten line on a terminal, one line per change otherwise. */
function progress(values: Values): (e: ServingEndpoint) => void {
  const started = Date.now();
  let last = '';
  return (e) => {
    if (values.json) return;
    const entities = (e.pending_config ?? e.config)?.served_entities ?? [];
    const line = `Waiting for endpoint '${e.name}': ${e.state.config_update === 'IN_PROGRESS' ? 'updating' : e.state.ready.toLowerCase()}; ${entities.map((x) => `${x.name} ${x.state.deployment.replace('DEPLOYMENT_', '').toLowerCase()}`).join(', ')}`;
    if (process.stderr.isTTY) process.stderr.write(`\r${line} (${((Date.now() - started) / 1000).toFixed(1)}s)\x1b[K`);
    else if (line !== last) process.stderr.write(line + '\n');
    last = line;
  };
}

function describeEndpoint(e: ServingEndpoint): string {
  const lines = [`${e.name}\t${e.state.ready}\t${e.state.config_update}`];
  if (e.state.config_update_message) lines.push(`  ${e.state.config_update_message}`);
  for (const [label, c] of [['config', e.config], ['pending', e.pending_config]] as const) {
    if (!c) continue;
    const pct = new Map(c.traffic_config.routes.map((r) => [r.served_entity_name, r.traffic_percentage]));
    lines.push(`  ${label} v${c.config_version}:`);
    for (const x of c.served_entities) {
      const f = x.model_family;
      const what = f === undefined
        ? `${x.entity_name ?? ''} v${x.entity_version ?? ''}${x.entity_alias ? ` (@${x.entity_alias})` : ''}`
        : `family ${[f.name_prefix === undefined ? '' : `${f.name_prefix}*`, f.tag === undefined ? '' : `tag ${f.tag}`].filter((t) => t !== '').join(' ')}`
          + (x.state.family === undefined ? '' : ` (${x.state.family.replicas.reduce((a, r) => a + r.models_loaded, 0)} models loaded, hit rate ${x.state.family.hit_rate ?? '-'})`);
      lines.push(`    ${x.name}: ${what} ${pct.get(x.name) ?? 0}% ${x.state.deployment} replicas ${x.state.replicas.ready}/${x.state.replicas.desired}`);
      if (x.state.deployment_state_message) lines.push(`      ${x.state.deployment_state_message.split('\n').join('\n      ')}`);
    }
  }
  return lines.join('\n');
}

async function queryCommand(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { file: { type: 'string' }, model: { type: 'string' } });
  const name = positionals[0];
  const inline = values.json === true ? positionals[1] : undefined;
  const file = str(values, 'file');
  if (name === undefined || (inline === undefined && file === undefined)) throw new UsageError('query: usage: ferry query <endpoint> --json \'{"inputs": [[1, 2, 3, 4]]}\' | --file request.json [--model NAME[/VERSION|@ALIAS]]');
  let body: unknown;
  try {
    body = JSON.parse(inline ?? await fsp.readFile(file ?? '', 'utf8'));
  } catch (err) {
    throw new UsageError(`query: the request is not valid JSON: ${(err as Error).message}`);
  }
  process.stdout.write(JSON.stringify(await FerryClient.fromEnv().query(name, body, str(values, 'model'))) + '\n');
}

/** `ferry serve`: the one command from a model file (or a registered version) to a working endpoint. */
async function serveCommand(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { endpoint: { type: 'string' }, name: { type: 'string' } });
  const target = positionals[0];
  if (target === undefined) throw new UsageError('serve: usage: ferry serve <path | models:/NAME/VERSION | models:/NAME@ALIAS> [--endpoint E]');
  const client = FerryClient.fromEnv();
  let version: ModelVersion;
  let requested: string | undefined;
  const uri = /^models:\/([^/@]+)(?:\/(\d+)|@([A-Za-z_][\w-]*))$/.exec(target);
  if (uri) {
    const [, model = '', num, alias] = uri;
    version = num !== undefined ? await client.getModelVersion(model, num) : await client.getModelVersionByAlias(model, alias ?? '');
    requested = alias;
  } else if (target.startsWith('models:')) {
    throw new UsageError(`serve: '${target}' is not a model URI: use models:/NAME/VERSION or models:/NAME@ALIAS`);
  } else {
    const model = str(values, 'name') ?? (path.basename(path.resolve(target)).replace(/\.(onnx|gguf)$/i, '').replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '') || 'model');
    if (!values.json) process.stderr.write(`Registering ${target} as model '${model}'...\n`);
    version = await client.registerModel(target, model);
    if (version.status !== 'READY') throw new FerryApiError(0, 'FAILED_REGISTRATION', `Model '${model}' version ${version.version} failed to register: ${version.status_message}`);
  }
  await serveVersion(client, version, str(values, 'endpoint') ?? version.name.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 63), values, requested);
}

/**
 * Creates (or updates) `endpoint` to serve `version` (named by `alias` when given, so the endpoint
 * records it), waits until READY, prints a curl line.
 */
async function serveVersion(client: FerryClient, version: ModelVersion, endpoint: string, values: Values, alias?: string): Promise<void> {
  const config: EndpointConfigInput = { served_entities: [{ entity_name: version.name, entity_version: alias ?? version.version }] };
  const existing = await client.getEndpoint(endpoint).catch((err: unknown) => {
    if (err instanceof FerryApiError && err.errorCode === 'RESOURCE_DOES_NOT_EXIST') return undefined;
    throw err;
  });
  const current = existing?.config?.served_entities;
  const unchanged = existing?.state.ready === 'READY' && current?.length === 1 && current[0]?.entity_name === version.name && current[0].entity_version === version.version;
  if (!unchanged) await (existing ? client.updateEndpointConfig(endpoint, config) : client.createEndpoint(endpoint, config));
  const e = await client.waitForEndpoint(endpoint, { onProgress: progress(values) });
  if (process.stderr.isTTY && !values.json) process.stderr.write('\n');
  const example = exampleRequest(version);
  const data = 'body' in example ? JSON.stringify(example.body).replace(/'/g, "'\\''") : '<your request body>';
  const curl = `curl -s ${client.url}/serving-endpoints/${endpoint}/invocations -H "Authorization: Bearer ${client.tokenForDisplay}" -H "Content-Type: application/json" -d '${data}'`;
  const note = 'tooLarge' in example ? `\n\n${example.tooLarge}` : '';
  out(values, { endpoint: e, curl, ...('tooLarge' in example ? { example_problem: example.tooLarge } : {}) }, `Endpoint '${endpoint}' is READY, serving ${version.name} version ${version.version}.\n\nQuery it:\n  ${curl}${note}`);
}

async function fixturesCommand(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, {});
  const paths = await writeFixtures(positionals[0] ?? 'fixtures');
  out(values, paths, Object.entries(paths).map(([k, p]) => `${k}: ${p}`).join('\n'));
}

/** Rows under a header, columns padded to their widest cell. */
function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}
