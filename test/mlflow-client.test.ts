/**
 * The MLflow user's path with the real MLflow 2.12 client, unchanged and with its defaults,
 * against a real Ferry server: `test/support/mlflow_client_flow.py` runs once (as a user who is
 * not an admin) and does set_experiment → start_run → log_params/metrics → sklearn.log_model
 * (registered_model_name) → set_registered_model_alias, loads `models:/<name>@champion` with
 * mlflow.pyfunc through Ferry for the reference predictions, and calls every MlflowClient
 * tracking and registry method a user calls; it prints one JSON object that the tests below
 * assert on. Then `ferry serve models:/<name>@champion` (the CLI) serves the model, and the
 * endpoint's answers equal MLflow's. Also: experiment permissions, a rename refused while the
 * model is served, and an endpoint that follows its alias.
 *
 * MLflow comes from FERRY_MLFLOW_PATH, default ../shared/vendor/mlflow next to the repository;
 * the interpreter is /usr/bin/python3 with Debian's numpy, pandas and scikit-learn.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import type { FerryServer } from '../src/server/index.js';
import { ADMIN_TOKEN, FERRY_BIN, ferryChildren, mlflowVenv, request, ROOT, startTestServer, tempDir, waitFor, waitSettled, type HttpResult } from './support/index.js';

const run = promisify(execFile);
const FLOW_SCRIPT = path.join(ROOT, 'test', 'support', 'mlflow_client_flow.py');
const MODEL = 'churn';
const ROWS = [[1, 0.5], [2.5, -1], [0, 0], [7, 3]];

let dir: string;
let dataDir: string;
let venvPython: string;
let server: FerryServer;
let alice: string;
let bob: string;
/** The Python flow's results, by step name. */
let flow: Record<string, { ok: boolean; value?: any; error?: string; trace?: string }>;
let flowSeconds: number;

const call = (method: string, p: string, json?: unknown, token: string = ADMIN_TOKEN): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, token, ...(json === undefined ? {} : { json }) });

async function principalWithToken(name: string): Promise<string> {
  assert.equal((await call('POST', '/api/2.0/principals', { name, type: 'USER' })).status, 200);
  const t = await call('POST', '/api/2.0/token-management/on-behalf-of/tokens', { principal: name, comment: 'test' });
  assert.equal(t.status, 200, t.text);
  return t.json.token_value as string;
}

/** The value of one flow step, failing the test with the step's error when it failed. */
function value(step: string): any {
  const r = flow[step];
  assert.ok(r !== undefined, `step ${step} did not run`);
  assert.ok(r.ok, `${step}: ${r.error ?? ''}\n${r.trace ?? ''}`);
  return r.value;
}

before(async () => {
  dir = await tempDir();
  dataDir = path.join(dir, 'data');
  venvPython = await mlflowVenv(dir);
  server = await startTestServer(dataDir, { python: venvPython, warmPoolSize: 0 });
  alice = await principalWithToken('alice');
  bob = await principalWithToken('bob');
  const rows = path.join(dir, 'rows.json');
  await fsp.writeFile(rows, JSON.stringify(ROWS));
  const started = Date.now();
  const { stdout } = await run(venvPython, [FLOW_SCRIPT, MODEL, rows], {
    maxBuffer: 16 << 20, timeout: 240_000, cwd: dir,
    env: { ...process.env, MLFLOW_TRACKING_URI: server.url, MLFLOW_TRACKING_TOKEN: alice, HOME: dir, GIT_PYTHON_REFRESH: 'quiet' },
  });
  flowSeconds = (Date.now() - started) / 1000;
  flow = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as typeof flow;
});

after(async () => {
  await server?.close();
  if (dataDir !== undefined) assert.deepEqual(await ferryChildren(dataDir), [], 'no replica outlives the server');
  if (dir !== undefined) await fsp.rm(dir, { recursive: true, force: true });
});

describe('the real MLflow client against Ferry', () => {
  test('set_experiment → start_run → log → sklearn.log_model(registered_model_name) → alias → pyfunc.load_model through Ferry', () => {
    process.stderr.write(`# the Python flow took ${flowSeconds.toFixed(1)} s\n`);
    assert.match(String(value('set_experiment')), /^\d+$/);
    for (const s of ['log_param', 'log_params', 'log_metric', 'log_metrics', 'set_tags', 'log_text', 'log_input', 'set_registered_model_alias']) value(s);
    const main = (value('search_runs') as string[])[0];
    assert.equal(value('log_model'), `runs:/${main}/model`);
    assert.match(value('run_artifact_uri'), /^mlflow-artifacts:\/_experiments\/\d+\/[0-9a-f]{32}\/artifacts$/);
    const reference = value('reference') as number[];
    assert.equal(reference.length, ROWS.length);
    assert.deepEqual(value('reference_by_version'), reference);
    assert.ok((value('download_artifacts_models_uri') as string[]).includes('MLmodel'));
    const [source, runId] = value('model_version_source') as [string, string];
    assert.match(source, /^mlflow-artifacts:\/_experiments\/\d+\/[0-9a-f]{32}\/artifacts\/model$/, 'a source the caller can read back');
    assert.equal(runId, main);
  });

  test('tracking methods: experiments, runs, params, metrics, tags, batches, history, search, delete/restore, artifacts', () => {
    assert.equal(value('get_experiment'), `${MODEL}-exp`);
    assert.equal(value('get_experiment_by_name'), value('set_experiment'));
    assert.deepEqual(value('search_experiments'), ['Default', `${MODEL}-exp`]);
    assert.deepEqual(value('search_experiments_filter'), [`${MODEL}-side`, `${MODEL}-exp`]);
    assert.deepEqual(value('set_experiment_tag'), { k: 'w' });
    assert.equal(value('rename_experiment'), `${MODEL}-side2`);
    assert.equal(value('delete_experiment'), 'deleted');
    assert.deepEqual(value('search_experiments_deleted'), [`${MODEL}-side2`]);
    assert.equal(value('restore_experiment'), 'active');
    assert.deepEqual(value('get_run'), {
      params: { fit_intercept: 'True', alpha: '0.5', solver: 'lsq' }, metrics: { rmse: 0.6, r2: 0.97, mae: 0.3 },
      tags: { team: 'churn', stage: 'dev' }, status: 'FINISHED', has_logged_model: true, inputs: 1,
    });
    assert.deepEqual(value('get_metric_history'), [[0, 0.9], [1, 0.4], [2, 0.6]]);
    const [main] = value('search_runs') as string[];
    assert.deepEqual(value('search_runs_filter'), [main]);
    assert.deepEqual(value('search_runs_no_match'), []);
    assert.equal(value('mlflow_search_runs'), 1, 'mlflow.search_runs (a pandas frame of the runs)');
    assert.deepEqual(value('log_batch'), [{ m: 1.5 }, { p: '1' }, 'x']);
    assert.match(flow.log_param_conflict?.error ?? '', /INVALID_PARAMETER_VALUE/, 'params are immutable');
    assert.equal(value('set_tag'), 'y');
    assert.equal(value('delete_tag'), false);
    assert.deepEqual(value('update_run'), ['FAILED', 'renamed']);
    assert.equal(value('set_terminated'), 'FINISHED');
    assert.equal(value('delete_run'), 'deleted');
    assert.deepEqual(value('search_runs_after_delete'), [main], 'a deleted run is not listed');
    assert.equal(value('restore_run'), 'active');
    value('log_artifact');
    assert.deepEqual(value('list_artifacts'), [['model', true], ['notes', true]]);
    assert.ok((value('list_artifacts_model') as string[]).includes('model/MLmodel'), 'listings relative to the listed directory');
    assert.ok((value('download_artifacts_run') as string[]).includes('MLmodel'));
    assert.equal(value('load_text'), 'hello');
    assert.equal(value('download_other_run'), 'extra');
  });

  test('registry methods with their defaults: search limits and order, runs:/ sources, stages, rename, aliases, deletes', () => {
    assert.deepEqual(value('get_registered_model'), [MODEL, { champion: '1' }]);
    assert.ok((value('search_registered_models') as string[]).includes(MODEL));
    assert.ok((value('search_model_versions') as Array<[string, string]>).some(([n, v]) => n === MODEL && v === '1'), 'max_results=10000 by default');
    assert.deepEqual(value('search_model_versions_filter'), ['1']);
    assert.equal(value('get_model_version_by_alias'), '1');
    assert.equal(value('get_model_version_download_uri'), `mlflow-artifacts:/_models/${MODEL}/1`);
    const main = (value('search_runs') as string[])[0];
    assert.deepEqual(value('register_model_runs_uri'), ['1', main, 'READY']);
    assert.deepEqual(value('create_model_version'), ['2', main]);
    assert.equal(value('create_registered_model'), `${MODEL}-c`);
    assert.equal(value('update_registered_model'), 'new');
    assert.deepEqual(value('set_registered_model_tag'), { k: 'v' });
    assert.deepEqual(value('delete_registered_model_tag'), {});
    assert.equal(value('update_model_version'), 'vd');
    assert.deepEqual(value('set_model_version_tag'), { k: 'v' });
    assert.deepEqual(value('delete_model_version_tag'), {});
    assert.equal(value('transition_model_version_stage'), 'Production');
    assert.deepEqual(value('transition_archive_existing'), ['Archived', 'Production']);
    assert.deepEqual(value('get_latest_versions'), [['1', 'Archived'], ['2', 'Production']]);
    assert.deepEqual(value('get_latest_versions_stage'), ['1']);
    assert.deepEqual(value('search_registered_models_order'), [`${MODEL}-c`, `${MODEL}-b`, MODEL]);
    assert.deepEqual(value('rename_registered_model'), [`${MODEL}-renamed`, { best: '2' }]);
    assert.deepEqual(value('get_after_rename'), ['2', main]);
    assert.deepEqual(value('load_after_rename'), value('reference'));
    assert.deepEqual(value('delete_registered_model_alias'), {});
    assert.deepEqual(value('delete_model_version'), ['2']);
    assert.deepEqual(value('delete_registered_model'), []);
  });

  test('ferry serve models:/name@champion (the CLI) answers what mlflow.pyfunc predicts', async () => {
    const { stdout } = await run(process.execPath, [FERRY_BIN, 'serve', `models:/${MODEL}@champion`, '--json'], {
      timeout: 150_000, env: { ...process.env, FERRY_URL: server.url, FERRY_TOKEN: alice },
    });
    const served = JSON.parse(stdout) as { endpoint: { name: string; state: { ready: string } } };
    assert.equal(served.endpoint.state.ready, 'READY');
    const r = await call('POST', `/serving-endpoints/${served.endpoint.name}/invocations`, { dataframe_split: { columns: ['a', 'b'], data: ROWS } }, alice);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.predictions, value('reference'));
  });

  test('renaming a served model is refused, naming the endpoints', async () => {
    const r = await call('POST', '/api/2.0/mlflow/registered-models/rename', { name: MODEL, new_name: 'elsewhere' }, alice);
    assert.equal(r.status, 409, r.text);
    assert.equal(r.json.error_code, 'RESOURCE_CONFLICT');
    assert.match(r.json.message, new RegExp(`endpoint\\(s\\) '${MODEL}'`));
  });

  test('an endpoint with follow_alias rolls forward when its alias moves; one without stays', async () => {
    const numeric = await call('POST', '/api/2.0/serving-endpoints', { name: 'bad-follow', config: { served_entities: [{ entity_name: MODEL, entity_version: '1', follow_alias: true }] } }, alice);
    assert.equal(numeric.status, 400, numeric.text);
    assert.match(numeric.json.message, /served_entities\[0\]\.follow_alias/);
    const created = await call('POST', '/api/2.0/serving-endpoints', {
      name: 'follower', config: { served_entities: [{ entity_name: MODEL, entity_version: 'champion', follow_alias: true }] },
    }, alice);
    assert.equal(created.status, 200, created.text);
    assert.equal((await waitSettled(server.url, 'follower', 120_000)).config.served_entities[0].entity_version, '1');
    const main = (value('search_runs') as string[])[0];
    const v2 = await call('POST', '/api/2.0/mlflow/model-versions/create', { name: MODEL, source: `runs:/${main}/model` }, alice);
    assert.equal(v2.json.model_version.status, 'READY', v2.text);
    assert.equal((await call('POST', '/api/2.0/mlflow/registered-models/alias', { name: MODEL, alias: 'champion', version: '2' }, alice)).status, 200);
    const moved = await waitFor('the follower to serve version 2', async () => {
      const e = await waitSettled(server.url, 'follower', 120_000);
      return e.config.served_entities[0].entity_version === '2' ? e : undefined;
    }, 150_000);
    assert.deepEqual(
      [moved.state.config_update, moved.config.served_entities[0].name, moved.config.served_entities[0].entity_alias, moved.config.served_entities[0].follow_alias],
      ['NOT_UPDATING', `${MODEL}-2`, 'champion', true],
    );
    assert.deepEqual(moved.config.traffic_config.routes, [{ served_entity_name: `${MODEL}-2`, served_model_name: `${MODEL}-2`, traffic_percentage: 100 }]);
    const r = await call('POST', '/serving-endpoints/follower/invocations', { dataframe_split: { columns: ['a', 'b'], data: ROWS } }, alice);
    assert.deepEqual(r.json.predictions, value('reference'), 'version 2 is the same model');
    const still = await call('GET', `/api/2.0/serving-endpoints/${MODEL}`);
    assert.equal(still.json.config.served_entities[0].entity_version, '1', 'the CLI endpoint (no follow_alias) stays on version 1');
  });

  test('experiments carry permissions: the creator manages, others need a grant, admins see all', async () => {
    const exp = String(value('set_experiment'));
    const main = (value('search_runs') as string[])[0];
    const denied = await call('GET', `/api/2.0/mlflow/experiments/get?experiment_id=${exp}`, undefined, bob);
    assert.equal(denied.status, 403, denied.text);
    assert.match(denied.json.message, new RegExp(`'bob' does not have CAN_READ on experiment '${exp}'`));
    assert.equal((await call('GET', `/api/2.0/mlflow/runs/get?run_id=${main}`, undefined, bob)).status, 403);
    assert.equal((await call('GET', `/api/2.0/mlflow-artifacts/artifacts/_experiments/${exp}/${main}/artifacts/model/MLmodel`, undefined, bob)).status, 403);
    const seen = await call('POST', '/api/2.0/mlflow/experiments/search', {}, bob);
    assert.deepEqual(seen.json.experiments.map((e: { name: string }) => e.name), ['Default'], 'search lists only what bob may read');
    const grant = await call('PATCH', `/api/2.0/permissions/experiments/${exp}`, { access_control_list: [{ user_name: 'bob', permission_level: 'CAN_READ' }] }, alice);
    assert.equal(grant.status, 200, grant.text);
    assert.equal((await call('GET', `/api/2.0/mlflow/runs/get?run_id=${main}`, undefined, bob)).status, 200);
    const write = await call('POST', '/api/2.0/mlflow/runs/set-tag', { run_id: main, key: 'k', value: 'v' }, bob);
    assert.equal(write.status, 403, 'CAN_READ does not log');
    assert.equal((await call('POST', '/api/2.0/mlflow/experiments/delete', { experiment_id: exp }, bob)).status, 403);
    assert.equal((await call('GET', `/api/2.0/mlflow/experiments/get?experiment_id=${exp}`)).status, 200, 'admins read every experiment');
    const audit = await call('GET', '/api/2.0/audit-log?principal=alice&max_results=500');
    assert.ok(audit.json.entries.some((e: { action: string }) => e.action === 'POST /api/2.0/mlflow/runs/log-batch'), 'tracking changes are audited');
  });

  test('MLflow REST errors: unknown ids, bad filters, NaN metrics, artifact_location', async () => {
    const missingRun = await call('GET', `/api/2.0/mlflow/runs/get?run_id=${'f'.repeat(32)}`);
    assert.deepEqual([missingRun.status, missingRun.json.error_code], [404, 'RESOURCE_DOES_NOT_EXIST']);
    const badFilter = await call('POST', '/api/2.0/mlflow/runs/search', { experiment_ids: ['0'], filter: 'metrics.x ~ 3' });
    assert.deepEqual([badFilter.status, badFilter.json.error_code], [400, 'INVALID_PARAMETER_VALUE']);
    assert.match(badFilter.json.message, /metrics\.x ~ 3/);
    const r = await call('POST', '/api/2.0/mlflow/runs/create', { experiment_id: '0' });
    assert.equal(r.status, 200, r.text);
    const nan = await call('POST', '/api/2.0/mlflow/runs/log-metric', { run_id: r.json.run.info.run_id, key: 'm', value: 'NaN', timestamp: 1 });
    assert.deepEqual([nan.status, nan.json.error_code], [400, 'INVALID_PARAMETER_VALUE']);
    assert.match(nan.json.message, /value/);
    const loc = await call('POST', '/api/2.0/mlflow/experiments/create', { name: 'elsewhere', artifact_location: 's3://bucket/x' });
    assert.deepEqual([loc.status, loc.json.error_code], [400, 'INVALID_PARAMETER_VALUE']);
    assert.match(loc.json.message, /s3:\/\/bucket\/x.*'artifact_location'/);
    const dup = await call('POST', '/api/2.0/mlflow/experiments/create', { name: `${MODEL}-exp` });
    assert.deepEqual([dup.status, dup.json.error_code], [409, 'RESOURCE_ALREADY_EXISTS']);
  });
});
