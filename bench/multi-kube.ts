/**
 * A model family on the Kubernetes runtime (docs/kubernetes.md, "Model families"): what a miss
 * costs when the family replica is a pod that fetches the member from S3 itself. A real server
 * with `runtime: kubernetes` against the Kubernetes API contract double (pods are real `ferry
 * replica` processes on loopback pod IPs; test/support/kube-api-double.ts) and its artifacts in
 * s3rver (a Node implementation of the S3 API, on this machine). N generated tiny models are
 * bulk-registered; one family endpoint with one pod; then every model asked for once, one after
 * another (each request a miss: the gateway's lookup, the frame to the pod, S3 HEAD + LIST + GET
 * of the member's tree, the digest check, decoding and compiling), then the same models again
 * (hits). s3rver keeps objects in files and answers in JS, so a miss here is slower than against a
 * real S3 endpoint on the same network only by that server's own cost.
 */
import fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FerryClient } from '../src/client/index.js';
import { compileServerConfig } from '../src/config/index.js';
import { familyFixture } from '../src/fixtures/index.js';
import { startServer } from '../src/server/index.js';
import { FERRY_BIN } from '../test/support/index.js';
import { KubeApiDouble } from '../test/support/kube-api-double.js';
import { S3RVER_CREDENTIALS, startTestS3 } from '../test/support/s3.js';
import { load } from './multi-worker.js';
import { percentile } from './scaling.js';

export interface KubeMissReport {
  models: number;
  misses: { requests: number; errors: number; firstError: string; p50Us: number; p99Us: number };
  hits: { requests: number; errors: number; firstError: string; p50Us: number; p99Us: number };
}

const NS = 'ferry-bench';
const IMAGE = 'ferry:bench';

/** Runs the section with `models` members (each fetched once, then hit once). */
export async function runFamilyKubeMisses(models: number, log: (line: string) => void): Promise<KubeMissReport> {
  const tmp = await fsp.mkdtemp(join(tmpdir(), 'ferry-bench-kube-'));
  const s3 = await startTestS3(['models']);
  const double = await KubeApiDouble.start({
    images: { [IMAGE]: [process.execPath, FERRY_BIN] },
    baseEnv: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/', AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey },
  });
  const kubeconfig = join(tmp, 'kubeconfig.json');
  await fsp.writeFile(kubeconfig, double.kubeconfig(NS));
  const saved = process.env.KUBECONFIG;
  // The server's runtime reads its kubeconfig from the environment, as in a deployment.
  process.env.KUBECONFIG = kubeconfig;
  try {
    const token = 'bench_kube_admin_token_0123456789abcdef';
    const server = await startServer(compileServerConfig({
      port: 0, dataDir: join(tmp, 'data'), logLevel: 'error',
      runtime: { kind: 'kubernetes', namespace: NS, image: IMAGE },
      artifactStore: { kind: 's3', bucket: 'models', endpoint: s3.endpoint, forcePathStyle: true, ...S3RVER_CREDENTIALS },
    }), { adminToken: token });
    try {
      const client = new FerryClient({ url: server.url, token });
      const r = await client.bulkCreateModelVersions(Array.from({ length: models }, (_, i) => ({ name: `m-${i}`, content: familyFixture(i).build() })));
      if (r.failed > 0) throw new Error(`bulk registration failed for ${r.failed} models: ${JSON.stringify(r.results.find((x) => x.status !== 'READY'))}`);
      // One pod (provisioned concurrency 4 = the Small target), a 64 MiB cache.
      await client.createEndpoint('ads', { served_entities: [{ name: 'family', model_family: { name_prefix: 'm-', cache_size: '64MiB' }, min_provisioned_concurrency: 4, max_provisioned_concurrency: 4 }] });
      await client.waitForEndpoint('ads', { timeoutMs: 120_000 });
      const base = { url: server.url, token, endpoint: 'ads', durationS: 600, noHeader: false };
      // m-0 first: the pod's first load also pays the S3 client's and the evaluator's warm-up.
      await load({ ...base, concurrency: 1, maxRequests: 1, pick: { kind: 'fixed', model: 'm-0' } });
      const summary = (x: Awaited<ReturnType<typeof load>>): KubeMissReport['misses'] => ({
        requests: x.requests, errors: x.errors, firstError: x.firstError,
        p50Us: Math.round(percentile(x.latenciesUs, 50) ?? 0), p99Us: Math.round(percentile(x.latenciesUs, 99) ?? 0),
      });
      const misses = summary(await load({ ...base, concurrency: 1, maxRequests: models - 1, pick: { kind: 'sequence', from: 1 } }));
      log(`multi-kube: ${misses.requests} misses (pod fetching from s3rver): p50 ${misses.p50Us} µs, p99 ${misses.p99Us} µs, errors ${misses.errors}`);
      const hits = summary(await load({ ...base, concurrency: 1, maxRequests: models - 1, pick: { kind: 'sequence', from: 1 } }));
      log(`multi-kube: ${hits.requests} hits on the same pod: p50 ${hits.p50Us} µs, p99 ${hits.p99Us} µs, errors ${hits.errors}`);
      return { models, misses, hits };
    } finally {
      await server.close();
    }
  } finally {
    if (saved === undefined) delete process.env.KUBECONFIG;
    else process.env.KUBECONFIG = saved;
    await double.close();
    await s3.close();
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

/** The report's lines, as markdown. */
export function kubeMissMarkdown(k: KubeMissReport): string {
  return [
    '### Family on the Kubernetes runtime (bench/multi-kube.ts)', '',
    `${k.models} tiny models, one family pod on the Kubernetes API contract double, artifacts in s3rver; each model asked for once (a miss: the pod fetches the member from S3 and verifies its sha256), then again (a hit), one request at a time.`, '',
    '| phase | requests | p50 µs | p99 µs | errors |', '|---|---|---|---|---|',
    `| miss (fetch from S3) | ${k.misses.requests} | ${k.misses.p50Us} | ${k.misses.p99Us} | ${k.misses.errors} |`,
    `| hit | ${k.hits.requests} | ${k.hits.p50Us} | ${k.hits.p99Us} | ${k.hits.errors} |`, '',
  ].join('\n');
}
