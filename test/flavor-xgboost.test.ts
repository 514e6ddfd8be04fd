/**
 * The xgboost flavor end to end: models trained by python3-xgboost (1.7) are registered through
 * the real API (a single .ubj file, a ferry.json directory with a .json model), served on an
 * endpoint by real replicas and answer bit-identically to `Booster.predict`; a family endpoint
 * serves two XGBoost members and an ONNX member side by side. Answers are compared with strict
 * deepEqual: the same float32 value as Python printed, bit for bit. Skipped without python3-xgboost.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { familyFixture, FAMILY_FEATURES } from '../src/fixtures/index.js';
import { float32Tensor } from '../src/fixtures/fixture.js';
import type { FerryServer } from '../src/server/index.js';
import { ADMIN_TOKEN, FERRY_BIN, MLFLOW_PATH, pythonImports, replicaNodePid, replicaPids, request, startTestServer, SYSTEM_PYTHON, tempDir, waitSettled } from './support/index.js';

const python = SYSTEM_PYTHON;
const haveXgboost = pythonImports('xgboost');
/** The vendored MLflow (2.12), for directories saved by the real `mlflow.xgboost.save_model`. */

/**
 * Saves the regressor (reg.ubj) with mlflow.xgboost as a Booster (MLflow 2.12 writes model.xgb,
 * the legacy binary) and a scikit-learn XGBClassifier, both with signatures.
 */
const MLFLOW_SCRIPT = String.raw`
import os, sys
import numpy as np, xgboost as xgb, mlflow.xgboost
from mlflow.models import infer_signature
out = sys.argv[1]
reg = xgb.Booster()
reg.load_model(os.path.join(out, "reg.ubj"))
X = np.random.default_rng(3).normal(size=(50, 5)).astype(np.float32)
mlflow.xgboost.save_model(reg, os.path.join(out, "mlflow-booster"), signature=infer_signature(X, reg.predict(xgb.DMatrix(X))))
clf = xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(X, (X[:, 0] > 0).astype(int))
mlflow.xgboost.save_model(clf, os.path.join(out, "mlflow-classifier"), signature=infer_signature(X, clf.predict(X)))
`;

/** Trains a regressor (saved as reg.ubj, reg.json and the legacy binary reg.xgb) and a 3-class softprob model (cls/model.json + ferry.json); prints rows and predictions as float32 values. */
const SCRIPT = String.raw`
import json, os, sys
import numpy as np, xgboost as xgb
out = sys.argv[1]
rng = np.random.default_rng(3)
X = rng.normal(size=(300, 5)).astype(np.float32)
yr = X[:, 0] * 2 + X[:, 1] ** 2 - X[:, 4]
reg = xgb.train({"objective": "reg:squarederror", "max_depth": 4}, xgb.DMatrix(X, label=yr), num_boost_round=25)
for f in ("reg.ubj", "reg.json", "reg.xgb"):
    reg.save_model(os.path.join(out, f))
os.makedirs(os.path.join(out, "cls"))
cls = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3}, xgb.DMatrix(X, label=np.digitize(yr, [-1, 1])), num_boost_round=10)
cls.save_model(os.path.join(out, "cls", "model.json"))
json.dump({"flavor": "xgboost", "main": "model.json"}, open(os.path.join(out, "cls", "ferry.json"), "w"))
Xt = X[:8]
d = xgb.DMatrix(Xt)
print(json.dumps({"x": Xt.astype(float).tolist(), "reg": reg.predict(d).astype(float).tolist(), "cls": cls.predict(d).astype(float).tolist()}))
`;

interface Trained { x: number[][]; reg: number[]; cls: number[][] }

let dir: string;
let server: FerryServer;
let trained: Trained;

const call = (method: string, p: string, json?: unknown, model?: string) => request({
  url: server.url, method, path: p, ...(json === undefined ? {} : { json }), ...(model === undefined ? {} : { headers: { 'x-ferry-model': model } }),
});

async function register(name: string, source: string): Promise<any> {
  assert.equal((await call('POST', '/api/2.0/mlflow/registered-models/create', { name })).status, 200);
  const r = await call('POST', '/api/2.0/mlflow/model-versions/create', { name, source });
  assert.equal(r.status, 200, r.text);
  return r.json.model_version;
}

describe('xgboost flavor', { skip: haveXgboost ? false : 'python3-xgboost is not installed' }, () => {
  before(async () => {
    dir = await tempDir();
    trained = JSON.parse(execFileSync(python, ['-c', SCRIPT, dir], { encoding: 'utf8', timeout: 30_000 })) as Trained;
    // No warm pool: replicas are spawned with the xgboost flavor's own rights (no native addons).
    server = await startTestServer(path.join(dir, 'data'), { warmPoolSize: 0 });
  });

  after(async () => {
    await server?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test('a .ubj file and a ferry.json directory register READY as xgboost, with the signature read from the model', async () => {
    const reg = await register('xreg', path.join(dir, 'reg.ubj'));
    assert.equal(reg.status, 'READY', reg.status_message);
    assert.equal(reg.flavor, 'xgboost');
    assert.deepEqual(reg.signature.inputs, [{ name: 'input', dtype: 'float32', shape: [-1, 5] }]);
    assert.deepEqual(reg.signature.outputs, [{ name: 'predictions', dtype: 'float32', shape: [-1] }]);
    const cls = await register('xcls', path.join(dir, 'cls'));
    assert.equal(cls.status, 'READY', cls.status_message);
    assert.equal(cls.flavor, 'xgboost');
    assert.deepEqual(cls.signature.outputs, [{ name: 'predictions', dtype: 'float32', shape: [-1, 3] }]);
    // The other single files XGBoost writes: JSON (recognised by its content) and the legacy binary.
    for (const [name, file] of [['xjson', 'reg.json'], ['xlegacy', 'reg.xgb']] as const) {
      const v = await register(name, path.join(dir, file));
      assert.equal(v.status, 'READY', v.status_message);
      assert.equal(v.flavor, 'xgboost', name);
      assert.deepEqual(v.signature, reg.signature, name);
    }
    // ferry.json keys are checked: a typo fails registration naming it.
    await fsp.mkdir(path.join(dir, 'typo'));
    await fsp.copyFile(path.join(dir, 'reg.ubj'), path.join(dir, 'typo', 'model.ubj'));
    await fsp.writeFile(path.join(dir, 'typo', 'ferry.json'), JSON.stringify({ flavor: 'xgboost', mian: 'model.ubj' }));
    const typo = await register('xtypo', path.join(dir, 'typo'));
    assert.equal(typo.status, 'FAILED_REGISTRATION');
    assert.match(typo.status_message, /unknown key 'mian'/);
    // A model file the evaluator cannot run fails registration naming the file and the reason.
    await fsp.mkdir(path.join(dir, 'bad'));
    await fsp.writeFile(path.join(dir, 'bad', 'model.ubj'), '{i\x05hello}');
    const bad = await register('xbad', path.join(dir, 'bad'));
    assert.equal(bad.status, 'FAILED_REGISTRATION');
    assert.match(bad.status_message, /'model\.ubj' is not an XGBoost model/);
  });

  test('an endpoint serves both models, answers bit-identical to Booster.predict', async () => {
    for (const name of ['xreg', 'xcls']) {
      const r = await call('POST', '/api/2.0/serving-endpoints', { name, config: { served_entities: [{ entity_name: name, entity_version: '1' }] } });
      assert.equal(r.status, 200, r.text);
      const settled = await waitSettled(server.url, name, 40_000);
      assert.equal(settled.state.ready, 'READY', JSON.stringify(settled));
    }
    const reg = await call('POST', '/serving-endpoints/xreg/invocations', { inputs: trained.x });
    assert.equal(reg.status, 200, reg.text);
    assert.deepEqual(reg.json, { predictions: trained.reg }, 'regressor');
    const cls = await call('POST', '/serving-endpoints/xcls/invocations', { inputs: trained.x });
    assert.equal(cls.status, 200, cls.text);
    assert.deepEqual(cls.json, { predictions: trained.cls }, 'softprob');
    const v2 = await call('POST', '/v2/models/xreg/infer', { inputs: [{ name: 'input', shape: [8, 5], datatype: 'FP32', data: trained.x.flat() }] });
    assert.equal(v2.status, 200, v2.text);
    assert.deepEqual(v2.json.outputs[0].data, trained.reg, 'regressor, OIP v2');
    // The replica runs without the right to load native addons: the evaluator needs none.
    const [child] = await replicaPids(path.join(dir, 'data'), 'xreg');
    const pid = await replicaNodePid(child ?? 0);
    const argv = (await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    assert.ok(argv.includes('--experimental-permission') && !argv.includes('--allow-addons'), argv.join(' '));
    // Wrong width: a 400 naming the input, never a crash.
    const wide = await call('POST', '/serving-endpoints/xreg/invocations', { inputs: [[1, 2, 3]] });
    assert.equal(wide.status, 400, wide.text);
    assert.match(wide.text, /input/);
  });

  test('a family endpoint serves two XGBoost members and an ONNX member, each answering by X-Ferry-Model', async () => {
    assert.equal((await register('fam-cls', path.join(dir, 'cls'))).status, 'READY');
    // Bulk registration takes XGBoost files too: the file name says which flavor.
    const bulk = await call('POST', '/api/2.0/mlflow/model-versions/bulk-create', {
      models: [
        { name: 'fam-reg', file: 'model.ubj', content_base64: (await fsp.readFile(path.join(dir, 'reg.ubj'))).toString('base64') },
        { name: 'fam-onnx', content_base64: Buffer.from(familyFixture(0).build()).toString('base64') },
      ],
    });
    assert.equal(bulk.json.registered, 2, bulk.text);
    // An XGBoost file whose extension does not say so: registered, but not a member (replicas tell members apart by extension).
    await fsp.mkdir(path.join(dir, 'odd'));
    await fsp.copyFile(path.join(dir, 'reg.xgb'), path.join(dir, 'odd', 'model.bin'));
    await fsp.writeFile(path.join(dir, 'odd', 'ferry.json'), JSON.stringify({ flavor: 'xgboost', main: 'model.bin' }));
    assert.equal((await register('fam-odd', path.join(dir, 'odd'))).status, 'READY');
    const created = await call('POST', '/api/2.0/serving-endpoints', { name: 'fam', config: { served_entities: [{ name: 'family', model_family: { name_prefix: 'fam-', cache_size: '1MiB' } }] } });
    assert.equal(created.status, 200, created.text);
    const settled = await waitSettled(server.url, 'fam', 40_000);
    assert.equal(settled.state.ready, 'READY', JSON.stringify(settled));
    const reg = await call('POST', '/serving-endpoints/fam/invocations', { inputs: trained.x }, 'fam-reg');
    assert.equal(reg.status, 200, reg.text);
    assert.deepEqual(reg.json, { predictions: trained.reg }, 'fam-reg');
    const cls = await call('POST', '/serving-endpoints/fam/invocations', { inputs: trained.x }, 'fam-cls/1');
    assert.equal(cls.status, 200, cls.text);
    assert.deepEqual(cls.json, { predictions: trained.cls }, 'fam-cls');
    const row = [0.5, -1.25, 2, 0.75];
    const want = (familyFixture(0).reference({ x: float32Tensor(new Float32Array(row), 1, FAMILY_FEATURES) }).y as { data: Float32Array }).data[0];
    const onnx = await call('POST', '/serving-endpoints/fam/invocations', { inputs: [row] }, 'fam-onnx');
    assert.equal(onnx.status, 200, onnx.text);
    assert.deepEqual(onnx.json, { predictions: [[want]] });
    const odd = await call('POST', '/serving-endpoints/fam/invocations', { inputs: trained.x }, 'fam-odd');
    assert.equal(odd.status, 404, odd.text);
    assert.match(odd.json.message, /fam-odd.*xgboost model in 'model\.bin', whose extension says otherwise/);
  });

  test('ferry models import registers <name>.ubj and <name>.xgb files as XGBoost models, next to <name>.onnx', async () => {
    const models = path.join(dir, 'import');
    await fsp.mkdir(models);
    await fsp.copyFile(path.join(dir, 'reg.ubj'), path.join(models, 'imp-a.ubj'));
    await fsp.copyFile(path.join(dir, 'reg.xgb'), path.join(models, 'imp-b.xgb'));
    await fsp.writeFile(path.join(models, 'imp-c.onnx'), familyFixture(1).build());
    await fsp.writeFile(path.join(models, 'notes.json'), '{}');
    // Asynchronously: the server answering the CLI runs in this process.
    const { stdout } = await promisify(execFile)(process.execPath, [FERRY_BIN, 'models', 'import', models, '--json'], {
      encoding: 'utf8', timeout: 30_000, env: { PATH: process.env.PATH ?? '', FERRY_URL: server.url, FERRY_TOKEN: ADMIN_TOKEN },
    });
    const out = JSON.parse(stdout) as { registered: number; failed: number; results: Array<{ name: string }> };
    assert.deepEqual([out.registered, out.failed, out.results.map((r) => r.name)], [3, 0, ['imp-a', 'imp-b', 'imp-c']]);
    for (const [name, flavor] of [['imp-a', 'xgboost'], ['imp-b', 'xgboost'], ['imp-c', 'onnx']] as const) {
      const v = await call('GET', `/api/2.0/mlflow/model-versions/get?name=${name}&version=1`);
      assert.equal(v.json.model_version.flavor, flavor, name);
    }
  });

  test('an mlflow.xgboost directory registers as python and is a family member evaluated without Python; a classifier is not', {
    skip: fs.existsSync(path.join(MLFLOW_PATH, 'mlflow', '__init__.py')) ? false : `no MLflow at ${MLFLOW_PATH} (set FERRY_MLFLOW_PATH)`,
  }, async () => {
    execFileSync(python, ['-c', MLFLOW_SCRIPT, dir], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, PYTHONPATH: MLFLOW_PATH }, stdio: ['ignore', 'pipe', 'pipe'] });
    const booster = await register('fam-mlflow', path.join(dir, 'mlflow-booster'));
    assert.equal(booster.status, 'READY', booster.status_message);
    // Still a python version (a single-model endpoint serves it through Python, as before) ...
    assert.equal(booster.flavor, 'python');
    const classifier = await register('fam-mlflow-clf', path.join(dir, 'mlflow-classifier'));
    assert.equal(classifier.status, 'READY', classifier.status_message);
    assert.equal(classifier.flavor, 'python');
    // ... and a family member, compiled by the XGBoost evaluator from model.xgb: Booster.predict, bit for bit.
    const r = await call('POST', '/serving-endpoints/fam/invocations', { inputs: trained.x }, 'fam-mlflow');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { predictions: trained.reg });
    // XGBClassifier.predict answers labels where the booster answers probabilities: left to Python.
    const clf = await call('POST', '/serving-endpoints/fam/invocations', { inputs: trained.x }, 'fam-mlflow-clf');
    assert.equal(clf.status, 404, clf.text);
    assert.match(clf.json.message, /fam-mlflow-clf.*is a python model \(families serve ONNX and XGBoost models, and MLflow models saved by mlflow\.xgboost from a Booster or an XGBRegressor\)/);
  });
});
