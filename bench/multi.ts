/**
 * Many tiny models (docs/multi-model.md), end to end through a real server: N generated ONNX linear
 * and tree models and XGBoost boosters (./xgboost-members.ts) bulk-registered through the API (`FerryClient.importModels`, the code `ferry
 * models import` runs), one family endpoint serving all of them (2 replicas, a byte-budget cache
 * each) and a single-model endpoint for comparison, then HTTP load from a worker thread:
 * the single-model endpoint; the family endpoint on 100 loaded models (hit p99 vs the single
 * model's); misses only (fresh models, one after another at low concurrency); uniform random
 * traffic over all N (errors, cache bytes and replica RSS vs the budget); Zipf s=1.1 (hit rate,
 * throughput). `node dist/bench/multi.js [--models N] [--duration-s S] [--budget-mib M] [--gateway-workers N]`;
 * `npm run bench` runs it (a 200-model smoke under --quick).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { FerryClient, type FamilyCacheView } from '../src/client/index.js';
import { compileServerConfig } from '../src/config/index.js';
import { familyFixture } from '../src/fixtures/index.js';
import { descendants, processTree, residentBytes } from '../src/runtime/local/proc.js';
import { startServer, type FerryServer } from '../src/server/index.js';
import type { LoadSpec } from './multi-load.js';
import { kubeMissMarkdown, runFamilyKubeMisses, type KubeMissReport } from './multi-kube.js';
import { load } from './multi-worker.js';
import { xgboostMember } from './xgboost-members.js';
import { percentile } from './scaling.js';

export interface MultiSettings {
  models: number;
  durationS: number;
  budgetBytes: number;
  concurrency: number;
  /** The server's `gatewayWorkers`; undefined: its default (the cores). */
  gatewayWorkers?: number;
  /** Models of the Kubernetes section (bench/multi-kube.ts: a pod's misses from S3); 0 skips it. */
  kubeModels: number;
  /** Stop after the registration (no endpoints, no traffic): to measure registration alone. */
  registerOnly?: boolean;
}

export interface MultiReport {
  settings: MultiSettings;
  generateS: number;
  registerS: number;
  registered: number;
  failed: number;
  /** The server's resident memory growth over the registration, per registered model (after a GC when `--expose-gc`). */
  rssPerModelBytes: number;
  /** CPU (user + system) of this process (the server and the client) per registered model, over the registration. */
  cpuPerModelMs: number;
  phases: PhaseResult[];
  kube: KubeMissReport | undefined;
}

interface PhaseResult {
  name: string;
  requests: number;
  errors: number;
  firstError: string;
  requestsPerS: number;
  p50Us: number;
  p99Us: number;
  /** Family phases: hits / (hits + misses) in the replicas' caches during the phase. */
  hitRate: number | null;
  loads: number;
  evictions: number;
  /** Largest cache (bytes) any replica reported during the phase, and the budget. */
  cacheBytesMax: number;
  /** Largest resident memory of any family replica during the phase. */
  replicaRssMaxBytes: number;
}

async function familyState(client: FerryClient): Promise<FamilyCacheView> {
  const f = (await client.getEndpoint('ads')).config?.served_entities[0]?.state.family;
  if (f === undefined) throw new Error('the family endpoint reports no cache state');
  return f;
}

/** The largest resident memory of one family replica: its whole process tree (in the sandbox the runtime's child is bwrap). */
async function replicaRssBytes(dataDir: string): Promise<number> {
  let max = 0;
  const pidsDir = join(dataDir, 'runtime', 'pids');
  const tree = await processTree();
  for (const f of await fsp.readdir(pidsDir).catch(() => [] as string[])) {
    if (!f.startsWith('ads.')) continue;
    const pid = Number((JSON.parse(await fsp.readFile(join(pidsDir, f), 'utf8').catch(() => '{}')) as { pid?: number }).pid);
    max = Math.max(max, (await residentBytes(descendants(pid, tree))) ?? 0);
  }
  return max;
}

async function phase(name: string, server: FerryServer, client: FerryClient, dataDir: string, spec: Omit<LoadSpec, 'url' | 'token'>, token: string): Promise<PhaseResult> {
  const family = spec.endpoint === 'ads';
  const before = family ? await familyState(client) : undefined;
  let cacheBytesMax = 0;
  let replicaRssMaxBytes = 0;
  let polling = true;
  const poller = (async () => {
    while (polling && family) {
      const f = await familyState(client);
      cacheBytesMax = Math.max(cacheBytesMax, ...f.replicas.map((r) => r.bytes));
      replicaRssMaxBytes = Math.max(replicaRssMaxBytes, await replicaRssBytes(dataDir));
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  const r = await load({ ...spec, url: server.url, token });
  polling = false;
  await poller;
  const after = family ? await familyState(client) : undefined;
  const d = (k: 'hits' | 'misses' | 'loads' | 'evictions'): number => (after?.[k] ?? 0) - (before?.[k] ?? 0);
  return {
    name, requests: r.requests, errors: r.errors, firstError: r.firstError, requestsPerS: Math.round(r.requests / r.elapsedS),
    p50Us: Math.round(percentile(r.latenciesUs, 50) ?? 0), p99Us: Math.round(percentile(r.latenciesUs, 99) ?? 0),
    hitRate: family && d('hits') + d('misses') > 0 ? Math.round((d('hits') / (d('hits') + d('misses'))) * 1000) / 1000 : null,
    loads: d('loads'), evictions: d('evictions'), cacheBytesMax, replicaRssMaxBytes,
  };
}

export async function runMulti(s: MultiSettings, log: (line: string) => void): Promise<MultiReport> {
  const tmp = await fsp.mkdtemp(join(tmpdir(), 'ferry-bench-multi-'));
  try {
    const dir = join(tmp, 'models');
    await fsp.mkdir(dir);
    let t0 = performance.now();
    // A third XGBoost (.ubj); the rest ONNX, linear or tree (familyFixture alternates by parity).
    for (let i = 0; i < s.models; i++) {
      await fsp.writeFile(join(dir, i % 3 === 2 ? `m-${i}.ubj` : `m-${i}.onnx`), i % 3 === 2 ? xgboostMember(i) : familyFixture(i).build());
    }
    const generateS = (performance.now() - t0) / 1000;
    log(`multi: generated ${s.models} models in ${generateS.toFixed(1)} s`);
    const token = 'bench_multi_admin_token_0123456789abcdef';
    const dataDir = join(tmp, 'data');
    const server = await startServer(compileServerConfig({ port: 0, dataDir, logLevel: 'error', ...(s.gatewayWorkers === undefined ? {} : { gatewayWorkers: s.gatewayWorkers }) }), { adminToken: token });
    let local: Omit<MultiReport, 'kube'>;
    try {
      const client = new FerryClient({ url: server.url, token });
      // The server runs in this process: its RSS is this process's (the generated files are on disk).
      const rss = (): number => {
        (globalThis as { gc?: () => void }).gc?.();
        return process.memoryUsage().rss;
      };
      const rssBefore = rss();
      t0 = performance.now();
      const cpu0 = process.cpuUsage();
      const r = await client.importModels(dir);
      const cpu = process.cpuUsage(cpu0);
      const registerS = (performance.now() - t0) / 1000;
      const cpuPerModelMs = Math.round(((cpu.user + cpu.system) / 1000 / Math.max(1, r.registered)) * 1000) / 1000;
      const rssPerModelBytes = Math.round((rss() - rssBefore) / Math.max(1, r.registered));
      log(`multi: registered ${r.registered} (failed ${r.failed}) in ${registerS.toFixed(1)} s (${Math.round(r.registered / registerS)}/s); server RSS +${rssPerModelBytes} B per model; server+client CPU ${cpuPerModelMs} ms per model`);
      if (s.registerOnly === true) return { settings: s, generateS, registerS, registered: r.registered, failed: r.failed, rssPerModelBytes, cpuPerModelMs, phases: [], kube: undefined };
      // Two replicas each (provisioned concurrency 8 = 2 × the Small target of 4), fixed.
      const fixed = { min_provisioned_concurrency: 8, max_provisioned_concurrency: 8 };
      await client.createEndpoint('ads', { served_entities: [{ name: 'family', model_family: { name_prefix: 'm-', cache_size: s.budgetBytes }, ...fixed }] });
      await client.createEndpoint('single', { served_entities: [{ entity_name: 'm-0', entity_version: '1', ...fixed }] });
      for (const ep of ['ads', 'single']) await client.waitForEndpoint(ep, { timeoutMs: 120_000 });
      const hot = Math.min(100, s.models);
      const base = { concurrency: s.concurrency, durationS: s.durationS, maxRequests: Number.MAX_SAFE_INTEGER, noHeader: false };
      // Load the hot set on every replica that will serve it before measuring hits.
      await load({ ...base, url: server.url, token, endpoint: 'ads', durationS: Math.max(1, s.durationS / 4), pick: { kind: 'uniform', n: hot } });
      const phases: PhaseResult[] = [];
      const run = async (name: string, spec: Omit<LoadSpec, 'url' | 'token'>): Promise<void> => {
        const p = await phase(name, server, client, dataDir, spec, token);
        log(`multi: ${name}: ${p.requestsPerS} req/s, p50 ${p.p50Us} µs, p99 ${p.p99Us} µs, hit rate ${p.hitRate ?? '-'}, loads ${p.loads}, errors ${p.errors}${p.firstError ? ` (${p.firstError})` : ''}, cache max ${p.cacheBytesMax} B, replica RSS max ${(p.replicaRssMaxBytes / 1048576).toFixed(1)} MiB`);
        phases.push(p);
      };
      await run('single-model endpoint', { ...base, endpoint: 'single', noHeader: true, pick: { kind: 'fixed', model: 'm-0' } });
      await run(`family, ${hot} loaded models`, { ...base, endpoint: 'ads', pick: { kind: 'uniform', n: hot } });
      // Fresh models one after another (4 at a time): every request is a miss.
      const fresh = Math.min(2000, Math.max(0, s.models - hot));
      if (fresh > 0) await run('family, misses only', { ...base, endpoint: 'ads', concurrency: 4, durationS: 600, maxRequests: fresh, pick: { kind: 'sequence', from: s.models - fresh } });
      await run(`family, uniform over ${s.models}`, { ...base, endpoint: 'ads', pick: { kind: 'uniform', n: s.models } });
      await run('family, Zipf s=1.1', { ...base, endpoint: 'ads', pick: { kind: 'zipf', n: s.models, s: 1.1 } });
      local = { settings: s, generateS, registerS, registered: r.registered, failed: r.failed, rssPerModelBytes, cpuPerModelMs, phases };
    } finally {
      await server.close();
    }
    // After the local server is gone: the pods and s3rver get the machine to themselves.
    return { ...local, kube: s.kubeModels > 0 ? await runFamilyKubeMisses(s.kubeModels, log) : undefined };
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

/** The report's section, as markdown. */
export function multiMarkdown(m: MultiReport): string {
  const single = m.phases.find((p) => p.name === 'single-model endpoint');
  const loaded = m.phases.find((p) => p.name.includes('loaded models'));
  const lines = [
    '## Many tiny models (bench/multi.ts)', '',
    `${m.settings.models} generated models (ONNX linear and tree, and a third XGBoost); bulk registration through the API: ${m.registerS.toFixed(1)} s, ${Math.round(m.registered / Math.max(m.registerS, 1e-9))} models/s (${m.registered} READY, ${m.failed} failed); server RSS growth ${m.rssPerModelBytes} B per registered model; ${m.cpuPerModelMs} ms of server+client CPU per model. `
      + `One family endpoint (2 replicas, cache budget ${m.settings.budgetBytes} B each) and a single-model endpoint (2 replicas); ${m.settings.concurrency} keep-alive connections, ${m.settings.durationS} s per phase, HTTP through the gateway.`, '',
    '| phase | req/s | p50 µs | p99 µs | hit rate | loads | errors | max cache B | max replica RSS MiB |',
    '|---|---|---|---|---|---|---|---|---|',
    ...m.phases.map((p) => `| ${p.name} | ${p.requestsPerS} | ${p.p50Us} | ${p.p99Us} | ${p.hitRate ?? '-'} | ${p.loads} | ${p.errors} | ${p.cacheBytesMax || '-'} | ${p.replicaRssMaxBytes ? (p.replicaRssMaxBytes / 1048576).toFixed(1) : '-'} |`),
    '',
    single && loaded ? `Loaded-model p99 ÷ single-model p99: ${(loaded.p99Us / Math.max(1, single.p99Us)).toFixed(2)} (goal ≤ 1.2).` : '',
    '',
    ...(m.kube === undefined ? [] : [kubeMissMarkdown(m.kube)]),
  ];
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      models: { type: 'string', default: '1000000' }, 'duration-s': { type: 'string', default: '60' }, 'budget-mib': { type: 'string', default: '64' }, 'kube-models': { type: 'string', default: '500' },
      'gateway-workers': { type: 'string' }, 'register-only': { type: 'boolean', default: false },
    },
  });
  const s: MultiSettings = {
    models: Number(values.models), durationS: Number(values['duration-s']), budgetBytes: Number(values['budget-mib']) * 1024 * 1024, concurrency: 16, kubeModels: Number(values['kube-models']), registerOnly: values['register-only'],
    ...(values['gateway-workers'] === undefined ? {} : { gatewayWorkers: Number(values['gateway-workers']) }),
  };
  runMulti(s, (line) => process.stderr.write(`${line}\n`)).then((m) => {
    const md = multiMarkdown(m);
    const out = fileURLToPath(new URL('../../bench/results/', import.meta.url));
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'multi.md'), md);
    writeFileSync(join(out, 'multi.json'), JSON.stringify(m, null, 2) + '\n');
    process.stdout.write(md);
  }, (err: unknown) => {
    process.stderr.write(`multi: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
