/**
 * Many tiny models (docs/multi-model.md): bulk registration of N generated linear and tree models
 * through a real server (`FerryClient.importModels`, the code `ferry models import` runs), then
 * the replica-side model cache under traffic, in this process: uniform random traffic over all N
 * models (errors, RSS growth vs the budget), Zipf s=1.1 (hit rate, throughput), the p99 of a
 * request for a loaded model vs a single-model loop at the same concurrency, and the miss p99.
 * The gateway/endpoint path for families is not built yet, so these latencies are the cache and
 * the evaluator without the HTTP hop. `node dist/bench/multi.js [--models N] [--duration-s S]`;
 * `npm run bench` runs it after the suite (a tiny smoke under --quick).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { FerryClient } from '../src/client/index.js';
import { compileServerConfig } from '../src/config/index.js';
import { familyFixture } from '../src/fixtures/index.js';
import { loadFamilyModel, ModelCache, type FamilyModel } from '../src/multi/index.js';
import { startServer } from '../src/server/index.js';
import type { Tensor } from '../src/tensor/index.js';

export interface MultiSettings {
  models: number;
  durationS: number;
  budgetBytes: number;
  concurrency: number;
}

export interface MultiReport {
  settings: MultiSettings;
  generateS: number;
  registerS: number;
  registered: number;
  failed: number;
  phases: PhaseResult[];
}

interface PhaseResult {
  name: string;
  requests: number;
  errors: number;
  requestsPerS: number;
  hitRate: number;
  hitP99Us: number;
  missP99Us: number;
  loads: number;
  evictions: number;
  cachedModels: number;
  cachedBytes: number;
  rssGrowthMaxBytes: number;
}

const x: Record<string, Tensor> = { x: { dtype: 'float32', shape: [1, 4], data: Float32Array.of(0.5, -1, 2, 0.25) } };

function p99(values: number[]): number {
  if (values.length === 0) return 0;
  values.sort((a, b) => a - b);
  return Math.round(values[Math.min(values.length - 1, Math.floor(values.length * 0.99))] ?? 0);
}

/** Zipf(s) over ranks 1..n as a cumulative table; `sample(u)` maps u in [0, 1) to a rank - 1. */
function zipf(n: number, s: number): (u: number) => number {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let k = 1; k <= n; k++) cdf[k - 1] = sum += 1 / k ** s;
  return (u) => {
    const target = u * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((cdf[mid] ?? 0) < target) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

async function phase(name: string, dir: string, s: MultiSettings, pick: () => number): Promise<PhaseResult> {
  const cache = new ModelCache<FamilyModel>({
    budgetBytes: s.budgetBytes,
    load: async (key) => loadFamilyModel(await fsp.readFile(join(dir, `${key}.onnx`)), { modelFile: `${key}.onnx`, workloadType: 'CPU', intraOpThreads: 1 }, false),
    close: (m) => m.model.close(),
  });
  global.gc?.();
  const rss0 = process.memoryUsage().rss;
  let rssMax = 0;
  const sampler = setInterval(() => (rssMax = Math.max(rssMax, process.memoryUsage().rss - rss0)), 100);
  const hit: number[] = [];
  const miss: number[] = [];
  let errors = 0;
  const end = performance.now() + s.durationS * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const key = `m-${pick()}`;
      const before = cache.stats().misses;
      const t0 = performance.now();
      try {
        await cache.use(key, (m) => m.model.predict(x));
      } catch {
        errors++;
      }
      const us = (performance.now() - t0) * 1000;
      (cache.stats().misses > before ? miss : hit).push(us);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: s.concurrency }, worker));
  const elapsedS = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  const st = cache.stats();
  const requests = hit.length + miss.length;
  return {
    name, requests, errors, requestsPerS: Math.round(requests / elapsedS), hitRate: Math.round((st.hits / Math.max(1, st.hits + st.misses)) * 1000) / 1000,
    hitP99Us: p99(hit), missP99Us: p99(miss), loads: st.loads, evictions: st.evictions, cachedModels: st.models, cachedBytes: st.bytes, rssGrowthMaxBytes: rssMax,
  };
}

export async function runMulti(s: MultiSettings, log: (line: string) => void): Promise<MultiReport> {
  const tmp = await fsp.mkdtemp(join(tmpdir(), 'ferry-bench-multi-'));
  try {
    const dir = join(tmp, 'models');
    await fsp.mkdir(dir);
    let t0 = performance.now();
    for (let i = 0; i < s.models; i++) await fsp.writeFile(join(dir, `m-${i}.onnx`), familyFixture(i).build());
    const generateS = (performance.now() - t0) / 1000;
    log(`multi: generated ${s.models} models in ${generateS.toFixed(1)} s`);
    const token = 'bench_multi_admin_token_0123456789abcdef';
    const server = await startServer(compileServerConfig({ port: 0, dataDir: join(tmp, 'data'), logLevel: 'error' }), { adminToken: token });
    let registerS: number;
    let r: Awaited<ReturnType<FerryClient['importModels']>>;
    try {
      t0 = performance.now();
      r = await new FerryClient({ url: server.url, token }).importModels(dir);
      registerS = (performance.now() - t0) / 1000;
    } finally {
      await server.close();
    }
    log(`multi: registered ${r.registered} (failed ${r.failed}) in ${registerS.toFixed(1)} s`);
    const phases: PhaseResult[] = [];
    const sample = zipf(s.models, 1.1);
    for (const [name, pick] of [
      ['single model', () => 0],
      ['uniform', () => Math.floor(Math.random() * s.models)],
      ['zipf s=1.1', () => sample(Math.random())],
    ] as Array<[string, () => number]>) {
      const p = await phase(name, dir, s, pick);
      log(`multi: ${name}: ${p.requestsPerS} req/s, hit rate ${p.hitRate}, hit p99 ${p.hitP99Us} µs, miss p99 ${p.missP99Us} µs, errors ${p.errors}, cached ${p.cachedModels} (${p.cachedBytes} B), RSS growth max ${(p.rssGrowthMaxBytes / 1048576).toFixed(1)} MiB`);
      phases.push(p);
    }
    return { settings: s, generateS, registerS, registered: r.registered, failed: r.failed, phases };
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

/** The report's section, as markdown. */
export function multiMarkdown(m: MultiReport): string {
  const lines = [
    '## Many tiny models (bench/multi.ts)', '',
    `${m.settings.models} generated models (linear and tree); bulk registration through the API: ${m.registerS.toFixed(1)} s (${m.registered} READY, ${m.failed} failed). `
      + `Cache budget ${m.settings.budgetBytes} B, ${m.settings.concurrency} concurrent callers, ${m.settings.durationS} s per phase, in-process (no HTTP hop).`, '',
    '| phase | req/s | hit rate | hit p99 µs | miss p99 µs | errors | loads | evictions | cached | RSS growth max MiB |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...m.phases.map((p) => `| ${p.name} | ${p.requestsPerS} | ${p.hitRate} | ${p.hitP99Us} | ${p.missP99Us} | ${p.errors} | ${p.loads} | ${p.evictions} | ${p.cachedModels} | ${(p.rssGrowthMaxBytes / 1048576).toFixed(1)} |`),
    '',
  ];
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { models: { type: 'string', default: '100000' }, 'duration-s': { type: 'string', default: '60' }, 'budget-mib': { type: 'string', default: '64' } } });
  const s: MultiSettings = { models: Number(values.models), durationS: Number(values['duration-s']), budgetBytes: Number(values['budget-mib']) * 1024 * 1024, concurrency: 16 };
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
