/**
 * Python environments (`pythonEnvManager: "virtualenv"`): a venv per distinct requirements, built
 * once before the first replica (here offline: `--system-site-packages` and `pip install
 * --no-index` of requirements Debian's packages satisfy), reused by another version with the same
 * requirements, and a failed build (a requirement pip cannot find) ending the update UPDATE_FAILED
 * with pip's error while the old config keeps serving; the build log is kept. A python_env.yaml
 * whose Python major.minor is not the server's python's fails the build likewise, naming both.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import type { FerryServer } from '../src/server/index.js';
import { ferryChildren, registerVersion, request, startTestServer, tempDir, waitSettled, type HttpResult } from './support/index.js';

const run = promisify(execFile);
const PYTHON = '/usr/bin/python3';

/** A scikit-learn LinearRegression (y = 2a + 3b + 1) pickled, with an MLmodel as mlflow.sklearn writes it. */
const SAVE = `
import pickle, sys, numpy as np, pandas as pd
from sklearn.linear_model import LinearRegression
x = pd.DataFrame({"a": [0.0, 1, 2, 3], "b": [1.0, 0, 2, 5]})
pickle.dump(LinearRegression().fit(x, 2 * x.a + 3 * x.b + 1), open(sys.argv[1], "wb"))
`;
const MLMODEL = `flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.pkl
    env:
      virtualenv: python_env.yaml
  sklearn:
    pickled_model: model.pkl
    serialization_format: pickle
signature:
  inputs: '[{"type": "double", "name": "a"}, {"type": "double", "name": "b"}]'
  outputs: '[{"type": "double"}]'
`;

let dir: string;
let dataDir: string;
let server: FerryServer;
const call = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });

async function model(name: string, requirements: string, python = '3.11.2'): Promise<string> {
  const d = path.join(dir, 'models', name);
  await fsp.mkdir(d, { recursive: true });
  await run(PYTHON, ['-c', SAVE, path.join(d, 'model.pkl')]);
  await fsp.writeFile(path.join(d, 'MLmodel'), MLMODEL);
  await fsp.writeFile(path.join(d, 'python_env.yaml'), `python: ${python}\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n`);
  await fsp.writeFile(path.join(d, 'requirements.txt'), requirements);
  return d;
}

async function envDirs(): Promise<string[]> {
  const names = await fsp.readdir(path.join(dataDir, 'runtime', 'python-envs')).catch(() => [] as string[]);
  return names.filter((n) => !n.endsWith('.log') && !n.startsWith('.'));
}

before(async () => {
  dir = await tempDir();
  dataDir = path.join(dir, 'data');
  server = await startTestServer(dataDir, { python: PYTHON, pythonEnvManager: 'virtualenv', pythonPipArgs: ['--no-index'], warmPoolSize: 0 });
});

after(async () => {
  await server?.close();
  assert.deepEqual(await ferryChildren(dataDir), [], 'no replica outlives the server');
  await fsp.rm(dir, { recursive: true, force: true });
});

test('a venv is built once per requirements, reused, and a failed build keeps the old config serving', async () => {
  const body = { dataframe_split: { columns: ['a', 'b'], data: [[1, 1], [2, 0]] } };
  // y = 2a + 3b + 1, fitted exactly (up to rounding).
  const close = (got: number[], want: number[]): void => got.forEach((g, i) => assert.ok(Math.abs(g - want[i]!) < 1e-9, `${g} vs ${want[i]}`));

  await registerVersion(server.url, 'envm', await model('v1', 'scikit-learn\nnumpy\n'));
  const created = await call('POST', '/api/2.0/serving-endpoints', { name: 'envm', config: { served_entities: [{ entity_name: 'envm', entity_version: '1' }] } });
  assert.equal(created.status, 200, created.text);
  const e = await waitSettled(server.url, 'envm', 180_000);
  assert.equal(e.state.ready, 'READY', JSON.stringify(e.state));
  close((await call('POST', '/serving-endpoints/envm/invocations', body)).json.predictions, [6, 5]);
  const [env] = await envDirs();
  assert.ok(env !== undefined, 'a venv was built');
  assert.match(await fsp.readFile(path.join(dataDir, 'runtime', 'python-envs', `${env}.log`), 'utf8'), /Requirement already satisfied: scikit-learn[\s\S]*environment ready/);

  // Same requirements, another version and endpoint: the same venv.
  await registerVersion(server.url, 'envm', await model('v2', 'scikit-learn\nnumpy\n'));
  await call('POST', '/api/2.0/serving-endpoints', { name: 'envm2', config: { served_entities: [{ entity_name: 'envm', entity_version: '2' }] } });
  assert.equal((await waitSettled(server.url, 'envm2', 180_000)).state.ready, 'READY');
  assert.deepEqual(await envDirs(), [env]);

  // A requirement pip cannot satisfy: UPDATE_FAILED naming pip's error; version 1 keeps serving.
  await registerVersion(server.url, 'envm', await model('v3', 'ferry-no-such-package==1.0\n'));
  await call('PUT', '/api/2.0/serving-endpoints/envm/config', { served_entities: [{ entity_name: 'envm', entity_version: '3' }] });
  const failed = await waitSettled(server.url, 'envm', 180_000);
  assert.equal(failed.state.config_update, 'UPDATE_FAILED', JSON.stringify(failed.state));
  assert.match(JSON.stringify(failed.state), /Python environment failed: ERROR: (Could not find a version|No matching distribution)[^"]*ferry-no-such-package/);
  close((await call('POST', '/serving-endpoints/envm/invocations', body)).json.predictions, [6, 5]);
  assert.equal((await envDirs()).length, 1, 'the failed build left no venv');
  const logs = (await fsp.readdir(path.join(dataDir, 'runtime', 'python-envs'))).filter((n) => n.endsWith('.log'));
  assert.equal(logs.length, 2);
  // Databricks' build-logs route, for the failed entity and the serving one.
  const failedLog = await call('GET', '/api/2.0/serving-endpoints/envm/served-models/envm-3/build-logs');
  assert.equal(failedLog.status, 200, failedLog.text);
  assert.match(failedLog.json.logs, /ERROR: [^\n]*ferry-no-such-package[\s\S]*environment build failed/);
  assert.match((await call('GET', '/api/2.0/serving-endpoints/envm/served-models/envm-1/build-logs')).json.logs, /environment ready/);
  assert.equal((await call('GET', '/api/2.0/serving-endpoints/envm/served-models/nope/build-logs')).status, 404);

  // python_env.yaml asks for another major.minor than the server's python: the build fails naming both.
  await registerVersion(server.url, 'envm', await model('v4', 'scikit-learn\n', '3.8.10'));
  await call('PUT', '/api/2.0/serving-endpoints/envm/config', { served_entities: [{ entity_name: 'envm', entity_version: '4' }] });
  const mismatch = await waitSettled(server.url, 'envm', 180_000);
  assert.equal(mismatch.state.config_update, 'UPDATE_FAILED', JSON.stringify(mismatch.state));
  assert.match(JSON.stringify(mismatch.state), /asks for Python 3\.8\.10 but the server's python \(\/usr\/bin\/python3\) is Python 3\.11\.\d+/);
  assert.match((await call('GET', '/api/2.0/serving-endpoints/envm/served-models/envm-4/build-logs')).json.logs, /environment build failed: python_env.yaml asks for Python 3\.8\.10/);
  close((await call('POST', '/serving-endpoints/envm/invocations', body)).json.predictions, [6, 5]);
});
