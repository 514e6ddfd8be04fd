/**
 * The registry over real HTTP: MLflow REST round-trips, every error code, auth, the artifact
 * proxy with its upload limit and traversal attempts.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { writeFixtures, type FixturePaths } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import { TRAVERSAL_KEYS } from './contract/artifacts.js';
import { request, startTestServer, tempDir, type HttpResult } from './support/index.js';

const API = '/api/2.0/mlflow';
let dir: string;
let fx: FixturePaths;
let server: FerryServer;

const call = (method: string, p: string, json?: unknown, token?: string | null): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }), ...(token === undefined ? {} : { token }) });

function assertError(r: HttpResult, status: number, code: string, message?: RegExp): void {
  assert.equal(r.status, status, r.text);
  assert.deepEqual(Object.keys(r.json as object).sort(), ['error_code', 'message']);
  assert.equal(r.json.error_code, code);
  if (message) assert.match(r.json.message, message);
}

before(async () => {
  dir = await tempDir();
  fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(path.join(dir, 'data'), { maxUploadSize: 64 * 1024, maxBodySize: 8 * 1024 });
});

after(async () => {
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('authentication', () => {
  test('health probes are public', async () => {
    assert.equal((await call('GET', '/v2/health/live', undefined, null)).status, 200);
    assert.equal((await call('GET', '/v2/health/ready', undefined, null)).status, 200);
  });

  test('every other route needs a valid bearer token', async () => {
    for (const [method, p] of server.router.list().filter((r) => r.meta?.kind !== 'public').map((r) => [r.method, r.pattern.replace(/\*(\w+)|:(\w+)/g, 'x')] as const)) {
      if (p.startsWith('/v1/')) {
        // The OpenAI-compatible routes answer in OpenAI's error shape (test/openai.test.ts).
        const r = await call(method, p, undefined, null);
        assert.equal(r.status, 401, `${method} ${p}`);
        assert.equal(r.json.error.code, 'UNAUTHENTICATED');
        continue;
      }
      if (p === '/v2' || p.startsWith('/v2/')) {
        // The Open Inference Protocol's routes answer {"error": "<message>"} (test/clients.test.ts).
        for (const [token, message] of [[null, /Authorization: Bearer/], ['ferry_wrong', /Invalid or expired token/]] as const) {
          const r = await call(method, p, undefined, token);
          assert.equal(r.status, 401, `${method} ${p}`);
          assert.deepEqual(Object.keys(r.json), ['error'], `${method} ${p}`);
          assert.match(r.json.error, message);
        }
        continue;
      }
      assertError(await call(method, p, undefined, null), 401, 'UNAUTHENTICATED', /Authorization: Bearer/);
      assertError(await call(method, p, undefined, 'ferry_wrong'), 401, 'UNAUTHENTICATED', /Invalid or expired token/);
    }
    const r = await request({ url: server.url, path: `${API}/registered-models/search`, headers: { authorization: 'Basic abc' }, token: null });
    assertError(r, 401, 'UNAUTHENTICATED');
  });
});

describe('registered models', () => {
  test('create, get, update, tag, search, delete', async () => {
    const created = await call('POST', `${API}/registered-models/create`, { name: 'iris', description: 'flowers', tags: [{ key: 'team', value: 'ml' }] });
    assert.equal(created.status, 200, created.text);
    assert.equal(created.json.registered_model.name, 'iris');
    assert.deepEqual(created.json.registered_model.tags, [{ key: 'team', value: 'ml' }]);
    assertError(await call('POST', `${API}/registered-models/create`, { name: 'iris' }), 409, 'RESOURCE_ALREADY_EXISTS', /'iris' already exists/);

    const got = await call('GET', `${API}/registered-models/get?name=iris`);
    assert.equal(got.json.registered_model.description, 'flowers');
    const updated = await call('PATCH', `${API}/registered-models/update`, { name: 'iris', description: 'new' });
    assert.equal(updated.json.registered_model.description, 'new');
    assert.equal((await call('POST', `${API}/registered-models/set-tag`, { name: 'iris', key: 'stage', value: 'dev' })).status, 200);
    assert.equal((await call('DELETE', `${API}/registered-models/delete-tag`, { name: 'iris', key: 'team' })).status, 200);
    assert.deepEqual((await call('GET', `${API}/registered-models/get?name=iris`)).json.registered_model.tags, [{ key: 'stage', value: 'dev' }]);

    await call('POST', `${API}/registered-models/create`, { name: 'iris-2' });
    await call('POST', `${API}/registered-models/create`, { name: 'other' });
    const search = await call('GET', `${API}/registered-models/search?filter=${encodeURIComponent("name LIKE 'iris%'")}&max_results=1`);
    assert.deepEqual(search.json.registered_models.map((m: { name: string }) => m.name), ['iris']);
    const next = await call('GET', `${API}/registered-models/search?filter=${encodeURIComponent("name LIKE 'iris%'")}&max_results=1&page_token=${search.json.next_page_token}`);
    assert.deepEqual(next.json.registered_models.map((m: { name: string }) => m.name), ['iris-2']);
    assert.equal(next.json.next_page_token, undefined);
    assertError(await call('GET', `${API}/registered-models/search?filter=${encodeURIComponent('foo > 3')}`), 400, 'INVALID_PARAMETER_VALUE', /Unsupported filter/);
    // Found by the fuzzer: run_id is a model-version field (it was a 500 from the store's SQL).
    assertError(await call('GET', `${API}/registered-models/search?filter=${encodeURIComponent("run_id = 'r1'")}`), 400, 'INVALID_PARAMETER_VALUE', /run_id applies to model-versions\/search/);

    assert.equal((await call('DELETE', `${API}/registered-models/delete`, { name: 'iris-2' })).status, 200);
    assertError(await call('GET', `${API}/registered-models/get?name=iris-2`), 404, 'RESOURCE_DOES_NOT_EXIST', /'iris-2' not found/);
  });

  test('validation errors name the field and value', async () => {
    assertError(await call('POST', `${API}/registered-models/create`, { name: '../evil' }), 400, 'INVALID_PARAMETER_VALUE', /"\.\.\/evil" for 'name'/);
    assertError(await call('POST', `${API}/registered-models/create`, {}), 400, 'INVALID_PARAMETER_VALUE', /'name'/);
    assertError(await call('POST', `${API}/registered-models/create`, { name: 'x', tags: 'nope' }), 400, 'INVALID_PARAMETER_VALUE', /'tags'/);
    assertError(await call('GET', `${API}/model-versions/get?name=iris&version=abc`), 400, 'INVALID_PARAMETER_VALUE', /'version'/);
    const malformed = await request({ url: server.url, method: 'POST', path: `${API}/registered-models/create`, body: '{"name": ', headers: { 'content-type': 'application/json' } });
    assertError(malformed, 400, 'MALFORMED_REQUEST', /not valid JSON/);
    assertError(await request({ url: server.url, method: 'POST', path: `${API}/registered-models/create`, body: '[1]' }), 400, 'MALFORMED_REQUEST', /JSON object/);
    assertError(await call('POST', `${API}/registered-models/create`, { name: 'big', description: 'x'.repeat(9000) }), 413, 'PAYLOAD_TOO_LARGE');
    assertError(await call('GET', `${API}/registered-models/create`), 405, 'METHOD_NOT_ALLOWED');
    assertError(await call('GET', '/api/2.0/nothing-here'), 404, 'ENDPOINT_NOT_FOUND');
    assertError(await call('GET', `${API}/registered-models/get?name=%E0%A4%A`), 404, 'RESOURCE_DOES_NOT_EXIST');
  });
});

describe('model versions', () => {
  before(async () => {
    await call('POST', `${API}/registered-models/create`, { name: 'lin' });
  });

  test('a server-side .onnx file registers READY with its signature, and the store keeps its own copy', async () => {
    const copy = path.join(dir, 'copy-linear.onnx');
    await fsp.copyFile(fx.linear, copy);
    const r = await call('POST', `${API}/model-versions/create`, { name: 'lin', source: copy, run_id: 'run1', tags: [{ key: 'k', value: 'v' }] });
    assert.equal(r.status, 200, r.text);
    const v = r.json.model_version;
    assert.equal(v.version, '1');
    assert.equal(v.status, 'READY', v.status_message);
    assert.equal(v.flavor, 'onnx');
    assert.deepEqual(v.signature.inputs, [{ name: 'x', dtype: 'float32', shape: [-1, 4] }]);
    assert.deepEqual(v.signature.outputs, [{ name: 'y', dtype: 'float32', shape: [-1, 1] }]);
    assert.match(v.artifact_sha256, /^[0-9a-f]{64}$/);
    await fsp.rm(copy);
    const again = await call('GET', `${API}/model-versions/get?name=lin&version=1`);
    assert.equal(again.json.model_version.status, 'READY');
    const dl = await call('GET', `${API}/model-versions/get-download-uri?name=lin&version=1`);
    assert.equal(dl.json.artifact_uri, 'mlflow-artifacts:/_models/lin/1', 'a URI the MLflow client resolves through the proxy');
    await fsp.access(path.join(dir, 'data', 'artifacts', 'models', 'lin', '1', 'copy-linear.onnx'));
  });

  test('an MLflow model directory brings its input example', async () => {
    const r = await call('POST', `${API}/model-versions/create`, { name: 'lin', source: fx.mlflowLinear });
    const v = r.json.model_version;
    assert.equal(v.status, 'READY', v.status_message);
    assert.ok(v.input_example, 'input example recorded');
    assert.deepEqual(v.signature.inputs[0].shape, [-1, 4]);
  });

  test('an artifact uploaded through the artifact proxy registers', async () => {
    const bytes = await fsp.readFile(fx.twoInput);
    const put = await request({ url: server.url, method: 'PUT', path: '/api/2.0/mlflow-artifacts/artifacts/up/two/model.onnx', body: bytes });
    assert.equal(put.status, 200, put.text);
    const list = await call('GET', '/api/2.0/mlflow-artifacts/artifacts?path=up');
    assert.deepEqual(list.json.files, [{ path: 'two', is_dir: true }], 'names relative to the listed directory, as MLflow\'s client joins them');
    const inner = await call('GET', '/api/2.0/mlflow-artifacts/artifacts?path=up/two');
    assert.deepEqual(inner.json.files.map((f: { path: string }) => f.path), ['model.onnx']);
    const get = await request({ url: server.url, path: '/api/2.0/mlflow-artifacts/artifacts/up/two/model.onnx' });
    assert.equal(get.status, 200);
    assert.equal(get.text.length > 0, true);
    await call('POST', `${API}/registered-models/create`, { name: 'two' });
    const r = await call('POST', `${API}/model-versions/create`, { name: 'two', source: 'mlflow-artifacts:/up/two' });
    assert.equal(r.json.model_version.status, 'READY', r.json.model_version.status_message);
    assert.deepEqual(r.json.model_version.signature.inputs.map((i: { name: string }) => i.name).sort(), ['a', 'b']);
  });

  test('a bad artifact is FAILED_REGISTRATION with a reason, and nothing crashes', async () => {
    const junk = path.join(dir, 'junk.onnx');
    await fsp.writeFile(junk, Buffer.from([0xff, 0x00, 0x13, 0x37, 0x42, 0x99]));
    const bad = await call('POST', `${API}/model-versions/create`, { name: 'lin', source: junk });
    assert.equal(bad.json.model_version.status, 'FAILED_REGISTRATION');
    assert.match(bad.json.model_version.status_message, /junk\.onnx|ONNX|protobuf|parse/i);
    const emptyDir = path.join(dir, 'empty');
    await fsp.mkdir(emptyDir);
    const none = await call('POST', `${API}/model-versions/create`, { name: 'lin', source: emptyDir });
    assert.equal(none.json.model_version.status, 'FAILED_REGISTRATION');
    assert.match(none.json.model_version.status_message, /No model found/);
    const missing = await call('POST', `${API}/model-versions/create`, { name: 'lin', source: path.join(dir, 'absent.onnx') });
    assert.equal(missing.json.model_version.status, 'FAILED_REGISTRATION');
    assert.match(missing.json.model_version.status_message, /does not exist/);
    const mlmodel = path.join(dir, 'sk');
    await fsp.mkdir(mlmodel);
    await fsp.writeFile(path.join(mlmodel, 'MLmodel'), 'flavors:\n  sklearn:\n    pickled_model: model.pkl\n');
    const sk = await call('POST', `${API}/model-versions/create`, { name: 'lin', source: mlmodel });
    assert.match(sk.json.model_version.status_message, /no onnx, transformers or python_function flavor \(flavors: sklearn\)/);
    assertError(await call('POST', `${API}/model-versions/create`, { name: 'lin', source: 's3://bucket/model' }), 400, 'INVALID_PARAMETER_VALUE', /'source'/);
    assertError(await call('POST', `${API}/model-versions/create`, { name: 'lin', source: 'mlflow-artifacts:/../../etc' }), 400, 'INVALID_PARAMETER_VALUE');
    assertError(await call('POST', `${API}/model-versions/create`, { name: 'ghost', source: fx.linear }), 404, 'RESOURCE_DOES_NOT_EXIST', /'ghost'/);
    assert.equal((await call('GET', '/v2/health/live')).status, 200);
  });

  test('aliases, tags, search and delete', async () => {
    assert.equal((await call('POST', `${API}/registered-models/alias`, { name: 'lin', alias: 'champion', version: '1' })).status, 200);
    const byAlias = await call('GET', `${API}/registered-models/alias?name=lin&alias=champion`);
    assert.equal(byAlias.json.model_version.version, '1');
    assert.deepEqual(byAlias.json.model_version.aliases, ['champion']);
    assert.deepEqual((await call('GET', `${API}/registered-models/get?name=lin`)).json.registered_model.aliases, [{ alias: 'champion', version: '1' }]);
    assertError(await call('POST', `${API}/registered-models/alias`, { name: 'lin', alias: 'champion', version: '99' }), 404, 'RESOURCE_DOES_NOT_EXIST');
    assertError(await call('POST', `${API}/registered-models/alias`, { name: 'lin', alias: 'latest', version: '1' }), 400, 'INVALID_PARAMETER_VALUE', /reserved/);
    assertError(await call('GET', `${API}/registered-models/alias?name=lin&alias=nope`), 404, 'RESOURCE_DOES_NOT_EXIST', /Alias 'nope'/);
    // Names of Object.prototype's members are ordinary names: not found until set, then found.
    for (const alias of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      assertError(await call('GET', `${API}/registered-models/alias?name=lin&alias=${alias}`), 404, 'RESOURCE_DOES_NOT_EXIST', new RegExp(`Alias '${alias}'`));
      const endpoint = await call('POST', '/api/2.0/serving-endpoints', { name: `proto-${alias.replace(/_/g, '')}`, config: { served_entities: [{ entity_name: 'lin', entity_version: alias, workload_size: 'Small', scale_to_zero_enabled: true }] } });
      assertError(endpoint, 400, 'INVALID_PARAMETER_VALUE', new RegExp(`Alias '${alias}' of registered model 'lin' not found`));
      assert.equal((await call('POST', `${API}/registered-models/alias`, { name: 'lin', alias, version: '1' })).status, 200);
      assert.equal((await call('GET', `${API}/registered-models/alias?name=lin&alias=${alias}`)).json.model_version.version, '1');
      assert.equal((await call('DELETE', `${API}/registered-models/alias`, { name: 'lin', alias })).status, 200);
    }

    assert.equal((await call('POST', `${API}/model-versions/set-tag`, { name: 'lin', version: '1', key: 'q', value: 'good' })).status, 200);
    const search = await call('GET', `${API}/model-versions/search?filter=${encodeURIComponent("name='lin' AND tags.q='good'")}`);
    assert.deepEqual(search.json.model_versions.map((v: { version: string }) => v.version), ['1']);
    assert.equal((await call('PATCH', `${API}/model-versions/update`, { name: 'lin', version: '1', description: 'first' })).json.model_version.description, 'first');
    assert.equal((await call('DELETE', `${API}/model-versions/delete-tag`, { name: 'lin', version: '1', key: 'q' })).status, 200);

    assert.equal((await call('DELETE', `${API}/registered-models/alias`, { name: 'lin', alias: 'champion' })).status, 200);
    assertError(await call('DELETE', `${API}/registered-models/alias`, { name: 'lin', alias: 'champion' }), 404, 'RESOURCE_DOES_NOT_EXIST');
    assert.equal((await call('DELETE', `${API}/model-versions/delete`, { name: 'lin', version: '1' })).status, 200);
    assertError(await call('GET', `${API}/model-versions/get?name=lin&version=1`), 404, 'RESOURCE_DOES_NOT_EXIST');
    assertError(await call('DELETE', `${API}/model-versions/delete`, { name: 'lin', version: '1' }), 404, 'RESOURCE_DOES_NOT_EXIST');
    await assert.rejects(fsp.access(path.join(dir, 'data', 'artifacts', 'models', 'lin', '1')), 'artifact directory removed');
    const latest = await call('POST', `${API}/registered-models/get-latest-versions`, { name: 'lin' });
    assert.ok(Number(latest.json.model_versions[0].version) > 1);
  });
});

describe('rename', () => {
  test('the model\'s files move with it; a new model under the old name gets files of its own', async () => {
    await call('POST', `${API}/registered-models/create`, { name: 'before' });
    await call('POST', `${API}/model-versions/create`, { name: 'before', source: fx.linear });
    await call('POST', `${API}/registered-models/alias`, { name: 'before', alias: 'best', version: '1' });
    const r = await call('POST', `${API}/registered-models/rename`, { name: 'before', new_name: 'after' });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.registered_model.aliases, [{ alias: 'best', version: '1' }]);
    assertError(await call('GET', `${API}/registered-models/get?name=before`), 404, 'RESOURCE_DOES_NOT_EXIST');
    const sha = (await call('GET', `${API}/model-versions/get?name=after&version=1`)).json.model_version.artifact_sha256;
    await fsp.access(path.join(dir, 'data', 'artifacts', 'models', 'after', '1', 'linear.onnx'));
    await call('POST', `${API}/registered-models/create`, { name: 'before' });
    assert.equal((await call('POST', `${API}/model-versions/create`, { name: 'before', source: fx.twoInput })).json.model_version.version, '1');
    assert.equal((await call('DELETE', `${API}/registered-models/delete`, { name: 'before' })).status, 200);
    const file = await request({ url: server.url, path: '/api/2.0/mlflow-artifacts/artifacts/_models/after/1/linear.onnx' });
    assert.equal(file.status, 200, 'the renamed model\'s file survives the new model\'s delete');
    assert.equal((await call('GET', `${API}/model-versions/get?name=after&version=1`)).json.model_version.artifact_sha256, sha);
    assertError(await call('POST', `${API}/registered-models/rename`, { name: 'after', new_name: 'lin' }), 409, 'RESOURCE_ALREADY_EXISTS');
    assertError(await call('POST', `${API}/registered-models/rename`, { name: 'after', new_name: 'bad name' }), 400, 'INVALID_PARAMETER_VALUE', /new_name/);
  });
});

describe('artifact proxy limits', () => {
  test('an upload over the limit is refused while it streams', async () => {
    const r = await request({ url: server.url, method: 'PUT', path: '/api/2.0/mlflow-artifacts/artifacts/big/model.onnx', body: Buffer.alloc(65 * 1024) });
    assertError(r, 413, 'PAYLOAD_TOO_LARGE', /65536 bytes/);
    assertError(await call('GET', '/api/2.0/mlflow-artifacts/artifacts/big/model.onnx'), 404, 'RESOURCE_DOES_NOT_EXIST');
  });

  test('paths that try to escape the store are refused', async () => {
    const attempts = [
      ...TRAVERSAL_KEYS.filter((k) => k !== '' && !k.includes('\0')).map((k) => k.split('/').map((s) => (s === '..' || s === '.' ? s : encodeURIComponent(s).replace(/%25/g, '%'))).join('/')),
      '..%2f..%2fetc%2fpasswd', '%2e%2e%2f%2e%2e%2fescape', 'a/%00/b', '%2E%2E/escape',
    ];
    for (const p of attempts) {
      for (const method of ['PUT', 'GET', 'DELETE']) {
        const r = await request({ url: server.url, method, path: `/api/2.0/mlflow-artifacts/artifacts/${p}`, ...(method === 'PUT' ? { body: 'x' } : {}) });
        assert.ok(r.status === 400 || r.status === 404, `${method} ${p} → ${r.status} ${r.text}`);
      }
    }
    await assert.rejects(fsp.access(path.join(dir, 'data', 'escape')));
    await assert.rejects(fsp.access(path.join(dir, 'escape')));
  });
});
