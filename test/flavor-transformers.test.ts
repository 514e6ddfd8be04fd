/**
 * The transformers flavor end to end: tiny Hugging Face-layout models (random weights, a real
 * WordPiece tokenizer.json) registered from their directories, served by real replicas (Node's
 * permission model, privilege drop when root) through transformers.js, and compared with the
 * fixture's pure-JS reference (its own tokenizer and forward pass).
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { tinyBertReference, TINY_BERT_HIDDEN, writeTinyBert } from '../src/fixtures/index.js';
import { getFlavor } from '../src/flavors/index.js';
import type { FerryServer } from '../src/server/index.js';
import {
  ADMIN_TOKEN, ferryChildren, registerVersion, rejectsWith, request, startTestServer, tempDir, waitSettled as waitSettledAt, type HttpResult,
} from './support/index.js';

let dir: string;
let dataDir: string;
let server: FerryServer;
const paths: Record<'cls' | 'emb' | 'ner', string> = { cls: '', emb: '', ner: '' };

const call = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });
const invoke = (endpoint: string, body: unknown): Promise<HttpResult> => call('POST', `/serving-endpoints/${endpoint}/invocations`, body);

const TEXTS = ['Ferry serves models!', 'I love this movie', 'Alice lives in Paris.', 'this film was terrible', 'xyzzy', 'great'];

function assertClose(actual: readonly number[], expected: readonly number[], what: string, tolerance = 1e-5): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  actual.forEach((v, i) => assert.ok(Math.abs(v - (expected[i] ?? NaN)) <= tolerance, `${what}[${i}]: ${v} vs ${expected[i]}`));
}

/** Makes config.json announce external weights (onnx/model.onnx_data) for the graph. */
async function externalData(modelDir: string): Promise<void> {
  const file = path.join(modelDir, 'config.json');
  const config = JSON.parse(await fsp.readFile(file, 'utf8'));
  await fsp.writeFile(file, JSON.stringify({ ...config, 'transformers.js_config': { use_external_data_format: true } }));
}

async function createEndpoint(name: string, model: string): Promise<void> {
  const r = await call('POST', '/api/2.0/serving-endpoints', { name, config: { served_entities: [{ entity_name: model, entity_version: '1' }] } });
  assert.equal(r.status, 200, r.text);
}

/** Model calls and rows the endpoint's replicas have run, from the server's /metrics. */
async function modelCalls(endpoint: string): Promise<{ calls: number; rows: number }> {
  const text = (await call('GET', '/metrics')).text;
  const value = (metric: string): number => Number(new RegExp(`^${metric}\\{[^}]*endpoint="${endpoint}"[^}]*\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { calls: value('ferry_batch_size_count'), rows: value('ferry_batch_size_sum') };
}

before(async () => {
  dir = await tempDir();
  dataDir = path.join(dir, 'data');
  const models = path.join(dir, 'models');
  paths.cls = await writeTinyBert(models, 'text-classification');
  paths.emb = await writeTinyBert(models, 'feature-extraction');
  paths.ner = await writeTinyBert(models, 'token-classification');
  server = await startTestServer(dataDir);
  for (const [name, source] of Object.entries(paths)) await registerVersion(server.url, name, source);
  for (const name of Object.keys(paths)) await createEndpoint(name, name);
  for (const name of Object.keys(paths)) {
    const e = await waitSettledAt(server.url, name, 60_000);
    assert.equal(e.state.ready, 'READY', JSON.stringify(e.state));
  }
});

after(async () => {
  await server?.close();
  assert.deepEqual(await ferryChildren(dataDir), [], 'no replica outlives the server');
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('transformers flavor', () => {
  test('registration detects the flavor and the task, and derives the signature and an input example', async () => {
    const expected = {
      cls: [{ name: 'label', dtype: 'string', shape: [-1] }, { name: 'score', dtype: 'float32', shape: [-1] }],
      emb: [{ name: 'embeddings', dtype: 'float32', shape: [-1, TINY_BERT_HIDDEN] }],
      ner: [{ name: 'entities', dtype: 'json' }],
    };
    for (const [name, outputs] of Object.entries(expected)) {
      const r = await call('GET', `/api/2.0/mlflow/model-versions/get?name=${name}&version=1`);
      const v = r.json.model_version;
      assert.equal(v.flavor, 'transformers', name);
      assert.deepEqual(v.signature, { inputs: [{ name: 'text', dtype: 'string', shape: [-1] }], outputs }, name);
      assert.deepEqual(v.input_example, { inputs: ['Ferry serves models.', 'Alice lives in Paris.'] }, name);
    }
  });

  test('text-classification: labels and scores match the reference, in every MLflow format and OIP v2 BYTES', async () => {
    const want = tinyBertReference.textClassification(TEXTS);
    assert.deepEqual(new Set(want.label), new Set(['POSITIVE', 'NEGATIVE']), 'the fixture yields both labels');

    const cols = await invoke('cls', { inputs: TEXTS });
    assert.equal(cols.status, 200, cols.text);
    assert.deepEqual(cols.json.predictions.label, want.label);
    assertClose(cols.json.predictions.score, want.score, 'score');

    const records = (r: HttpResult): void => {
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json.predictions.map((p: { label: string }) => p.label), want.label);
      assertClose(r.json.predictions.map((p: { score: number }) => p.score), want.score, 'score');
    };
    records(await invoke('cls', { dataframe_split: { columns: ['text'], data: TEXTS.map((t) => [t]) } }));
    records(await invoke('cls', { dataframe_split: { columns: ['prompt'], data: TEXTS.map((t) => [t]) } }));
    records(await invoke('cls', { dataframe_records: TEXTS.map((text) => ({ text })) }));
    // instances / inputs answer one list per output (docs/protocols.md), whatever the rows look like.
    assert.deepEqual((await invoke('cls', { instances: TEXTS.map((text) => ({ text })) })).json.predictions.label, want.label);
    assert.deepEqual((await invoke('cls', { instances: TEXTS })).json.predictions.label, want.label);
    assert.deepEqual((await invoke('cls', { inputs: { text: TEXTS } })).json.predictions.label, want.label);

    const v2 = await call('POST', '/v2/models/cls/infer', { inputs: [{ name: 'text', datatype: 'BYTES', shape: [TEXTS.length], data: TEXTS }] });
    assert.equal(v2.status, 200, v2.text);
    const [label, score] = v2.json.outputs;
    assert.deepEqual({ ...label, data: undefined }, { name: 'label', datatype: 'BYTES', shape: [TEXTS.length], data: undefined });
    assert.deepEqual(label.data, want.label);
    assert.equal(score.datatype, 'FP32');
    assertClose(score.data, want.score, 'v2 score');

    const wrong = await invoke('cls', { inputs: [1, 2] });
    assert.equal(wrong.status, 400);
    assert.match(wrong.json.message, /a string for input 'text'/);
    const param = await invoke('cls', { inputs: TEXTS, params: { top_k: 3 } });
    assert.equal(param.status, 400);
    assert.match(param.json.message, /params\.top_k.*no params/);
  });

  test('feature-extraction: [n, 16] mean-pooled embeddings of L2 norm 1 that match the reference; normalize=false per request', async () => {
    const r = await invoke('emb', { inputs: TEXTS });
    assert.equal(r.status, 200, r.text);
    const rows: number[][] = r.json.predictions;
    assert.deepEqual([rows.length, rows[0]?.length], [TEXTS.length, TINY_BERT_HIDDEN]);
    const want = tinyBertReference.featureExtraction(TEXTS);
    rows.forEach((row, i) => {
      assert.ok(Math.abs(Math.hypot(...row) - 1) < 1e-5, `row ${i} has norm 1`);
      assertClose(row, want[i] ?? [], `embedding ${i}`);
    });
    const raw = await invoke('emb', { inputs: TEXTS, params: { normalize: false } });
    assert.equal(raw.status, 200, raw.text);
    const norms = raw.json.predictions.map((row: number[]) => Math.hypot(...row));
    assert.ok(norms.every((n: number) => Math.abs(n - 1) > 1e-3), `unnormalized norms ${norms.join(', ')}`);
    raw.json.predictions.forEach((row: number[], i: number) => assertClose(row.map((v) => v / (norms[i] as number)), want[i] ?? [], `direction ${i}`));
  });

  test('feature-extraction through /v1/embeddings with the official OpenAI Node SDK (openai 6, default base64 encoding)', async () => {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: ADMIN_TOKEN, maxRetries: 0 });
    const r = await client.embeddings.create({ model: 'emb', input: TEXTS });
    const want = tinyBertReference.featureExtraction(TEXTS);
    assert.deepEqual(r.data.map((d) => d.index), TEXTS.map((_, i) => i));
    r.data.forEach((d, i) => assertClose(d.embedding, want[i] ?? [], `embedding ${i}`));
    const floats = await call('POST', '/v1/embeddings', { model: 'emb', input: 'great', encoding_format: 'float' });
    assert.equal(floats.status, 200, floats.text);
    assertClose(floats.json.data[0].embedding, want[5] ?? [], 'float embedding');
    // A model that does not make embeddings has no /v1/embeddings: 404 in OpenAI's shape.
    const cls = await call('POST', '/v1/embeddings', { model: 'cls', input: 'great' });
    assert.equal(cls.status, 404, cls.text);
    assert.equal(cls.json.error.type, 'not_found_error');
  });

  test('token-classification: one entity list per text, matching the reference', async () => {
    const r = await invoke('ner', { inputs: TEXTS });
    assert.equal(r.status, 200, r.text);
    const got: Array<Array<{ entity: string; score: number; index: number; word: string }>> = r.json.predictions;
    const want = tinyBertReference.tokenClassification(TEXTS);
    assert.equal(got.length, TEXTS.length);
    assert.ok(want.some((e) => e.length > 0), 'the fixture finds entities');
    got.forEach((entities, i) => {
      const expected = want[i] ?? [];
      assert.deepEqual(entities.map(({ entity, index, word }) => ({ entity, index, word })), expected.map(({ entity, index, word }) => ({ entity, index, word })), `text ${i}`);
      assertClose(entities.map((e) => e.score), expected.map((e) => e.score), `scores ${i}`);
    });
    const grouped = await invoke('ner', { inputs: TEXTS, params: { aggregation_strategy: 'simple' } });
    assert.equal(grouped.status, 200, grouped.text);
    assert.ok(grouped.json.predictions.flat().every((e: Record<string, unknown>) => typeof e.entity_group === 'string' && e.entity === undefined));
    const v2 = await call('POST', '/v2/models/ner/infer', { inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: [TEXTS[2]] }] });
    assert.equal(v2.json.outputs[0].datatype, 'BYTES');
    assert.deepEqual(JSON.parse(v2.json.outputs[0].data[0]).map((e: { word: string }) => e.word), (want[2] ?? []).map((e) => e.word));
  });

  test('batching: a request of n texts is one padded model call, and concurrent requests answer what sequential ones do', async () => {
    const before = await modelCalls('emb');
    await invoke('emb', { inputs: TEXTS });
    const afterOne = await modelCalls('emb');
    assert.deepEqual({ calls: afterOne.calls - before.calls, rows: afterOne.rows - before.rows }, { calls: 1, rows: TEXTS.length });

    for (const endpoint of ['cls', 'emb', 'ner']) {
      const texts = [...TEXTS, ...TEXTS.map((t) => `${t} and a much longer tail of words to pad the others`)];
      const sequential: unknown[] = [];
      for (const text of texts) sequential.push((await invoke(endpoint, { inputs: [text] })).json.predictions);
      const concurrent = await Promise.all(texts.map(async (text) => (await invoke(endpoint, { inputs: [text] })).json.predictions));
      const tolerant = (v: unknown): unknown => JSON.parse(JSON.stringify(v, (_k, x: unknown) => (typeof x === 'number' ? Math.round(x * 1e4) / 1e4 : x)));
      assert.deepEqual(tolerant(concurrent), tolerant(sequential), endpoint);
    }
  });

  test('registration fails with a clear message when a required file is missing', async () => {
    const broken = path.join(dir, 'broken');
    const cases = [
      ['onnx/model.onnx', /Invalid ONNX model 'onnx\/model\.onnx': file not found/],
      ['tokenizer.json', /tokenizer\.json not found/],
      // config.json announces external weights (onnx/model.onnx_data) that the directory lacks.
      ['onnx/model.onnx_data', /onnx\/model\.onnx_data not found \(config\.json announces 1 external data file/],
    ] as const;
    for (const [file, message] of cases) {
      const modelDir = await writeTinyBert(path.join(broken, file.replace('/', '-')), 'text-classification');
      if (file.endsWith('_data')) await externalData(modelDir);
      else await fsp.rm(path.join(modelDir, file));
      await call('POST', '/api/2.0/mlflow/registered-models/create', { name: 'incomplete' });
      const r = await call('POST', '/api/2.0/mlflow/model-versions/create', { name: 'incomplete', source: modelDir });
      assert.equal(r.json.model_version.status, 'FAILED_REGISTRATION', file);
      assert.match(r.json.model_version.status_message, message);
    }
  });

  test('a file missing at load is UPDATE_FAILED naming it, never a download', async () => {
    const version = await registerVersion(server.url, 'cls', paths.cls);
    // The stored artifact loses a file after registration (a damaged artifact store).
    await fsp.rm(path.join(dataDir, 'artifacts', 'models', 'cls', version, 'tokenizer.json'));
    const r = await call('PUT', '/api/2.0/serving-endpoints/cls/config', { served_entities: [{ entity_name: 'cls', entity_version: version }] });
    assert.equal(r.status, 200, r.text);
    const e = await waitSettledAt(server.url, 'cls', 60_000);
    assert.equal(e.state.config_update, 'UPDATE_FAILED');
    assert.match(e.state.config_update_message, /tokenizer\.json not found/);
    assert.equal((await invoke('cls', { inputs: ['great'] })).status, 200, 'the old config keeps serving');
  });

  test('loading in this process opens no network connection, even for a missing file or a hub model id', async () => {
    const events: string[] = [];
    const onRequest = (msg: unknown): void => void events.push(`undici ${String((msg as { request?: { origin?: string } }).request?.origin)}`);
    const onSocket = (): void => void events.push('net socket');
    diagnostics.subscribe('undici:request:create', onRequest);
    diagnostics.subscribe('net.client.socket', onSocket);
    try {
      const modelDir = await writeTinyBert(path.join(dir, 'inproc'), 'feature-extraction');
      const flavor = await getFlavor('transformers');
      const opts = { modelFile: 'onnx/model.onnx', workloadType: 'CPU' as const, intraOpThreads: 1 };
      const model = await flavor.load(modelDir, opts);
      const out = await model.predict({ text: { dtype: 'string', shape: [1], data: ['great'] } });
      assert.deepEqual((out.embeddings as { shape: number[] }).shape, [1, TINY_BERT_HIDDEN]);
      await model.close();
      await fsp.rm(path.join(modelDir, 'tokenizer_config.json'));
      await rejectsWith(flavor.load(modelDir, opts), 'INVALID_PARAMETER_VALUE', /tokenizer_config\.json not found/);
      // The configuration load left in place holds for anything the library is asked: even a real
      // hub model id is looked for under the local model directory only.
      const { AutoConfig } = await import('@huggingface/transformers');
      await assert.rejects(AutoConfig.from_pretrained('Xenova/bert-base-uncased'), /not found locally at ".*Xenova\/bert-base-uncased\/config\.json"/);
    } finally {
      diagnostics.unsubscribe('undici:request:create', onRequest);
      diagnostics.unsubscribe('net.client.socket', onSocket);
    }
    assert.deepEqual(events, []);
  });

});
