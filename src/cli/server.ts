/** `ferry server` and `ferry demo` (the server plus a served demo model). */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ADMIN_TOKEN_FILE } from '../auth/index.js';
import { compileServerConfig, type ServerConfig } from '../config/index.js';
import { FerryClient } from '../client/index.js';
import { FerryError } from '../errors.js';
import { writeDemoModel } from '../fixtures/index.js';
import type { FerryServer } from '../server/index.js';
import { parse, str, type Values } from './args.js';
import { serveVersion } from './endpoints.js';
import { onStopSignals } from './signals.js';

const serverOptions = {
  host: { type: 'string' }, port: { type: 'string' }, 'data-dir': { type: 'string' }, config: { type: 'string' },
  'tls-cert': { type: 'string' }, 'tls-key': { type: 'string' }, 'grpc-port': { type: 'string' }, 'gateway-workers': { type: 'string' },
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
    ...(str(values, 'gateway-workers') === undefined ? {} : { gatewayWorkers: Number(str(values, 'gateway-workers')) }),
    ...(str(values, 'data-dir') === undefined ? {} : { dataDir: str(values, 'data-dir') }),
    ...(str(values, 'tls-cert') === undefined ? {} : { tlsCert: str(values, 'tls-cert') }),
    ...(str(values, 'tls-key') === undefined ? {} : { tlsKey: str(values, 'tls-key') }),
  });
  const serverLog = (level: string, msg: string, fields: Record<string, unknown> = {}): void => {
    process.stderr.write(JSON.stringify({ ts: new Date().toISOString(), level, msg, ...fields }) + '\n');
  };
  // Imported here, not at the top: every `ferry` command loads this file (through main.ts), and
  // only server and demo need the server.
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

export async function serverCommand(args: string[], help: string): Promise<void> {
  const { values } = parse(args, serverOptions);
  if (values.help) return void process.stdout.write(help);
  await runServer(values);
}

/** `npm start`: the server plus a registered demo model, and what to type next. */
export async function demoCommand(args: string[], help: string): Promise<void> {
  const { values } = parse(args, serverOptions);
  if (values.help) return void process.stdout.write(help);
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
