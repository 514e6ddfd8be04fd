/**
 * Hostile models against a real server (issue 17, findings 1 and 2), each written as the attack,
 * while another endpoint is scored every 50 ms and must answer 200 throughout:
 * - a js model that `process.dlopen`s a file of its artifact, in `load()` and in `predict()`, and
 *   reports its uid and tries the server's database and environment: all refused, never as root;
 * - a js model that writes garbage, a forged valid frame and a huge frame length to every
 *   descriptor it inherited (fds 0-20): the replica is killed and reported, the server stays up,
 *   the entity is quarantined after repeated violations, also across a server restart;
 * - sandbox probes, as a js model and as a process in the same sandbox without Node's permission
 *   model: no network, no other process in /proc, no other replica's socket, a private /tmp, a
 *   read-only model directory, no data directory.
 * Needs bubblewrap (the server runs with `sandbox: "bwrap"`); the uid checks need root.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { compileServerConfig } from '../src/config/index.js';
import { writeFixtures } from '../src/fixtures/index.js';
import { chooseSandbox, sandboxed } from '../src/runtime/local/sandbox.js';
import { startServer, type FerryServer } from '../src/server/index.js';
import { ADMIN_TOKEN, ferryChildren, replicaNodePid, request, ROOT, tempDir, waitFor, waitSettled, type HttpResult } from './support/index.js';

const IS_ROOT = process.getuid?.() === 0;
const NOBODY = 65534;
const SIGNATURE = { inputs: [{ name: 'text', dtype: 'string', shape: [-1] }], outputs: [{ name: 'out', dtype: 'json' }] };

let dir: string;
let dataDir: string;
let server: FerryServer;
/** Non-200 answers of the bystander endpoint, scored every 50 ms during each test. */
let bystanderFailures: string[] = [];
let polling: Promise<void> | undefined;
let stopPolling = false;

const call = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });
const invoke = (endpoint: string, text: string): Promise<HttpResult> => call('POST', `/serving-endpoints/${endpoint}/invocations`, { inputs: [text] });

function config(): Record<string, unknown> {
  return { port: 0, dataDir, sandbox: 'bwrap', warmPoolSize: 1 };
}

/** Registers `source` as a js model `name` (plus `files`) and creates an endpoint serving it; returns the settled endpoint. */
async function deployJs(name: string, source: string, files: Record<string, Buffer> = {}): Promise<any> {
  const modelDir = path.join(dir, 'models', name);
  await fsp.mkdir(modelDir, { recursive: true });
  await fsp.writeFile(path.join(modelDir, 'model.mjs'), source);
  await fsp.writeFile(path.join(modelDir, 'ferry.json'), JSON.stringify({ flavor: 'js', signature: SIGNATURE }));
  for (const [file, bytes] of Object.entries(files)) await fsp.writeFile(path.join(modelDir, file), bytes);
  await call('POST', '/api/2.0/mlflow/registered-models/create', { name });
  const v = await call('POST', '/api/2.0/mlflow/model-versions/create', { name, source: modelDir });
  assert.equal(v.json?.model_version?.status, 'READY', v.text);
  const r = await call('POST', '/api/2.0/serving-endpoints', { name, config: { served_entities: [{ entity_name: name, entity_version: '1' }] } });
  assert.equal(r.status, 200, r.text);
  return waitSettled(server.url, name, 60_000);
}

/** Scores the bystander endpoint every 50 ms until `stopBystander`, recording every non-200. */
function startBystander(): void {
  bystanderFailures = [];
  stopPolling = false;
  polling = (async () => {
    while (!stopPolling) {
      const r = await call('POST', '/serving-endpoints/bystander/invocations', { inputs: [[1, 2, 3, 4]] }).catch((err: unknown) => ({ status: 0, text: String(err) }));
      if (r.status !== 200) bystanderFailures.push(`${r.status} ${r.text}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  })();
}

async function stopBystander(): Promise<void> {
  stopPolling = true;
  await polling;
  assert.deepEqual(bystanderFailures, [], 'the bystander endpoint answered 200 throughout');
}

/** A running replica's node process and socket, from the runtime's pid files. */
async function replicaOf(endpoint: string): Promise<{ nodePid: number; socketPath: string; modelDir: string }> {
  const pidsDir = path.join(dataDir, 'runtime', 'pids');
  const file = (await fsp.readdir(pidsDir)).find((f) => f.startsWith(`${endpoint}.`));
  assert.ok(file !== undefined, `a replica of ${endpoint}`);
  const { pid, socketPath } = JSON.parse(await fsp.readFile(path.join(pidsDir, file), 'utf8')) as { pid: number; socketPath: string };
  const nodePid = await replicaNodePid(pid);
  const cmd = (await fsp.readFile(`/proc/${nodePid}/cmdline`, 'utf8')).split('\0');
  const models = path.join(dataDir, 'runtime', 'models') + path.sep;
  const modelDir = cmd.map((a) => a.replace(/^--allow-fs-read=/, '')).find((a) => a.startsWith(models)) ?? '';
  return { nodePid, socketPath, modelDir };
}

/** What the test library's constructor would print to the replica's log (it never runs). */
const MARKER = 'FERRY-DLOPEN-CONSTRUCTOR-RAN';

/**
 * A shared library whose constructor prints `MARKER` on stdout (the replica's log, outside the
 * sandbox), compiled with cc when present; else bytes that are not one.
 */
function evilLibrary(): Buffer {
  const src = path.join(dir, 'evil.c');
  const out = path.join(dir, 'libevil.so');
  fs.writeFileSync(src, `#include <unistd.h>\n__attribute__((constructor)) static void pwn(void) { write(1, "${MARKER}\\n", ${MARKER.length + 1}); }\n`);
  const cc = spawnSync('cc', ['-shared', '-fPIC', '-o', out, src], { encoding: 'utf8' });
  return cc.status === 0 ? fs.readFileSync(out) : Buffer.from('\x7fELF not really a library');
}

before(async () => {
  dir = await tempDir('ferry-sandbox-');
  dataDir = path.join(dir, 'data');
  const fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startServer(compileServerConfig(config()), { adminToken: ADMIN_TOKEN });
  await call('POST', '/api/2.0/mlflow/registered-models/create', { name: 'linear' });
  const v = await call('POST', '/api/2.0/mlflow/model-versions/create', { name: 'linear', source: fx.linear });
  assert.equal(v.json?.model_version?.status, 'READY', v.text);
  await call('POST', '/api/2.0/serving-endpoints', { name: 'bystander', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } });
  assert.equal((await waitSettled(server.url, 'bystander', 60_000)).state.ready, 'READY');
});

after(async () => {
  stopPolling = true;
  await polling;
  await server?.close();
  assert.deepEqual(await ferryChildren(dataDir), [], 'no replica outlives the server');
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('hostile js models', () => {
  test('process.dlopen of a library in the artifact is refused in load() and predict(); the model never runs as root and cannot read the database or the server\'s environment', { timeout: 120_000 }, async () => {
    startBystander();
    const db = path.join(dataDir, 'ferry.db');
    const probe = `
      import fs from 'node:fs';
      const attempt = (fn) => { try { const v = fn(); return v === undefined ? 'ok' : v; } catch (e) { return e.code ?? e.message; } };
      const probe = (dir) => ({
        uid: process.getuid(),
        dlopen: attempt(() => { process.dlopen({ exports: {} }, dir + '/libevil.so'); }),
        db: attempt(() => fs.readFileSync(${JSON.stringify(db)}).length),
        environ: attempt(() => fs.readFileSync('/proc/${process.pid}/environ', 'utf8').length),
      });
      let dir;
      let atLoad;
      export function load(ctx) { dir = ctx.dir; atLoad = probe(dir); }
      export function predict(input) {
        if (input.text[0] === 'dlopen') process.dlopen({ exports: {} }, dir + '/libevil.so');
        return { out: input.text.map(() => ({ load: atLoad, predict: probe(dir) })) };
      }`;
    // A real library when a C compiler is here (its constructor would leave a marker file), else
    // any bytes: either way the point is that the loader is never reached.
    const e = await deployJs('dlopen', probe, { 'libevil.so': evilLibrary() });
    assert.equal(e.state.ready, 'READY', JSON.stringify(e.state));
    const r = await invoke('dlopen', 'report');
    assert.equal(r.status, 200, r.text);
    const want = { uid: IS_ROOT ? NOBODY : process.getuid?.(), dlopen: 'ERR_DLOPEN_DISABLED', db: 'ERR_ACCESS_DENIED', environ: 'ERR_ACCESS_DENIED' };
    assert.deepEqual(r.json.predictions[0], { load: want, predict: want });
    const thrown = await invoke('dlopen', 'dlopen');
    assert.equal(thrown.status, 500, thrown.text);
    assert.equal(thrown.json.error_code, 'MODEL_ERROR');
    assert.match(thrown.json.message, /addons is disabled|ERR_DLOPEN_DISABLED/);
    assert.doesNotMatch(thrown.text, new RegExp(dataDir), 'no server path in the answer');
    assert.equal((await invoke('dlopen', 'report')).status, 200, 'the replica keeps serving');
    const logs = await call('GET', '/api/2.0/serving-endpoints/dlopen/served-models/dlopen-1/logs');
    assert.equal(logs.status, 200, logs.text);
    assert.doesNotMatch(JSON.stringify(logs.json), new RegExp(MARKER), 'the library\'s constructor never ran');
    await stopBystander();
  });

  test('sandbox probes from a js model: no network, no other replica\'s socket, no /proc, no /tmp, no writes to its model', { timeout: 120_000 }, async () => {
    startBystander();
    const other = await replicaOf('bystander');
    const port = new URL(server.url).port;
    const probe = `
      import fs from 'node:fs';
      import net from 'node:net';
      const attempt = (fn) => { try { fn(); return 'ok'; } catch (e) { return e.code ?? e.message; } };
      const connect = (opts) => new Promise((resolve) => {
        const s = net.connect(opts);
        s.once('connect', () => { s.destroy(); resolve('connected'); });
        s.once('error', (e) => resolve(e.code ?? e.message));
      });
      let dir;
      export function load(ctx) { dir = ctx.dir; }
      export async function predict(input) {
        const result = {
          serverPort: await connect({ host: '127.0.0.1', port: ${port} }),
          otherSocket: await connect({ path: ${JSON.stringify(other.socketPath)} }),
          proc: attempt(() => fs.readdirSync('/proc')),
          tmp: attempt(() => fs.writeFileSync('/tmp/probe', 'x')),
          modelDir: attempt(() => fs.writeFileSync(dir + '/written', 'x')),
        };
        return { out: input.text.map(() => result) };
      }`;
    assert.equal((await deployJs('probe', probe)).state.ready, 'READY');
    const r = await invoke('probe', 'go');
    assert.equal(r.status, 200, r.text);
    const got = r.json.predictions[0];
    assert.equal(got.serverPort, 'ECONNREFUSED', 'no network: the server\'s port is not reachable');
    assert.notEqual(got.otherSocket, 'connected', 'another replica\'s socket is out of reach');
    assert.deepEqual({ proc: got.proc, tmp: got.tmp, modelDir: got.modelDir }, { proc: 'ERR_ACCESS_DENIED', tmp: 'ERR_ACCESS_DENIED', modelDir: 'ERR_ACCESS_DENIED' });
    await stopBystander();
  });

  test('the same sandbox without Node\'s permission model (what native code would get): OS-level refusals', { timeout: 60_000 }, async () => {
    assert.equal((await deployJs('os-self', 'export function predict(input) { return { out: input.text }; }')).state.ready, 'READY');
    const other = await replicaOf('bystander');
    const self = await replicaOf('os-self');
    const sandbox = await chooseSandbox('bwrap', IS_ROOT ? { uid: NOBODY, gid: NOBODY } : undefined);
    const socketDir = await fsp.mkdtemp(path.join(dir, 'sock-'));
    await fsp.chmod(socketDir, 0o777);
    const port = new URL(server.url).port;
    const script = `
      const fs = require('node:fs');
      const net = require('node:net');
      const attempt = (fn) => { try { fn(); return 'ok'; } catch (e) { return e.code ?? e.message; } };
      const connect = (opts) => new Promise((resolve) => {
        const s = net.connect(opts);
        s.once('connect', () => { s.destroy(); resolve('connected'); });
        s.once('error', (e) => resolve(e.code ?? e.message));
      });
      (async () => {
        fs.writeFileSync('/tmp/private', 'x');
        console.log(JSON.stringify({
          uid: process.getuid(),
          pids: fs.readdirSync('/proc').filter((n) => /^\\d+$/.test(n)).length,
          db: fs.existsSync(${JSON.stringify(path.join(dataDir, 'ferry.db'))}),
          dataDir: fs.readdirSync(${JSON.stringify(dataDir)}),
          otherModelDir: fs.existsSync(${JSON.stringify(other.modelDir)}),
          writeModelDir: attempt(() => fs.writeFileSync(${JSON.stringify(path.join(self.modelDir, 'written'))}, 'x')),
          readModel: attempt(() => fs.readFileSync(${JSON.stringify(path.join(self.modelDir, 'model.mjs'))})),
          serverPort: await connect({ host: '127.0.0.1', port: ${port} }),
          otherSocket: await connect({ path: ${JSON.stringify(other.socketPath)} }),
        }));
      })();`;
    const mounts = { readOnly: [process.execPath, ...['dist', 'bin', 'node_modules', 'package.json'].map((p) => path.join(ROOT, p))], modelDir: self.modelDir, socketDir, devices: [] };
    const { file, args } = sandboxed(sandbox, mounts, IS_ROOT ? { uid: NOBODY, gid: NOBODY } : undefined, [process.execPath, '-e', script]);
    const run = spawnSync(file, args, { encoding: 'utf8', env: { PATH: process.env.PATH ?? '' }, timeout: 30_000 });
    assert.equal(run.status, 0, run.stderr);
    const got = JSON.parse(run.stdout) as Record<string, unknown>;
    assert.deepEqual(got, {
      uid: IS_ROOT ? NOBODY : process.getuid?.(), pids: 2, db: false, dataDir: ['runtime'], otherModelDir: false,
      writeModelDir: 'EROFS', readModel: 'ok', serverPort: 'ECONNREFUSED', otherSocket: 'ENOENT',
    }, 'pids: bwrap\'s init and this process only; of the data directory only the path to its own model directory');
    assert.equal(fs.existsSync('/tmp/private'), false, '/tmp is private');
    await fsp.rm(socketDir, { recursive: true, force: true });
  });

  test('a js model that writes to every inherited descriptor in load() is killed; the deployment fails naming the protocol; the server stays up', { timeout: 120_000 }, async () => {
    startBystander();
    const e = await deployJs('scribble-load', `
      import fs from 'node:fs';
      export function load() {
        for (const fd of [3, ...Array.from({ length: 21 }, (_, i) => i)]) { try { fs.writeSync(fd, 'not json\\n'); } catch {} }
      }
      export function predict(input) { return { out: input.text }; }`);
    assert.equal(e.state.config_update, 'UPDATE_FAILED', JSON.stringify(e.state));
    assert.match(e.state.config_update_message, /control protocol|header that is not JSON|frame header of \d+ bytes/);
    assert.equal((await call('GET', '/v2/health/ready')).status, 200, 'the server is up');
    await stopBystander();
  });

  test('a js model that writes garbage, a forged frame or a huge length from predict() is killed each time, then quarantined; the server survives a restart with it', { timeout: 180_000 }, async () => {
    startBystander();
    const e = await deployJs('scribble', `
      import fs from 'node:fs';
      const frame = (header, payloadBytes = 0) => {
        const json = Buffer.from(JSON.stringify(header));
        const prefix = Buffer.alloc(8);
        prefix.writeUInt32BE(json.length, 0);
        prefix.writeUInt32BE(payloadBytes, 4);
        return Buffer.concat([prefix, json]);
      };
      const ATTACKS = {
        garbage: Buffer.from('not json\\n'),
        forged: frame({ type: 'stage', id: 1, name: 'other-model', version: 1 }),
        huge: Buffer.from([0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
      };
      export function predict(input) {
        const bytes = ATTACKS[input.text[0]];
        if (bytes) for (const fd of [3, ...Array.from({ length: 21 }, (_, i) => i)]) { try { fs.writeSync(fd, bytes); } catch {} }
        return { out: input.text };
      }`);
    assert.equal(e.state.ready, 'READY', JSON.stringify(e.state));
    const entity = async (): Promise<{ deployment: string; deployment_state_message: string }> =>
      (await call('GET', '/api/2.0/serving-endpoints/scribble')).json.config.served_entities[0].state;
    const attacks = ['garbage', 'forged', 'huge'];
    let sent = 0;
    const quarantined = await waitFor('the entity to be quarantined', async () => {
      const s = await entity();
      if (s.deployment_state_message.startsWith('quarantined:')) return s;
      await invoke('scribble', attacks[sent++ % attacks.length] ?? 'garbage');
      await new Promise((res) => setTimeout(res, 200));
      return undefined;
    }, 120_000);
    assert.equal(quarantined.deployment, 'DEPLOYMENT_FAILED');
    assert.match(quarantined.deployment_state_message, /^quarantined: its replicas broke the runtime's control protocol 3 times/);
    const log = await call('GET', '/api/2.0/serving-endpoints/scribble/served-models/scribble-1/logs');
    assert.match(JSON.stringify(log.json), /broke the control protocol/, 'the kill is in the replica\'s log');
    // Quarantined: no replica comes back.
    await new Promise((res) => setTimeout(res, 3000));
    assert.equal((await fsp.readdir(path.join(dataDir, 'runtime', 'pids'))).filter((f) => f.startsWith('scribble.')).length, 0, 'no restart');
    // The next config update clears it (a fresh deployment).
    const update = await call('PUT', '/api/2.0/serving-endpoints/scribble/config', { served_entities: [{ entity_name: 'scribble', entity_version: '1' }] });
    assert.equal(update.status, 200, update.text);
    const updated = await waitSettled(server.url, 'scribble', 60_000);
    assert.equal(updated.state.ready, 'READY', JSON.stringify(updated.state));
    assert.doesNotMatch((await entity()).deployment_state_message, /^quarantined:/);
    await stopBystander();

    // A restart restores the endpoint; its replica, attacking again, is killed; nothing else happens.
    await server.close();
    server = await startServer(compileServerConfig(config()), { adminToken: ADMIN_TOKEN });
    await waitFor('the bystander after the restart', async () => ((await call('POST', '/serving-endpoints/bystander/invocations', { inputs: [[1, 2, 3, 4]] })).status === 200 ? true : undefined), 60_000);
    startBystander();
    await waitFor('scribble to serve again', async () => ((await invoke('scribble', 'hello')).status === 200 ? true : undefined), 60_000);
    await invoke('scribble', 'garbage');
    await waitFor('the violation to be reported', async () => ((await entity()).deployment_state_message.includes('control protocol') ? true : undefined), 30_000);
    assert.equal((await call('GET', '/v2/health/ready')).status, 200, 'the server is up');
    await stopBystander();
  });
});
