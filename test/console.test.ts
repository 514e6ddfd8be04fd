/**
 * The web console end to end, in a real headless Chromium (playwright-core driving Debian's
 * `chromium`) against a real server: sign in, upload and register a model, Serve it in one click,
 * watch it turn ready, query it, add a second version and change the traffic split, watch the
 * charts, and see a failed registration explained. Screenshots of each page go to
 * test-artifacts/console/. Skipped, saying why, where no chromium binary exists.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
import type { FerryServer } from '../src/server/index.js';
import { writeFixtures } from '../src/fixtures/index.js';
import { ADMIN_TOKEN, request, ROOT, startTestServer, tempDir, waitFor } from './support/index.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SHOTS = path.join(ROOT, 'test-artifacts', 'console');
const skip = fs.existsSync(CHROMIUM) ? false : `no chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`;

test('console: sign in, register, Serve, query, split traffic, charts, a failed version', { skip, timeout: 120_000 }, async () => {
  const started = Date.now();
  assert.ok(fs.existsSync(path.join(ROOT, 'ui', 'dist', 'index.html')), 'the console is not built: run npm run build');
  const dir = await tempDir();
  const fx = await writeFixtures(path.join(dir, 'fixtures'));
  const broken = path.join(dir, 'broken.onnx');
  await fsp.writeFile(broken, 'this is not an ONNX model\n');
  await fsp.mkdir(SHOTS, { recursive: true });
  let server: FerryServer | undefined;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const shots: string[] = [];
  try {
    server = await startTestServer(path.join(dir, 'data'));
    const url = server.url;
    const page = await browser.newPage({ viewport: { width: 1366, height: 860 } });
    // Anything the page logs as an error fails the test (CSP violations, script errors), except
    // the browser's note on API answers the steps below cause on purpose: 401 (wrong token), 404
    // (routes this server lacks: metrics, inference table), 409 (the model exists already), 400
    // (a request the model refuses).
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (400|401|404|409)/.test(m.text())) problems.push(`console: ${m.text()}`);
    });
    const shot = async (name: string): Promise<void> => {
      const file = path.join(SHOTS, `${name}.png`);
      await page.screenshot({ path: file, fullPage: true });
      shots.push(file);
    };

    // Sign in: a wrong token is refused with the API's message, the admin token works.
    await page.goto(`${url}/`);
    await page.getByLabel('Token').fill('ferry_wrong');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'UNAUTHENTICATED' }).waitFor();
    await shot('signin');
    await page.getByLabel('Token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('Signed in as').waitFor();

    // Register by upload: lands on the model page with version 1 READY and its signature.
    const register = async (name: string, file: string): Promise<void> => {
      await page.goto(`${url}/#/models`);
      await page.getByLabel('Model name').fill(name);
      await page.getByLabel('Model file (.onnx)').setInputFiles(file);
      await page.getByRole('button', { name: 'Register' }).click();
      await page.waitForURL(`**/#/models/${name}`);
    };
    await register('iris', fx.irisClassifier);
    const v1 = page.locator('section.version[data-version="1"]');
    await v1.locator('[data-state="READY"]').waitFor();
    assert.match(await v1.locator('table.signature').first().innerText(), /float32/);

    // Serve in one click: the endpoint page, which turns ready without a reload.
    await v1.getByRole('button', { name: 'Serve' }).click();
    await page.waitForURL('**/#/endpoints/iris');
    await page.locator('h1 [data-state="ready"]').waitFor({ timeout: 30_000 });

    // Query: prefilled from the version's signature; the page shows status, latency and the prediction.
    const body = page.getByLabel(/^Request/);
    await waitFor('the Query panel prefilled', async () => ((await body.inputValue()).includes('inputs') ? true : undefined));
    await page.getByRole('button', { name: 'Send' }).click();
    await page.locator('[data-status="200"]').waitFor();
    const shown = JSON.parse(await page.locator('pre.response').innerText()) as unknown;
    const direct = await request({ url, path: '/serving-endpoints/iris/invocations', json: JSON.parse(await body.inputValue()) });
    assert.equal(direct.status, 200);
    assert.deepEqual(shown, direct.json, 'the panel shows the prediction the API gives');
    assert.match(JSON.stringify(shown), /setosa/);
    assert.match(await page.locator('[data-latency]').innerText(), /ms|s$/);
    // A request the model refuses: its 400 and message, not a stack trace.
    await body.fill('{"inputs": [[1, 2]]}');
    await body.press('Control+Enter');
    await page.locator('[data-status="400"]').waitFor();
    assert.match(await page.locator('pre.response').innerText(), /"error_code": "INVALID_PARAMETER_VALUE"/);

    // Charts: with the metrics series route, they move after requests; without it, "no data yet".
    const metrics = page.getByRole('region', { name: 'Metrics (last 15 min)' });
    const series = await request({ url, path: '/api/2.0/serving-endpoints/iris/metrics/series?window=15m' });
    if (series.status === 404 && series.json?.error_code === 'ENDPOINT_NOT_FOUND') {
      await metrics.getByText('No data yet.').waitFor();
      process.stdout.write('console: the metrics series route is not on this branch: checked the "No data yet." state, then the charts on a stubbed answer\n');
      // The charts themselves (uPlot under the page's CSP): the browser gets answers in the
      // route's documented shape, one more request per second on each poll.
      let polls = 0;
      await page.route('**/metrics/series?*', (route) => {
        polls++;
        const now = Date.now();
        const points = Array.from({ length: 10 }, (_, i) => ({
          timestamp_ms: now - (9 - i) * 10_000, qps: i === 9 ? polls : 0, p50_ms: 1.5, p99_ms: 4, error_rate: 0,
          replicas_ready: 1, replicas_desired: 1, in_flight: i === 9 ? 1 : 0, queued: 0,
        }));
        return route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ endpoint: 'iris', interval_s: 10, points }) });
      });
      await metrics.locator('.chart[data-chart="qps"] canvas').waitFor();
      assert.equal(await metrics.locator('.chart canvas').count(), 5, 'requests/s, latency, errors, replicas, concurrency');
      const first = await metrics.locator('.chart[data-chart="qps"] .now').innerText();
      await waitFor('the requests chart to move without a reload', async () => ((await metrics.locator('.chart[data-chart="qps"] .now').innerText()) !== first ? true : undefined));
      assert.match(await metrics.locator('.chart[data-chart="latency"] .now').innerText(), /p50 1\.5 · p99 4/);
      await shot('endpoint-charts');
      await page.unroute('**/metrics/series?*');
    } else {
      // Traffic keeps flowing while waiting: the chart's latest point is the 5 s slot in progress,
      // and a page poll landing just after a quiet slot began would otherwise see 0.
      await waitFor('the requests chart to show traffic', async () => {
        for (let i = 0; i < 10; i++) await request({ url, path: '/serving-endpoints/iris/invocations', json: { inputs: [[0, 0, 0, 0]] } });
        const now = await metrics.locator('.chart[data-chart="qps"] .now').innerText();
        return /requests\/s (0\.\d*[1-9]|[1-9])/.test(now) ? true : undefined;
      }, 20_000);
      await shot('endpoint-charts');
    }
    await shot('endpoint');

    // A second version, added to the endpoint at 0%, then a 60/40 split through the editor.
    await register('iris', fx.irisClassifier);
    const v2 = page.locator('section.version[data-version="2"]');
    assert.equal(await v1.getByRole('button', { name: 'Add to endpoint' }).count(), 0, 'version 1 is already served there');
    await v2.getByRole('button', { name: 'Add to endpoint iris' }).click();
    await page.waitForURL('**/#/endpoints/iris');
    await page.locator('table.entities:has(caption:text-matches("^Serving config")) tr[data-entity="iris-2"] [data-state="DEPLOYMENT_READY"]').waitFor({ timeout: 30_000 });
    await page.locator('h1 [data-state="ready"]').waitFor();
    const split = page.getByRole('form', { name: 'Traffic split' });
    await split.getByLabel('iris-1').fill('60');
    await split.getByLabel('iris-2').fill('30');
    await split.getByText('they add up to 90').waitFor();
    assert.equal(await split.getByRole('button', { name: 'Save traffic split' }).isDisabled(), true, 'an invalid split cannot be sent');
    await split.getByLabel('iris-2').fill('40');
    await split.getByRole('button', { name: 'Save traffic split' }).click();
    await waitFor('the new split on the page', async () => {
      const cells = await page.locator('table.entities tr[data-entity] td:nth-child(4)').allInnerTexts();
      return cells.join(',') === '60%,40%' ? true : undefined;
    });
    const after = await request({ url, path: '/api/2.0/serving-endpoints/iris' });
    assert.deepEqual(after.json.config.traffic_config.routes.map((r: any) => [r.served_entity_name, r.traffic_percentage]), [['iris-1', 60], ['iris-2', 40]]);
    assert.equal(after.json.config.served_entities.length, 2);

    // Replica logs of a served entity.
    await page.getByRole('button', { name: 'Show logs' }).click();
    await page.locator('pre.logs, .panel[aria-label="Replica logs"] .empty').first().waitFor();
    await shot('endpoint-two-versions');

    // Endpoints list: state, served entities, traffic.
    await page.goto(`${url}/#/endpoints`);
    const row = page.locator('tr', { has: page.getByRole('link', { name: 'iris', exact: true }) });
    await row.locator('[data-state="ready"]').waitFor();
    assert.match(await row.innerText(), /iris-1: 60%[\s\S]*iris-2: 40%/);
    await shot('endpoints');

    // A file that is not a model: FAILED_REGISTRATION with the registry's reason.
    await register('broken', broken);
    const failed = page.locator('section.version[data-version="1"]');
    await failed.locator('[data-state="FAILED_REGISTRATION"]').waitFor();
    const reason = await failed.getByRole('alert').innerText();
    assert.match(reason, /Registration failed/);
    assert.ok(reason.length > 'Registration failed'.length + 10, `the reason is shown: ${reason}`);
    assert.equal(await failed.getByRole('button', { name: 'Serve' }).count(), 0, 'a failed version cannot be served');
    await shot('model-failed');

    await page.goto(`${url}/#/models`);
    await page.getByRole('link', { name: 'broken' }).waitFor();
    await shot('models');
    await page.goto(`${url}/#/models/iris`);
    await page.locator('section.version[data-version="2"] [data-state="READY"]').waitFor();
    await shot('model');

    // A version logged by an MLflow run links to the run: its params, metrics and tags.
    const created = await request({ url, path: '/api/2.0/mlflow/runs/create', json: { experiment_id: '0', run_name: 'trial-7' } });
    const runId = created.json.run.info.run_id as string;
    await request({ url, path: '/api/2.0/mlflow/runs/log-batch', json: { run_id: runId, params: [{ key: 'alpha', value: '0.25' }], metrics: [{ key: 'rmse', value: 0.5, timestamp: 1, step: 3 }], tags: [{ key: 'team', value: 'churn' }] } });
    /** Uploads `files` as the run's artifact directory `dir` and registers it as version 1 of `name`. */
    const registerFromRun = async (name: string, dir: string, files: Record<string, Buffer>): Promise<void> => {
      for (const [file, body] of Object.entries(files)) {
        const up = await request({ url, method: 'PUT', path: `/api/2.0/mlflow-artifacts/artifacts/_experiments/0/${runId}/artifacts/${dir}/${file}`, body });
        assert.equal(up.status, 200, up.text);
      }
      await request({ url, path: '/api/2.0/mlflow/registered-models/create', json: { name } });
      const version = await request({ url, path: '/api/2.0/mlflow/model-versions/create', json: { name, source: `runs:/${runId}/${dir}` } });
      assert.equal(version.json.model_version.status, 'READY', version.text);
    };
    await registerFromRun('tracked', 'model', { 'model.onnx': await fsp.readFile(fx.irisClassifier) });
    await page.goto(`${url}/#/models/tracked`);
    const run = page.locator('section.version[data-version="1"] details.run');
    await run.locator('summary').click();
    await run.getByRole('row', { name: 'alpha 0.25' }).waitFor();
    assert.match(await run.innerText(), /trial-7[\s\S]*rmse\s+0\.5 \(step 3\)[\s\S]*team\s+churn/);
    await shot('model-run');

    // A python version (an MLflow directory, registered without running its code) shows its
    // environment files when its details are opened.
    const files: Record<string, string> = {
      MLmodel: 'flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    model_path: model.pkl\n    env:\n      virtualenv: python_env.yaml\n'
        + '  sklearn:\n    pickled_model: model.pkl\n'
        + 'signature:\n  inputs: \'[{"type": "double", "name": "x", "required": true}]\'\n  outputs: \'[{"type": "double", "required": true}]\'\n',
      'python_env.yaml': 'python: 3.11.2\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n',
      'requirements.txt': 'scikit-learn==1.2.1\n',
      'model.pkl': 'not unpickled at registration',
    };
    await registerFromRun('pyenv', 'pymodel', Object.fromEntries(Object.entries(files).map(([file, text]) => [file, Buffer.from(text)])));
    await page.goto(`${url}/#/models/pyenv`);
    const environment = page.locator('section.version[data-version="1"] details[data-environment="1"]');
    await environment.locator('summary').click();
    await environment.getByText('scikit-learn==1.2.1').waitFor();
    assert.match(await environment.innerText(), /python_env\.yaml[\s\S]*python: 3\.11\.2[\s\S]*requirements\.txt[\s\S]*scikit-learn==1\.2\.1/);
    await shot('model-environment');

    // Sign out clears the token: a reload asks for one again.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.reload();
    await page.getByLabel('Token').waitFor();
    assert.deepEqual(problems, []);
    process.stdout.write(`console e2e: ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots:\n${shots.map((s) => `  ${s}`).join('\n')}\n`);
  } finally {
    await browser.close();
    await server?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('console: the autoscaling editor simulates a candidate next to the current config, then saves it', { skip, timeout: 120_000 }, async () => {
  assert.ok(fs.existsSync(path.join(ROOT, 'ui', 'dist', 'index.html')), 'the console is not built: run npm run build');
  const dir = await tempDir();
  const fx = await writeFixtures(path.join(dir, 'fixtures'));
  await fsp.mkdir(SHOTS, { recursive: true });
  let server: FerryServer | undefined;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    server = await startTestServer(path.join(dir, 'data'));
    const url = server.url;
    const call = (method: string, p: string, json?: unknown): ReturnType<typeof request> => request({ url, method, path: p, ...(json === undefined ? {} : { json }) });
    await call('POST', '/api/2.0/mlflow/registered-models/create', { name: 'linear' });
    await call('POST', '/api/2.0/mlflow/model-versions/create', { name: 'linear', source: fx.linear });
    assert.equal((await call('POST', '/api/2.0/serving-endpoints', {
      name: 'lin', config: { served_entities: [{ name: 'lin-1', entity_name: 'linear', entity_version: '1', max_provisioned_concurrency: 16 }] },
    })).status, 200);
    await waitFor('READY', async () => ((await call('GET', '/api/2.0/serving-endpoints/lin')).json.state.ready === 'READY' ? true : undefined));

    const page = await browser.newPage({ viewport: { width: 1366, height: 860 } });
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (404)/.test(m.text())) problems.push(`console: ${m.text()}`);
    });
    await page.goto(`${url}/`);
    await page.getByLabel('Token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('Signed in as').waitFor();
    await page.goto(`${url}/#/endpoints/lin`);
    const editor = page.getByRole('form', { name: 'Autoscaling' });
    await editor.getByLabel('Target concurrency').waitFor();
    assert.equal(await editor.getByLabel('Target concurrency').inputValue(), '4', 'prefilled with the settings in effect');
    assert.equal(await editor.getByLabel('Max provisioned concurrency').inputValue(), '16');

    // A value out of range is named before anything is sent.
    await editor.getByLabel('Target concurrency').fill('0');
    await editor.getByText('target concurrency: expected a number from 0.1 to 1000, got 0').waitFor();
    assert.equal(await editor.getByRole('button', { name: 'Simulate' }).isDisabled(), true);

    // A candidate on the bundled bursty hour, with a p99 target: table, charts, recommendation.
    await editor.getByLabel('Target concurrency').fill('1');
    await editor.getByLabel('Traffic').selectOption('bursty');
    await editor.getByLabel('Target p99 (ms)').fill('50');
    await editor.getByLabel('Price per replica-hour').fill('0.36');
    await editor.getByRole('button', { name: 'Simulate' }).click();
    const sim = page.locator('div.simulation');
    await sim.locator('tr[data-config="current"]').waitFor({ timeout: 60_000 });
    for (const row of ['current', 'candidate', 'recommended', 'Knative defaults']) assert.equal(await sim.locator(`tr[data-config="${row}"]`).count(), 1, row);
    const replicaSeconds = async (row: string): Promise<number> => Number(await sim.locator(`tr[data-config="${row}"] td:nth-child(2)`).innerText());
    assert.ok(await replicaSeconds('candidate') > 0);
    const direct = await call('POST', '/api/2.0/serving-endpoints/lin/simulate', {
      served_entity_name: 'lin-1', trace: { source: 'bundled', name: 'bursty' }, price_per_replica_hour: 0.36,
      candidate: { scale_to_zero_enabled: false, max_provisioned_concurrency: 16, autoscaling: { target_concurrency: 1, stable_window_ms: 30_000, scale_down_delay_ms: 10_000, scale_to_zero_grace_ms: 30_000 } },
    });
    assert.equal(direct.status, 200, direct.text);
    assert.equal(await replicaSeconds('candidate'), Math.round(direct.json.candidate.result.replica_seconds), 'the table shows what the API answers');
    assert.equal(await sim.locator('tr[data-config="candidate"] td:nth-child(3)').innerText(), direct.json.candidate.result.cost.toFixed(2), 'the cost at the price given');
    await sim.locator('.chart[data-chart="sim-replicas"] canvas').waitFor();
    assert.equal(await sim.locator('.chart canvas').count(), 2, 'replicas and p99 over time');
    assert.match(await sim.locator('.chart[data-chart="sim-replicas"] figcaption').innerText(), /current .* candidate/);
    await page.screenshot({ path: path.join(SHOTS, 'endpoint-simulation.png'), fullPage: true });

    // Use the recommendation, then save it: the endpoint's config changes to it.
    await sim.getByRole('button', { name: 'Use it' }).click();
    const recommended = await editor.getByLabel('Target concurrency').inputValue();
    await editor.getByRole('button', { name: 'Save candidate' }).click();
    const saved = await waitFor('the saved config', async () => {
      const ep = (await call('GET', '/api/2.0/serving-endpoints/lin')).json;
      return ep.config?.config_version === 2 && ep.state.config_update === 'NOT_UPDATING' ? ep : undefined;
    }, 30_000);
    assert.equal(saved.config.served_entities[0].autoscaling.target_concurrency, Number(recommended));
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    await server?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
