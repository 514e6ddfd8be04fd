/** Bulk registration (docs/multi-model.md): the API, the CLI, per-model failures and authorization. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { familyFixture } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import { ADMIN_TOKEN, FERRY_BIN, request, startTestServer, tempDir } from './support/index.js';

let dir: string;
let server: FerryServer;

const call = (method: string, p: string, token: string, json?: unknown) => request({ url: server.url, method, path: p, token, ...(json === undefined ? {} : { json }) });

async function principalWithToken(name: string): Promise<string> {
  assert.equal((await call('POST', '/api/2.0/principals', ADMIN_TOKEN, { name, type: 'USER' })).status, 200);
  const t = await call('POST', '/api/2.0/token-management/on-behalf-of/tokens', ADMIN_TOKEN, { principal: name, comment: 'test' });
  assert.equal(t.status, 200, t.text);
  return t.json.token_value as string;
}

before(async () => {
  dir = await tempDir();
  server = await startTestServer(path.join(dir, 'data'));
});

after(async () => {
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('ferry models import registers a directory of <name>.onnx files; a bad file is reported by name and the rest commit', async () => {
  const models = path.join(dir, 'models');
  await fsp.mkdir(models);
  for (let i = 0; i < 20; i++) await fsp.writeFile(path.join(models, `ads-${i}.onnx`), familyFixture(i).build());
  await fsp.writeFile(path.join(models, 'ads-broken.onnx'), 'not a model');
  await fsp.writeFile(path.join(models, 'README.txt'), 'ignored');
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [FERRY_BIN, 'models', 'import', models, '--json'], { env: { PATH: process.env.PATH ?? '', FERRY_URL: server.url, FERRY_TOKEN: ADMIN_TOKEN } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
  assert.equal(r.code, 1, 'a failure makes the command fail');
  const out = JSON.parse(r.stdout);
  assert.equal(out.registered, 20);
  assert.equal(out.failed, 1);
  // Read ahead, sent in file-name order.
  assert.deepEqual(out.results.map((x: { name: string }) => x.name), [...Array.from({ length: 20 }, (_v, i) => `ads-${i}`), 'ads-broken'].sort());
  const bad = out.results.find((x: { name: string }) => x.name === 'ads-broken');
  assert.equal(bad.status, 'FAILED_REGISTRATION');
  assert.equal(bad.error_code, 'INVALID_PARAMETER_VALUE');
  assert.match(bad.message, /not an ONNX protobuf/);
  // Failed models leave nothing behind: no model, no version.
  assert.equal((await call('GET', '/api/2.0/mlflow/registered-models/get?name=ads-broken', ADMIN_TOKEN)).status, 404);
  const v = await call('GET', '/api/2.0/mlflow/model-versions/get?name=ads-7&version=1', ADMIN_TOKEN);
  assert.equal(v.status, 200, v.text);
  assert.equal(v.json.model_version.status, 'READY');
  // Importing again adds version 2; each call's models are one pack (packs/<uuid>), each version
  // a member of it; a pack is deleted with the last version that points into it.
  const again = await call('POST', '/api/2.0/mlflow/model-versions/bulk-create', ADMIN_TOKEN, { models: [{ name: 'ads-7', content_base64: Buffer.from(familyFixture(7).build()).toString('base64') }] });
  assert.deepEqual(again.json.results, [{ name: 'ads-7', status: 'READY', version: '2' }]);
  const packFile = async (name: string, version: number): Promise<string> => {
    const source = (await server.store.getModelVersion(name, version))?.artifact?.path ?? '';
    assert.match(source, /^packs\/[0-9a-f-]{36}\/\d+-\d+-model\.onnx$/);
    return path.join(dir, 'data', 'artifacts', ...source.split('/').slice(0, 2));
  };
  const exists = (p: string): Promise<boolean> => fsp.stat(p).then(() => true, () => false);
  const [v1, v2] = [await packFile('ads-7', 1), await packFile('ads-7', 2)];
  assert.notEqual(v1, v2);
  const imported = await Promise.all(Array.from({ length: 20 }, (_v, i) => packFile(`ads-${i}`, 1)));
  assert.equal(new Set(imported).size, 1, 'one call, one pack');
  assert.equal((await fsp.stat(v2)).size, familyFixture(7).build().byteLength, 'a pack is its models\' bytes, nothing else');
  const served = await call('GET', '/api/2.0/mlflow-artifacts/artifacts/_models/ads-7/2/model.onnx', ADMIN_TOKEN);
  assert.equal(served.status, 200, 'a member downloads like any version file');
  assert.equal(served.headers['content-length'], String(familyFixture(7).build().byteLength));
  const listed = await call('GET', '/api/2.0/mlflow-artifacts/artifacts?path=_models/ads-7/2', ADMIN_TOKEN);
  assert.deepEqual(listed.json.files, [{ path: 'model.onnx', is_dir: false, file_size: familyFixture(7).build().byteLength }]);
  assert.equal((await call('DELETE', '/api/2.0/mlflow/model-versions/delete', ADMIN_TOKEN, { name: 'ads-7', version: 2 })).status, 200);
  assert.equal(await exists(v2), false, 'its last version deleted, the pack goes');
  assert.equal((await call('DELETE', '/api/2.0/mlflow/registered-models/delete', ADMIN_TOKEN, { name: 'ads-7' })).status, 200);
  assert.equal(await exists(v1), true, 'the other 19 models still point into it');
  assert.equal(await exists(path.join(dir, 'data', 'artifacts', 'models', 'ads-7')), false, 'a bulk model has no models/<name> directory');
  const two = await call('POST', '/api/2.0/mlflow/model-versions/bulk-create', ADMIN_TOKEN, { models: [0, 1].map((i) => ({ name: `pk-${i}`, content_base64: Buffer.from(familyFixture(i).build()).toString('base64') })) });
  assert.equal(two.json.registered, 2, two.text);
  const shared = await packFile('pk-0', 1);
  assert.equal(await packFile('pk-1', 1), shared);
  assert.equal((await call('DELETE', '/api/2.0/mlflow/registered-models/delete', ADMIN_TOKEN, { name: 'pk-0' })).status, 200);
  assert.equal(await exists(shared), true);
  assert.equal((await call('DELETE', '/api/2.0/mlflow/registered-models/delete', ADMIN_TOKEN, { name: 'pk-1' })).status, 200);
  assert.equal(await exists(shared), false, 'gone with its last model');
});

test('ferry models import refuses a model file over 64 MiB by name, before reading it', async () => {
  const models = path.join(dir, 'big-models');
  await fsp.mkdir(models);
  await fsp.writeFile(path.join(models, 'small.onnx'), familyFixture(1).build());
  const big = await fsp.open(path.join(models, 'zz-big.onnx'), 'w');
  await big.truncate(64 * 1024 * 1024 + 1); // sparse: nothing is written
  await big.close();
  const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile(process.execPath, [FERRY_BIN, 'models', 'import', models], { env: { PATH: process.env.PATH ?? '', FERRY_URL: server.url, FERRY_TOKEN: ADMIN_TOKEN } }, (err, _stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr });
    });
  });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /zz-big\.onnx is 67108865 bytes, over the 67108864 bytes/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

test('bulk registration checks CAN_EDIT per existing model: others are created for the caller, a denied one is reported', async () => {
  const bob = await principalWithToken('bob');
  const content = Buffer.from(familyFixture(2).build()).toString('base64');
  // ads-0 exists (admin's); bob may not add versions to it, but may create bob-1.
  const r = await call('POST', '/api/2.0/mlflow/model-versions/bulk-create', bob, { models: [{ name: 'ads-0', content_base64: content }, { name: 'bob-1', content_base64: content }] });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.results[0].status, 'FAILED_REGISTRATION');
  assert.equal(r.json.results[0].error_code, 'PERMISSION_DENIED');
  assert.deepEqual(r.json.results[1], { name: 'bob-1', status: 'READY', version: '1' });
  assert.equal((await call('GET', '/api/2.0/mlflow/model-versions/get?name=ads-0&version=2', ADMIN_TOKEN)).status, 404);
  // bob got CAN_MANAGE on the model he created.
  assert.equal((await call('GET', '/api/2.0/mlflow/model-versions/get?name=bob-1&version=1', bob)).status, 200);
  // Too many models, or none, is a 400 naming the field.
  const empty = await call('POST', '/api/2.0/mlflow/model-versions/bulk-create', bob, { models: [] });
  assert.equal(empty.status, 400);
  assert.match(empty.json.message, /models/);
});

test('ferry models import reads a .tar.gz archive as a stream: <name>.onnx files anywhere in it, long names included', async () => {
  const src = path.join(dir, 'archive-src');
  await fsp.mkdir(path.join(src, 'region', 'eu'), { recursive: true });
  const long = `arc-${'x'.repeat(120)}`;
  await fsp.writeFile(path.join(src, 'arc-0.onnx'), familyFixture(0).build());
  await fsp.writeFile(path.join(src, 'region', 'eu', 'arc-1.onnx'), familyFixture(1).build());
  await fsp.writeFile(path.join(src, 'region', `${long}.onnx`), familyFixture(2).build());
  await fsp.writeFile(path.join(src, 'region', 'notes.txt'), 'skipped');
  const archive = path.join(dir, 'models.tar.gz');
  // GNU tar writes the 120-character name with a long-name entry: the reader must follow it.
  await new Promise<void>((resolve, reject) => execFile('tar', ['-czf', archive, '-C', src, '.'], (err) => (err === null ? resolve() : reject(new Error(err.message)))));
  const r = await new Promise<{ code: number; stdout: string }>((resolve) => {
    execFile(process.execPath, [FERRY_BIN, 'models', 'import', archive, '--json'], { env: { PATH: process.env.PATH ?? '', FERRY_URL: server.url, FERRY_TOKEN: ADMIN_TOKEN } }, (err, stdout) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout });
    });
  });
  assert.equal(r.code, 0, r.stdout);
  const out = JSON.parse(r.stdout);
  assert.equal(out.registered, 3);
  assert.deepEqual(out.results.map((x: { name: string }) => x.name).sort(), ['arc-0', 'arc-1', long].sort());
  for (const name of ['arc-1', long]) {
    assert.equal((await call('GET', `/api/2.0/mlflow/model-versions/get?name=${name}&version=1`, ADMIN_TOKEN)).json.model_version.status, 'READY');
  }
  // Not an archive: a clear error, nothing registered.
  const bogus = path.join(dir, 'bogus.tar');
  await fsp.writeFile(bogus, Buffer.alloc(1024, 7));
  const bad = await new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile(process.execPath, [FERRY_BIN, 'models', 'import', bogus], { env: { PATH: process.env.PATH ?? '', FERRY_URL: server.url, FERRY_TOKEN: ADMIN_TOKEN } }, (err, _stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr });
    });
  });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /not a tar archive/);
});

test('bulk registration racing another user\'s create of one of its models never writes a version into that user\'s model', { timeout: 120_000 }, async () => {
  const mallory = await principalWithToken('mallory');
  const alice = await principalWithToken('alice');
  const content = Buffer.from(familyFixture(3).build()).toString('base64');
  // Many models: the inspection takes a while after mallory's permission check, when 'victim' did not exist yet.
  const models = [...Array.from({ length: 300 }, (_, i) => ({ name: `filler-${i}`, content_base64: content })), { name: 'victim', content_base64: content }];
  const bulk = call('POST', '/api/2.0/mlflow/model-versions/bulk-create', mallory, { models });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const created = await call('POST', '/api/2.0/mlflow/registered-models/create', alice, { name: 'victim' });
  const r = await bulk;
  assert.equal(r.status, 200, r.text);
  const victim = r.json.results.at(-1);
  if (created.status === 200) {
    // Alice's model, created during or before the bulk call: mallory's entry is refused, nothing written.
    assert.equal(victim.status, 'FAILED_REGISTRATION', JSON.stringify(victim));
    assert.equal(victim.error_code, 'PERMISSION_DENIED');
    assert.equal((await call('GET', '/api/2.0/mlflow/model-versions/get?name=victim&version=1', ADMIN_TOKEN)).status, 404);
  } else {
    // Mallory's call committed first: the model is hers and Alice's create is the one refused.
    assert.equal(created.status, 409, created.text);
    assert.deepEqual(victim, { name: 'victim', status: 'READY', version: '1' });
  }
  assert.equal(r.json.registered, created.status === 200 ? 300 : 301);
});
