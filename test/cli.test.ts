/** The `ferry` CLI as a user runs it: a real child process against a real server. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { writeFixtures, type FixturePaths } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import { ADMIN_TOKEN, FERRY_BIN, startTestServer, tempDir, TEST_GATEWAY_WORKERS } from './support/index.js';

let dir: string;
let fx: FixturePaths;
let server: FerryServer;

function ferry(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [FERRY_BIN, ...args], { env: { PATH: process.env.PATH ?? '', FERRY_URL: server.url, FERRY_TOKEN: ADMIN_TOKEN, ...env }, cwd: dir }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

before(async () => {
  dir = await tempDir();
  fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(path.join(dir, 'data'));
});

after(async () => {
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('--help lists the commands', async () => {
  const r = await ferry(['--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /models register <path> --name NAME/);
  assert.match(r.stdout, /server/);
});

test('register a file and an MLflow directory, list, show, alias', async () => {
  const reg = await ferry(['models', 'register', fx.irisClassifier, '--name', 'iris', '--json']);
  assert.equal(reg.code, 0, reg.stderr);
  const v = JSON.parse(reg.stdout);
  assert.equal(v.status, 'READY');
  assert.equal(v.version, '1');
  assert.deepEqual(v.signature.inputs, [{ name: 'x', dtype: 'float32', shape: [-1, 4] }]);

  const dirReg = await ferry(['models', 'register', fx.mlflowLinear, '--name', 'lin']);
  assert.equal(dirReg.code, 0, dirReg.stderr);
  assert.match(dirReg.stdout, /lin version 1: READY/);
  assert.match(dirReg.stdout, /inputs: x: float32\[-1, 4\]/);

  const again = await ferry(['models', 'register', fx.irisClassifier, '--name', 'iris']);
  assert.match(again.stdout, /iris version 2: READY/);

  assert.equal((await ferry(['models', 'alias', 'iris', 'champion', '2'])).code, 0);
  const list = await ferry(['models', 'list']);
  assert.match(list.stdout, /iris\tlatest=2\tchampion=v2/);
  const show = await ferry(['models', 'show', 'iris', '--alias', 'champion', '--json']);
  assert.equal(JSON.parse(show.stdout).version, '2');
  const showAll = await ferry(['models', 'show', 'iris']);
  assert.match(showAll.stdout, /iris version 2: READY \(champion\)/);
  // Uploads are cleaned up once the version holds its own copy.
  assert.deepEqual(await fsp.readdir(path.join(dir, 'data', 'artifacts', 'uploads', 'iris')).catch(() => []), []);
});

test('a model that is not a model fails with the reason and exit code 1', async () => {
  const junk = path.join(dir, 'junk.onnx');
  await fsp.writeFile(junk, 'hello');
  const r = await ferry(['models', 'register', junk, '--name', 'junk']);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /FAILED_REGISTRATION/);
});

test('exit codes and messages say what to do', async () => {
  const usage = await ferry(['models', 'register', fx.linear]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--name NAME/);
  assert.equal((await ferry(['bogus'])).code, 2);
  const unauth = await ferry(['models', 'list'], { FERRY_TOKEN: 'ferry_nope' });
  assert.equal(unauth.code, 1);
  assert.match(unauth.stderr, /UNAUTHENTICATED.*FERRY_TOKEN/s);
  const missing = await ferry(['models', 'show', 'nope']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /RESOURCE_DOES_NOT_EXIST: Registered model 'nope' not found/);
  const down = await ferry(['models', 'list'], { FERRY_URL: 'http://127.0.0.1:1' });
  assert.equal(down.code, 3);
  assert.match(down.stderr, /Cannot reach Ferry at http:\/\/127\.0\.0\.1:1.*ferry server/s);
});

test('ferry serve: from a model file to an endpoint and a curl command that works as pasted', async () => {
  const r = await ferry(['serve', fx.linear]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /Registering .*linear\.onnx as model 'linear'/);
  assert.match(r.stdout, /Endpoint 'linear' is READY, serving linear version 1/);
  const curl = /^\s*(curl .*)$/m.exec(r.stdout)?.[1];
  assert.ok(curl, r.stdout);
  const answer = await new Promise<string>((resolve, reject) => {
    execFile('sh', ['-c', curl], (err, stdout) => (err ? reject(new Error(err.message)) : resolve(stdout)));
  });
  // linear.onnx has no input example: Ferry sends zeros in the signature's shape, y = bias.
  assert.deepEqual(JSON.parse(answer), { predictions: [[0.125]] });

  await ferry(['models', 'alias', 'linear', 'champion', '1']);
  const byAlias = await ferry(['serve', 'models:/linear@champion', '--endpoint', 'lin2']);
  assert.equal(byAlias.code, 0, byAlias.stderr);
  const q = await ferry(['query', 'lin2', '--json', '{"inputs": [[1, 2, 3, 4]]}']);
  assert.equal(q.code, 0, q.stderr);
  assert.deepEqual(JSON.parse(q.stdout), { predictions: [[5.625]] });
  const get = await ferry(['endpoints', 'get', 'lin2', '--json']);
  assert.equal(JSON.parse(get.stdout).config.served_entities[0].entity_alias, 'champion');
  assert.match((await ferry(['endpoints', 'list'])).stdout, /lin2\tREADY\tNOT_UPDATING/);
  const badQuery = await ferry(['query', 'lin2', '--json', '{"inputs": [[1, 2]]}']);
  assert.equal(badQuery.code, 1);
  assert.match(badQuery.stderr, /INVALID_PARAMETER_VALUE/);
  assert.equal((await ferry(['serve', 'models:/linear'])).code, 2);
  const cancel = await ferry(['endpoints', 'cancel', 'lin2']);
  assert.equal(cancel.code, 1, 'nothing to cancel');
  assert.match(cancel.stderr, /RESOURCE_CONFLICT/);
  for (const ep of ['linear', 'lin2']) assert.equal((await ferry(['endpoints', 'delete', ep])).code, 0);
});

test('a port in use is a one-line error naming the port', async () => {
  const port = new URL(server.url).port;
  const r = await ferry(['server', '--port', port, '--data-dir', path.join(dir, 'other')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`Cannot listen on 127\\.0\\.0\\.1:${port} \\(EADDRINUSE\\): another process uses that port`));
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

test('a first server start generates an admin token, prints it once, keeps a 0600 file the CLI reads', async () => {
  const dataDir = path.join(dir, 'fresh');
  const { startServer } = await import('../src/server/index.js');
  const { compileServerConfig } = await import('../src/config/index.js');
  const s1 = await startServer(compileServerConfig({ port: 0, dataDir , gatewayWorkers: TEST_GATEWAY_WORKERS }), { adminToken: undefined });
  try {
    assert.match(s1.generatedAdminToken ?? '', /^ferry_[A-Za-z0-9_-]{43}$/);
    const st = await fsp.stat(path.join(dataDir, 'admin-token'));
    assert.equal(st.mode & 0o777, 0o600);
    const r = await ferry(['models', 'list'], { FERRY_URL: s1.url, FERRY_TOKEN: '', FERRY_DATA_DIR: dataDir });
    assert.equal(r.code, 0, r.stderr);
    await assert.rejects(startServer(compileServerConfig({ port: 0, dataDir , gatewayWorkers: TEST_GATEWAY_WORKERS }), { adminToken: undefined }),
      (err: unknown) => err instanceof Error && /Another Ferry server \(pid \d+\) is using the data directory/.test(err.message), 'one server per data directory');
    const db = await fsp.readFile(path.join(dataDir, 'ferry.db'));
    assert.equal(db.includes(Buffer.from(s1.generatedAdminToken ?? 'x')), false, 'the database holds only a hash');
  } finally {
    await s1.close();
  }
  const s2 = await startServer(compileServerConfig({ port: 0, dataDir , gatewayWorkers: TEST_GATEWAY_WORKERS }), { adminToken: undefined });
  try {
    assert.equal(s2.generatedAdminToken, undefined, 'printed only once');
  } finally {
    await s2.close();
  }
});
