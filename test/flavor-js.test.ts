/**
 * The js flavor end to end: user modules registered from their directories and served by real
 * replicas (Node's permission model; privilege drop when root). Covers the contract (columns in,
 * columns out, params), user errors as MODEL_ERROR with the replica still serving, a module that
 * hangs (504, restarted), a module that tries to read the server's database, and that
 * registration never imports the module.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { JS_MODEL_MANIFEST, jsModelReference, writeJsModel } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import {
  ferryChildren, registerVersion, replicaPids, request, startTestServer, tempDir, waitFor, waitSettled as waitSettledAt, type HttpResult,
} from './support/index.js';

let dir: string;
let dataDir: string;
let server: FerryServer;

const call = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });
const invoke = (endpoint: string, body: unknown): Promise<HttpResult> => call('POST', `/serving-endpoints/${endpoint}/invocations`, body);

const TEXT_SIGNATURE = { inputs: [{ name: 'text', dtype: 'string', shape: [-1] }], outputs: [{ name: 'out', dtype: 'json' }] };

/** Writes a js model directory: `model.mjs` with `source`, and ferry.json (signature, plus `extra`). */
async function writeModule(name: string, source: string, extra: Record<string, unknown> = {}): Promise<string> {
  const modelDir = path.join(dir, 'models', name);
  await fsp.mkdir(modelDir, { recursive: true });
  await fsp.writeFile(path.join(modelDir, 'model.mjs'), source);
  await fsp.writeFile(path.join(modelDir, 'ferry.json'), JSON.stringify({ flavor: 'js', signature: TEXT_SIGNATURE, ...extra }));
  return modelDir;
}

async function serve(name: string, source: string): Promise<any> {
  await registerVersion(server.url, name, source);
  return deploy(name);
}

async function deploy(name: string): Promise<any> {
  const r = await call('POST', '/api/2.0/serving-endpoints', { name, config: { served_entities: [{ entity_name: name, entity_version: '1' }] } });
  assert.equal(r.status, 200, r.text);
  return waitSettledAt(server.url, name, 60_000);
}

before(async () => {
  dir = await tempDir();
  dataDir = path.join(dir, 'data');
  // js models run only in the OS sandbox (the default refuses them without one).
  server = await startTestServer(dataDir, { sandbox: 'bwrap' });
});

after(async () => {
  await server?.close();
  assert.deepEqual(await ferryChildren(dataDir), [], 'no replica outlives the server');
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('js flavor', () => {
  test('the sample model: ferry.json signature, load reads its own files, columns in and out, params from ferry.json and per request', async () => {
    const e = await serve('sentiment', await writeJsModel(path.join(dir, 'fixtures')));
    assert.equal(e.state.ready, 'READY', JSON.stringify(e.state));
    const v = (await call('GET', '/api/2.0/mlflow/model-versions/get?name=sentiment&version=1')).json.model_version;
    assert.equal(v.flavor, 'js');
    assert.deepEqual(v.signature, { inputs: JS_MODEL_MANIFEST.signature.inputs, outputs: JS_MODEL_MANIFEST.signature.outputs });

    const texts = ['I love this great movie', 'what a terrible, awful day', 'nothing to say'];
    const want = jsModelReference(texts);
    const cols = await invoke('sentiment', { inputs: texts });
    assert.equal(cols.status, 200, cols.text);
    assert.deepEqual(cols.json.predictions, want);
    const records = await invoke('sentiment', { dataframe_split: { columns: ['text'], data: texts.map((t) => [t]) } });
    assert.deepEqual(records.json.predictions, texts.map((_, i) => ({ words: want.words[i], score: want.score[i], matches: want.matches[i] })));
    const weighted = await invoke('sentiment', { inputs: texts, params: { weight: 2.5 } });
    assert.deepEqual(weighted.json.predictions.score, jsModelReference(texts, 2.5).score);
    const v2 = await call('POST', '/v2/models/sentiment/infer', { inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: [texts[0]] }] });
    assert.equal(v2.status, 200, v2.text);
    assert.deepEqual(v2.json.outputs.map((o: { name: string; datatype: string }) => `${o.name}:${o.datatype}`), ['words:INT32', 'score:FP32', 'matches:BYTES']);
    assert.deepEqual(JSON.parse(v2.json.outputs[2].data[0]), want.matches[0]);

    // Concurrent requests (batched by the replica) answer what each would alone.
    const many = Array.from({ length: 20 }, (_, i) => `${texts[i % 3]} ${'good '.repeat(i)}`);
    const answers = await Promise.all(many.map((t) => invoke('sentiment', { inputs: [t] })));
    assert.deepEqual(answers.map((a) => a.json.predictions.score[0]), jsModelReference(many).score);
  });

  test('an error thrown by the module is a 500 MODEL_ERROR with its message, and the replica keeps serving', async () => {
    const pids = await replicaPids(dataDir, 'sentiment');
    const r = await invoke('sentiment', { inputs: ['fine', 'fail'] });
    assert.equal(r.status, 500, r.text);
    assert.deepEqual(r.json, { error_code: 'MODEL_ERROR', message: 'Model error: the text "fail" is refused by this model' });
    // A failing request batched with good ones fails alone.
    const [bad, good] = await Promise.all([invoke('sentiment', { inputs: ['fail'] }), invoke('sentiment', { inputs: ['good'] })]);
    assert.equal(bad.status, 500);
    assert.deepEqual(good.json.predictions.score, [1]);
    assert.deepEqual(await replicaPids(dataDir, 'sentiment'), pids, 'same replica process');
  });

  test('outputs that break the contract are a MODEL_ERROR saying what is wrong', async () => {
    const modelDir = await writeModule('liar', `
      export function predict(input) {
        if (input.text[0] === 'short') return { out: [] };
        if (input.text[0] === 'extra') return { out: input.text, other: [1] };
        if (input.text[0] === 'fn') return { out: [() => 1] };
        return input.text.map((t) => ({ echo: t }));
      }`);
    assert.equal((await serve('liar', modelDir)).state.ready, 'READY');
    assert.deepEqual((await invoke('liar', { inputs: ['a', 'b'] })).json.predictions, [{ echo: 'a' }, { echo: 'b' }]);
    const cases: Array<[string, RegExp]> = [
      ['short', /0 rows for output 'out', expected a list of 1 rows/],
      ['extra', /an output 'other' that ferry\.json's signature does not declare/],
      ['fn', /cannot leave the module/],
    ];
    for (const [text, message] of cases) {
      const r = await invoke('liar', { inputs: [text] });
      assert.equal(r.status, 500, text);
      assert.equal(r.json.error_code, 'MODEL_ERROR');
      assert.match(r.json.message, message);
    }
  });

  test('a module cannot read the server database: the permission model refuses, at load (as root) and at predict', async () => {
    const db = path.join(dataDir, 'ferry.db');
    assert.ok(fs.existsSync(db), 'the database exists, so only a denial can stop the read');
    const modelDir = await writeModule('snoop', `
      import { readFileSync } from 'node:fs';
      let atLoad;
      export function load(context) {
        try { atLoad = 'read ' + readFileSync(context.params.target).length + ' bytes'; } catch (err) { atLoad = err; }
      }
      export function predict(input, params) {
        if (input.text[0] === 'load') { if (atLoad instanceof Error) throw atLoad; return { out: [atLoad] }; }
        return { out: [readFileSync(${JSON.stringify(db)}).length] };
      }`, { params: { target: db } });
    assert.equal((await serve('snoop', modelDir)).state.ready, 'READY');
    for (const when of ['load', 'now']) {
      const r = await invoke('snoop', { inputs: [when] });
      assert.equal(r.status, 500, `${when}: ${r.text}`);
      assert.equal(r.json.error_code, 'MODEL_ERROR');
      assert.match(r.json.message, /^Model error: .*ERR_ACCESS_DENIED/, when);
    }
  });

  test('a module that hangs: its request times out (504), then a fresh module thread (or replica) serves the next requests', async () => {
    const modelDir = await writeModule('hang', `
      let loads = 0;
      export function load() { loads++; }
      export function predict(input) {
        if (input.text[0] === 'hang') for (;;) {}
        return { out: input.text.map(() => ({ loads })) };
      }`, { timeout_ms: 300 });
    assert.equal((await serve('hang', modelDir)).state.ready, 'READY');
    const pids = await replicaPids(dataDir, 'hang');
    const r = await invoke('hang', { inputs: ['hang'] });
    assert.equal(r.status, 504, r.text);
    assert.equal(r.json.error_code, 'DEADLINE_EXCEEDED');
    assert.match(r.json.message, /^Model error: predict did not return within 300 ms/);
    // The module reloads in the same replica: in the sandbox the replica runs as the replica user
    // from its start, so its files stay readable to it (as root too).
    const next = await waitFor('hang to answer again', async () => {
      const q = await invoke('hang', { inputs: ['hello'] });
      return q.status === 200 ? q : undefined;
    }, 30_000);
    assert.deepEqual(next.json.predictions, [{ loads: 1 }], 'a freshly loaded module');
    assert.deepEqual(await replicaPids(dataDir, 'hang'), pids, 'same replica process');
    assert.doesNotMatch(r.text + next.text, new RegExp(dataDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'no server path in the answers');
  });

  test('registration never imports the module; a module that fails to import fails the deployment with its error', async () => {
    const marker = path.join(dir, 'imported');
    const modelDir = await writeModule('boom', `
      import { writeFileSync } from 'node:fs';
      try { writeFileSync(${JSON.stringify(marker)}, 'x'); } catch {}
      throw new Error('boom at import');`);
    await registerVersion(server.url, 'boom', modelDir);
    assert.equal(fs.existsSync(marker), false, 'the server did not run the module');
    const e = await deploy('boom');
    assert.equal(e.state.config_update, 'UPDATE_FAILED');
    assert.match(e.state.config_update_message, /Model error: load failed: boom at import/);
  });

  test('registration refuses a js model without a usable ferry.json', async () => {
    const cases: Array<[string, Record<string, unknown> | undefined, RegExp]> = [
      ['no-manifest', undefined, /ferry\.json not found/],
      ['no-signature', { flavor: 'js' }, /needs a "signature"/],
      ['bad-dtype', { flavor: 'js', signature: { inputs: [{ name: 'x', dtype: 'text', shape: [-1] }], outputs: [{ name: 'y', dtype: 'json' }] } }, /signature\.inputs\[0\]\.dtype is "text"/],
      ['bad-main', { flavor: 'js', main: '../outside.mjs', signature: TEXT_SIGNATURE }, /main \("\.\.\/outside\.mjs"\) must be a path inside the model directory/],
      ['typo', { flavor: 'js', signature: TEXT_SIGNATURE, timeout: 5 }, /unknown key 'timeout'/],
    ];
    await call('POST', '/api/2.0/mlflow/registered-models/create', { name: 'invalid' });
    for (const [name, manifest, message] of cases) {
      const modelDir = path.join(dir, 'invalid', name);
      await fsp.mkdir(modelDir, { recursive: true });
      await fsp.writeFile(path.join(modelDir, 'model.mjs'), 'export function predict() { return []; }');
      if (manifest !== undefined) await fsp.writeFile(path.join(modelDir, 'ferry.json'), JSON.stringify(manifest));
      const r = await call('POST', '/api/2.0/mlflow/model-versions/create', { name: 'invalid', source: modelDir });
      assert.equal(r.json.model_version.status, 'FAILED_REGISTRATION', name);
      assert.match(r.json.model_version.status_message, message, name);
    }
  });
});
