/**
 * A replica process loads no control-plane module: real `ferry replica` processes (a single-model
 * replica that answers a request, and a family replica) run with a module loader hook that logs
 * every module they load; none may be under src/control, src/server, src/store, src/registry,
 * src/gateway, src/auth or src/inference-tables.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { writeFixtures, type FixturePaths } from '../src/fixtures/index.js';
import { kill, Processes, request, ROOT, tempDir, waitFor } from './support/index.js';

const CONTROL_PLANE = ['control', 'server', 'store', 'registry', 'gateway', 'auth', 'inference-tables'];
const DIST_SRC = path.join(ROOT, 'dist', 'src') + path.sep;

let dir: string;
let fx: FixturePaths;
let register: string;
const procs = new Processes();

before(async () => {
  dir = await tempDir();
  fx = await writeFixtures(path.join(dir, 'fixtures'));
  // A loader hook (it runs on Node's hooks thread) appending each loaded module's URL to a file.
  await fsp.writeFile(path.join(dir, 'hooks.mjs'), [
    "import fs from 'node:fs';",
    'export async function load(url, context, nextLoad) {',
    "  if (url.startsWith('file:')) fs.appendFileSync(process.env.FERRY_TEST_MODULE_LOG, url + '\\n');",
    '  return nextLoad(url, context);',
    '}',
  ].join('\n'));
  await fsp.writeFile(path.join(dir, 'register.mjs'), "import { register } from 'node:module';\nregister('./hooks.mjs', import.meta.url);\n");
  register = pathToFileURL(path.join(dir, 'register.mjs')).href;
});

after(async () => {
  await procs.killAll();
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Runs `ferry replica args` until ready, then `whileUp`, then SIGTERM; the project modules it loaded, relative to dist/src. */
async function loadedModules(name: string, args: string[], whileUp: (socketPath: string) => Promise<void>): Promise<string[]> {
  const socketPath = path.join(dir, `${name}.sock`);
  const moduleLog = path.join(dir, `${name}.modules`);
  const logFile = path.join(dir, `${name}.log`);
  const child = procs.spawnFerry(['replica', '--socket', socketPath, ...args], { logFile, env: { NODE_OPTIONS: `--import=${register}`, FERRY_TEST_MODULE_LOG: moduleLog } });
  await waitFor(`replica ${name} ready`, async () => {
    if (child.exitCode !== null) throw new Error(`replica exited: ${await fsp.readFile(logFile, 'utf8')}`);
    const r = await request({ socketPath, path: '/v2/health/ready', token: null }).catch(() => undefined);
    return r?.status === 200 ? true : undefined;
  }, 30_000);
  await whileUp(socketPath);
  assert.equal(await kill(child), 0);
  const urls = (await fsp.readFile(moduleLog, 'utf8')).split('\n').filter((u) => u !== '');
  return [...new Set(urls.map((u) => new URL(u).pathname).filter((p) => p.startsWith(DIST_SRC)).map((p) => p.slice(DIST_SRC.length)))].sort();
}

function controlPlane(modules: string[]): string[] {
  return modules.filter((m) => CONTROL_PLANE.includes(m.split('/')[0] ?? ''));
}

test('a replica serving a model loads no control-plane module, also while answering', async () => {
  const modules = await loadedModules('linear', ['--dir', path.dirname(fx.linear), '--model-file', path.basename(fx.linear), '--name', 'linear', '--version', '1'], async (socketPath) => {
    const r = await request({ socketPath, method: 'POST', path: '/invocations', json: { inputs: [[1, 2, 3, 4]] }, token: null });
    assert.equal(r.status, 200, r.text);
  });
  // The hook sees the replica's own code (else this test could not fail).
  assert.ok(modules.includes('cli/replica.js') && modules.includes('replica/index.js'), modules.join(' '));
  assert.deepEqual(controlPlane(modules), []);
});

test('a family replica loads no control-plane module', async () => {
  const modules = await loadedModules('family', ['--dir', dir, '--family-cache-bytes', String(64 * 1024 * 1024), '--name', 'fam', '--version', ''], async () => undefined);
  assert.ok(modules.includes('replica/family.js') && modules.includes('multi/cache.js'), modules.join(' '));
  assert.deepEqual(controlPlane(modules), []);
});
