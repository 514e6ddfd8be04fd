/**
 * The load generator of bench/multi.ts, run on a worker thread so that its event loop does not
 * share the gateway's: `concurrency` keep-alive connections, each sending one request after the
 * other for `durationS` (or until `maxRequests`), the model of each chosen by `pick`, every
 * latency recorded.
 */
import http from 'node:http';
import { parentPort, workerData } from 'node:worker_threads';

export interface LoadSpec {
  url: string;
  token: string;
  endpoint: string;
  concurrency: number;
  durationS: number;
  /** Stop after this many requests in all (sequence phases). */
  maxRequests: number;
  pick: { kind: 'fixed'; model: string } | { kind: 'uniform'; n: number } | { kind: 'zipf'; n: number; s: number } | { kind: 'sequence'; from: number };
  /** No X-Ferry-Model header (a single-model endpoint). */
  noHeader: boolean;
}

export interface LoadResult {
  requests: number;
  errors: number;
  firstError: string;
  elapsedS: number;
  latenciesUs: number[];
}

const BODY = JSON.stringify({ inputs: [[0.5, -1.25, 2, 0.75]] });

function zipf(n: number, s: number): () => number {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let k = 1; k <= n; k++) cdf[k - 1] = sum += 1 / k ** s;
  return () => {
    const target = Math.random() * sum;
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

async function run(spec: LoadSpec): Promise<LoadResult> {
  const p = spec.pick;
  let next = 0;
  const rank = p.kind === 'zipf' ? zipf(p.n, p.s) : undefined;
  const pick = (): string => {
    if (p.kind === 'fixed') return p.model;
    if (p.kind === 'uniform') return `m-${Math.floor(Math.random() * p.n)}`;
    if (p.kind === 'sequence') return `m-${p.from + next - 1}`;
    return `m-${rank?.() ?? 0}`;
  };
  const target = new URL(spec.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: spec.concurrency });
  const latenciesUs: number[] = [];
  let errors = 0;
  let firstError = '';
  const end = performance.now() + spec.durationS * 1000;
  const one = (model: string): Promise<void> => new Promise((resolve) => {
    const t0 = performance.now();
    const req = http.request({
      hostname: target.hostname, port: target.port, method: 'POST', path: `/serving-endpoints/${spec.endpoint}/invocations`, agent,
      headers: { authorization: `Bearer ${spec.token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(BODY), ...(spec.noHeader ? {} : { 'x-ferry-model': model }) },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        latenciesUs.push((performance.now() - t0) * 1000);
        if (res.statusCode !== 200) {
          errors++;
          firstError ||= `${res.statusCode ?? 0} ${Buffer.concat(chunks).toString('utf8').slice(0, 300)}`;
        }
        resolve();
      });
    });
    req.on('error', (err) => {
      errors++;
      firstError ||= err.message;
      resolve();
    });
    req.end(BODY);
  });
  const t0 = performance.now();
  await Promise.all(Array.from({ length: spec.concurrency }, async () => {
    while (performance.now() < end && next < spec.maxRequests) {
      next++;
      await one(pick());
    }
  }));
  agent.destroy();
  return { requests: latenciesUs.length, errors, firstError, elapsedS: (performance.now() - t0) / 1000, latenciesUs };
}

if (parentPort !== null) {
  const port = parentPort;
  run(workerData as LoadSpec).then((r) => port.postMessage(r), (err: unknown) => port.postMessage({ error: String(err) }));
}
