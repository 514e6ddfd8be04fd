/**
 * The embeddings section of the benchmark: sentence embeddings per second for the tiny Hugging
 * Face-layout model (src/fixtures/tiny-bert.ts, feature-extraction, mean pooling + normalize), two ways:
 *   direct: the transformers flavor loaded in this process (transformers.js pipeline on
 *           onnxruntime-node, 1 intra-op thread), `predict` on batches of 32 texts, one at a time;
 *   ferry:  a Ferry server with an endpoint on the same model (one replica), MLflow scoring requests
 *           of 32 texts (`{"inputs": [...]}`) over HTTP, at 1 and 4 concurrent clients.
 * Each run lasts `durationS`; embeddings/s = texts answered ÷ wall time. Latency: per request.
 */
import http from 'node:http';
import { join } from 'node:path';
import { writeTinyBert } from '../src/fixtures/index.js';
import { getFlavor } from '../src/flavors/index.js';
import { ferryApi, registerVersion, startFerryServer, waitEndpointsReady } from './targets.js';
import { stopServer } from './procs.js';

export interface EmbeddingsRow {
  target: 'direct' | 'ferry';
  clients: number;
  textsPerRequest: number;
  embeddingsPerS: number;
  p50Ms: number;
  p99Ms: number;
}

const TEXTS_PER_REQUEST = 32;
const CLIENTS = [1, 4] as const;
const WORDS = ['the', 'model', 'serves', 'fast', 'answers', 'to', 'every', 'small', 'team', 'on', 'one', 'machine'];

const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;
const quantile = (xs: number[], q: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))] ?? NaN;

/** 32 short sentences, different per batch so nothing is cached anywhere. */
function texts(seed: number): string[] {
  return Array.from({ length: TEXTS_PER_REQUEST }, (_, i) => Array.from({ length: 6 + ((seed + i) % 6) }, (_, j) => WORDS[(seed * 7 + i * 3 + j * 5) % WORDS.length]).join(' '));
}

function row(target: EmbeddingsRow['target'], clients: number, latencies: number[], wallMs: number): EmbeddingsRow {
  return {
    target, clients, textsPerRequest: TEXTS_PER_REQUEST, embeddingsPerS: round((latencies.length * TEXTS_PER_REQUEST) / (wallMs / 1000)),
    p50Ms: round(quantile(latencies, 0.5), 2), p99Ms: round(quantile(latencies, 0.99), 2),
  };
}

/** The flavor in this process: what a replica runs, without HTTP, the channel or batching. */
async function direct(modelDir: string, durationS: number): Promise<EmbeddingsRow> {
  const transformers = await getFlavor('transformers');
  const model = await transformers.load(modelDir, { modelFile: transformers.defaultModelFile, workloadType: 'CPU', intraOpThreads: 1 });
  try {
    await model.predict({ text: { dtype: 'string', shape: [TEXTS_PER_REQUEST], data: texts(0) } });
    const latencies: number[] = [];
    const t0 = performance.now();
    for (let i = 1; performance.now() - t0 < durationS * 1000; i++) {
      const start = performance.now();
      await model.predict({ text: { dtype: 'string', shape: [TEXTS_PER_REQUEST], data: texts(i) } });
      latencies.push(performance.now() - start);
    }
    return row('direct', 1, latencies, performance.now() - t0);
  } finally {
    await model.close();
  }
}

function embed(base: string, token: string, seed: number, agent: http.Agent): Promise<number> {
  const body = JSON.stringify({ inputs: texts(seed) });
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const req = http.request({ hostname: u.hostname, port: u.port, method: 'POST', path: '/serving-endpoints/tiny-embed/invocations', agent, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve(performance.now() - start) : reject(new Error(`ferry answered ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function ferry(dir: string, modelDir: string, durationS: number, token: string): Promise<EmbeddingsRow[]> {
  const proc = await startFerryServer(join(dir, 'ferry-embed'), token, [], { warmPoolSize: 0 });
  const agent = new http.Agent({ keepAlive: true });
  try {
    await registerVersion(proc.url, token, 'tiny-embed', modelDir);
    await ferryApi(proc.url, token, 'POST', '/api/2.0/serving-endpoints', {
      name: 'tiny-embed', config: { served_entities: [{ entity_name: 'tiny-embed', entity_version: '1', scale_to_zero_enabled: false }] },
    });
    await waitEndpointsReady(proc.url, token, ['tiny-embed']);
    await embed(proc.url, token, 0, agent);
    const rows: EmbeddingsRow[] = [];
    for (const clients of CLIENTS) {
      const latencies: number[] = [];
      const t0 = performance.now();
      let seed = 1;
      await Promise.all(Array.from({ length: clients }, async () => {
        while (performance.now() - t0 < durationS * 1000) latencies.push(await embed(proc.url, token, seed++, agent));
      }));
      rows.push(row('ferry', clients, latencies, performance.now() - t0));
    }
    return rows;
  } finally {
    agent.destroy();
    await stopServer(proc);
  }
}

/** Runs both targets for `durationS` each. */
export async function runEmbeddings(tmp: string, durationS: number, token: string, log: (line: string) => void): Promise<EmbeddingsRow[]> {
  const modelDir = await writeTinyBert(tmp, 'feature-extraction');
  log(`bench: embeddings: tiny BERT (feature-extraction), ${TEXTS_PER_REQUEST} texts per request, ${durationS} s per run, direct and through Ferry...`);
  const rows = [await direct(modelDir, durationS), ...await ferry(tmp, modelDir, durationS, token)];
  for (const r of rows) log(`bench:   ${r.target} ×${r.clients}: ${r.embeddingsPerS} embeddings/s, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms`);
  return rows;
}

/** The section's markdown. */
export function embeddingsMarkdown(rows: EmbeddingsRow[]): string[] {
  if (rows.length === 0) return [];
  return [
    '## Embeddings (tiny BERT, transformers.js on onnxruntime-node, 1 intra-op thread)',
    '',
    '| target | clients | texts per request | embeddings/s | p50 ms | p99 ms |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.target} | ${r.clients} | ${r.textsPerRequest} | ${r.embeddingsPerS} | ${r.p50Ms} | ${r.p99Ms} |`),
    '',
  ];
}
