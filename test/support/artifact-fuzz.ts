/**
 * Fuzzing registration with hostile artifacts (docs/fuzzing.md, "Hostile artifacts"): seeded
 * random and structured mutations of ONNX, GGUF, MLmodel, transformers, input-example and tar
 * artifacts, each registered through the real API of a `ferry server` child (uploaded through the
 * artifact proxy, then `model-versions/create`; single-file ones through `bulk-create` too; tar
 * archives through `FerryClient.importModels`, the code of `ferry models import`). Checks per
 * case: no 5xx, and the version READY or FAILED_REGISTRATION with a non-empty reason. Checks per
 * run: the server and the fixture endpoint's replica alive with the same pids, the fixture still
 * answering 200, server RSS within a bound of its value after the warm-up cases.
 */
import { TAR_END, tarEntry } from '../../src/tar/index.js';
import type { ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { FerryClient } from '../../src/client/index.js';
import { familyFixture, linearFixture, writeDemoModel } from '../../src/fixtures/index.js';
import { ggufStringArray, lenField, onnxNodeBomb, varint } from './hostile.js';
import { ADMIN_TOKEN, kill, Processes, registerVersion, replicaPids, request, tempDir, waitSettled } from './index.js';
import { createPrng } from '../../src/fixtures/prng.js';

export interface ArtifactFuzzOptions {
  seed: number;
  cases: number;
  /** Cases run before the RSS baseline (the first registrations warm the server up). */
  warmupCases: number;
  /** How far server RSS after the run may exceed the baseline. */
  rssToleranceBytes: number;
  log: (line: string) => void;
}

export interface ArtifactFuzzReport {
  seed: number;
  cases: number;
  /** Versions by final status, and cases by generator. */
  ready: number;
  failed: number;
  byKind: Record<string, number>;
  rssWarmBytes: number;
  rssAfterBytes: number;
  problems: string[];
}

/** Default bounds; the suite and the campaign share them. */
export const ARTIFACT_FUZZ_DEFAULTS = { warmupCases: 20, rssToleranceBytes: 96 * 2 ** 20 } as const;

/** One artifact: files of a model directory (relative paths), or a tar archive for `ferry models import`. */
export type ArtifactCase =
  | { kind: string; files: Record<string, Buffer> }
  | { kind: string; tar: Buffer };

type Rand = () => number;
const int = (r: Rand, n: number): number => Math.floor(r() * n);
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[int(r, xs.length)] as T;

/** Random byte-level damage: flips, truncation, insertions of huge varints, duplication. */
function mutateBytes(r: Rand, b: Buffer): Buffer {
  const out = Buffer.from(b);
  switch (int(r, 5)) {
    case 0: { // flip bytes
      for (let i = 0, n = 1 + int(r, 8); i < n && out.length > 0; i++) out[int(r, out.length)] = int(r, 256);
      return out;
    }
    case 1: return out.subarray(0, int(r, out.length)); // truncate
    case 2: { // a huge declared length (or varint) spliced in
      const at = int(r, out.length + 1);
      const huge = pick(r, [varint(2 ** 31), varint(2 ** 50), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), Buffer.from([0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f])]);
      return Buffer.concat([out.subarray(0, at), huge, out.subarray(at)]);
    }
    case 3: { // duplicate a slice many times
      const start = int(r, out.length);
      const slice = out.subarray(start, start + 1 + int(r, 64));
      return Buffer.concat([out, ...Array.from({ length: 1 + int(r, 2000) }, () => slice)]);
    }
    default: return Buffer.from(Array.from({ length: int(r, 4096) }, () => int(r, 256))); // random bytes
  }
}

/** A graph input whose type nests `depth` sequence types (deep recursion in a protobuf decoder). */
function deepOnnx(depth: number): Buffer {
  // Built inside out with the headers collected, so the bytes are copied once (not once per level).
  const inner = lenField(1, Buffer.from([0x08, 0x01])); // TypeProto.tensor_type { elem_type: FLOAT }
  const heads: Buffer[] = [];
  let len = inner.length;
  for (let i = 0; i < depth; i++) {
    for (const field of [1, 4]) { // Sequence.elem_type, then TypeProto.sequence_type
      const head = Buffer.concat([varint(field * 8 + 2), varint(len)]);
      heads.push(head);
      len += head.length;
    }
  }
  const type = Buffer.concat([...heads.reverse(), inner]);
  const input = Buffer.concat([lenField(1, Buffer.from('x')), lenField(2, type)]);
  const output = Buffer.concat([lenField(1, Buffer.from('y')), lenField(2, lenField(1, Buffer.from([0x08, 0x01])))]);
  return Buffer.concat([Buffer.from([0x08, 8]), lenField(7, Buffer.concat([lenField(11, input), lenField(12, output)]))]);
}

/** YAML that is hostile to a parser: alias expansion, deep nesting, huge scalars, paths outside. */
function hostileMlmodel(r: Rand): string {
  switch (int(r, 6)) {
    case 0: { // billion laughs
      const lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
      for (let i = 1; i < 10; i++) lines.push(`a${i}: &a${i} [${Array.from({ length: 9 }, () => `*a${i - 1}`).join(',')}]`);
      return `${lines.join('\n')}\nflavors: *a9\n`;
    }
    case 1: return `flavors: ${'['.repeat(1000 + int(r, 50_000))}\n`;
    case 2: return `flavors:\n  onnx:\n    data: ${pick(r, ['../../../../etc/passwd', '/etc/passwd', 'model.onnx\\u0000', '..', '', 'a/../../b'])}\n`;
    case 3: return `flavors:\n  onnx:\n    data: model.onnx\nsaved_input_example_info:\n  artifact_path: ${pick(r, ['../secret.json', '/etc/passwd', 'input_example.json'])}\n`;
    case 4: return `flavors: {onnx: {data: ${'x'.repeat(int(r, 100_000))}}}\n`;
    default: return Buffer.from(Array.from({ length: int(r, 2048) }, () => int(r, 256))).toString('latin1');
  }
}

/** A tar header block for `name` declaring `size` bytes. */
function tarHeader(name: string, size: number, type = '0'): Buffer {
  const h = Buffer.alloc(512);
  h.write(name.slice(0, 100), 0, 'utf8');
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(`${size.toString(8).padStart(11, '0').slice(-11)}\0`, 124);
  h.write('00000000000\0', 136);
  h.write(type, 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  h.fill(' ', 148, 156);
  const sum = h.reduce((a, b) => a + b, 0);
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return h;
}

function tarOf(entries: Array<{ name: string; content: Buffer; size?: number; type?: string }>): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    parts.push(tarHeader(e.name, e.size ?? e.content.length, e.type), e.content, Buffer.alloc((512 - (e.content.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** The generators, drawn uniformly. */
export const ARTIFACT_KINDS = [
  'onnx-valid', 'onnx-mutated', 'onnx-node-bomb', 'onnx-deep', 'onnx-huge-length', 'gguf-valid', 'gguf-mutated', 'gguf-huge-count', 'gguf-memory',
  'mlmodel', 'transformers', 'ferry-json', 'input-example', 'tar',
] as const;
export type ArtifactKind = (typeof ARTIFACT_KINDS)[number];

/** The `index`-th case of `seed`: a generator drawn uniformly, then its own random choices. */
export function artifactCase(seed: number, index: number): ArtifactCase {
  const r = caseRand(seed, index);
  const kind = pick(r, ARTIFACT_KINDS);
  const onnx = (): Buffer => (r() < 0.5 ? Buffer.from(linearFixture.build()) : Buffer.from(familyFixture(int(r, 50)).build()));
  const generators: Record<ArtifactKind, () => ArtifactCase> = {
    'onnx-valid': () => ({ kind: 'onnx-valid', files: { 'model.onnx': onnx() } }),
    'onnx-mutated': () => ({ kind: 'onnx-mutated', files: { 'model.onnx': mutateBytes(r, onnx()) } }),
    'onnx-node-bomb': () => ({ kind: 'onnx-node-bomb', files: { 'model.onnx': onnxNodeBomb(pick(r, [1000, 100_000, 1_000_001, 2_000_000])) } }),
    'onnx-deep': () => ({ kind: 'onnx-deep', files: { 'model.onnx': deepOnnx(pick(r, [10, 1000, 20_000])) } }),
    'onnx-huge-length': () => ({ kind: 'onnx-huge-length', files: { 'model.onnx': Buffer.concat([Buffer.from([0x08, 8, 0x3a]), varint(pick(r, [2 ** 32, 2 ** 45, 2 ** 53 - 1])), Buffer.alloc(16)]) } }),
    'gguf-valid': () => ({ kind: 'gguf-valid', files: { 'model.gguf': ggufStringArray(int(r, 1000), 1 + int(r, 8)) } }),
    'gguf-mutated': () => ({ kind: 'gguf-mutated', files: { 'model.gguf': mutateBytes(r, ggufStringArray(100 + int(r, 100), 4)) } }),
    'gguf-huge-count': () => {
      const b = ggufStringArray(8, 4);
      // Header: magic, version, tensor count (offset 8), kv count (offset 16); then keys.
      const at = pick(r, [8, 16, 24, 24 + 8 + 20 + 4]);
      b.writeBigUInt64LE(pick(r, [2n ** 63n, 2n ** 40n, 2n ** 64n - 1n, 70_000n]), Math.min(at, b.length - 8));
      return { kind: 'gguf-huge-count', files: { 'model.gguf': b } };
    },
    'gguf-memory': () => ({ kind: 'gguf-memory', files: { 'model.gguf': ggufStringArray(pick(r, [8, 40]), 4 * 2 ** 20) } }),
    mlmodel: () => ({ kind: 'mlmodel', files: { MLmodel: Buffer.from(hostileMlmodel(r)), 'model.onnx': onnx() } }),
    transformers: () => ({
      kind: 'transformers',
      files: {
        'config.json': pick(r, [Buffer.from(`{"a":${'['.repeat(100_000)}`), Buffer.from('{"architectures":["BertForSequenceClassification"],"id2label":{"0":"A"}}'), mutateBytes(r, Buffer.from('{"architectures":["BertModel"]}'))]),
        'tokenizer.json': Buffer.from('{}'),
        'tokenizer_config.json': Buffer.from('{}'),
        'onnx/model.onnx': r() < 0.5 ? onnxNodeBomb(1_500_000) : mutateBytes(r, onnx()),
      },
    }),
    'ferry-json': () => ({
      kind: 'ferry-json',
      files: {
        'ferry.json': pick(r, [Buffer.from(`{"flavor":"onnx","main":"${pick(r, ['../x.onnx', '/etc/passwd', 'model.onnx', 'a'.repeat(5000)])}"}`), Buffer.from('{"flavor":"__proto__"}'), Buffer.from(`[${'1,'.repeat(500_000)}1]`), mutateBytes(r, Buffer.from('{"flavor":"js","signature":{"inputs":[],"outputs":[]}}'))]),
        'model.onnx': onnx(),
      },
    }),
    'input-example': () => ({
      kind: 'input-example',
      files: {
        'model.onnx': Buffer.from(linearFixture.build()),
        'input_example.json': pick(r, [Buffer.from(`{"inputs":${'['.repeat(50_000)}`), Buffer.from(`{"inputs":[${'[0,0,0,0],'.repeat(90_000)}[0,0,0,0]]}`), Buffer.from('{"columns":["a"],"data":[[1e400]]}'), mutateBytes(r, Buffer.from('{"inputs":[[1,2,3,4]]}'))]),
      },
    }),
    tar: () => {
      const good = { name: `tar-${int(r, 1000)}.onnx`, content: onnx() };
      const entries = pick(r, [
        [good],
        [{ name: 'bomb.onnx', content: Buffer.alloc(0), size: 8 * 2 ** 30 }],
        [good, { name: 'x.onnx', content: onnxNodeBomb(1_100_000) }],
        [{ name: 'L', content: Buffer.from('a'.repeat(300)), type: 'L' }, good],
        [{ name: 'skip.bin', content: Buffer.alloc(4096) }, good],
      ]);
      const tar = tarOf(entries);
      return { kind: 'tar', tar: r() < 0.3 ? mutateBytes(r, tar) : tar };
    },
  };
  return generators[kind]();
}

/** The kind of case `index` of `seed` (the first draw of its PRNG), without building it. */
export function artifactKind(seed: number, index: number): ArtifactKind {
  return pick(caseRand(seed, index), ARTIFACT_KINDS);
}

function caseRand(seed: number, index: number): Rand {
  return createPrng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
}

interface Server {
  child: ChildProcess;
  url: string;
  dataDir: string;
}

async function rssBytes(pid: number): Promise<number> {
  const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1] ?? NaN) * 1024;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * Registers case `index` and returns the problem, if any, and the final statuses seen.
 * `dir` is a scratch directory for tar archives.
 */
async function runCase(s: Server, dir: string, seed: number, index: number): Promise<{ kind: string; statuses: string[]; problem: string | undefined }> {
  const c = artifactCase(seed, index);
  const statuses: string[] = [];
  const checkVersion = (where: string, status: number, text: string, v: { status?: string; status_message?: string } | undefined): string | undefined => {
    if (status >= 500) return `${where}: ${status} ${text.slice(0, 300)}`;
    if (status !== 200) return undefined; // a 4xx on the request itself (e.g. a body over the limit) is a clear refusal
    if (v?.status === 'READY') statuses.push('READY');
    else if (v?.status === 'FAILED_REGISTRATION' && (v.status_message ?? '') !== '') statuses.push('FAILED_REGISTRATION');
    else return `${where}: version ended ${JSON.stringify(v)}`;
    return undefined;
  };
  const name = `art-${seed >>> 0}-${index}`;
  if ('tar' in c) {
    const file = path.join(dir, `${name}.tar`);
    await fsp.writeFile(file, c.tar);
    const client = new FerryClient({ url: s.url, token: ADMIN_TOKEN });
    try {
      const r = await client.importModels(file);
      for (const x of r.results) statuses.push(x.status);
    } catch (err) {
      // A clear refusal of the archive (or an API error) is fine; a 5xx is not.
      const status = (err as { status?: number }).status;
      if (status !== undefined && status >= 500) return { kind: c.kind, statuses, problem: `import: ${status} ${(err as Error).message}` };
    } finally {
      await fsp.rm(file, { force: true });
    }
    return { kind: c.kind, statuses, problem: undefined };
  }
  for (const [file, bytes] of Object.entries(c.files)) {
    const put = await request({ url: s.url, method: 'PUT', path: `/api/2.0/mlflow-artifacts/artifacts/${name}/${file}`, body: bytes });
    if (put.status >= 500) return { kind: c.kind, statuses, problem: `upload ${file}: ${put.status} ${put.text.slice(0, 300)}` };
  }
  await request({ url: s.url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name } });
  const created = await request({ url: s.url, method: 'POST', path: '/api/2.0/mlflow/model-versions/create', json: { name, source: `mlflow-artifacts:/${name}` } });
  let problem = checkVersion('create', created.status, created.text, created.json?.model_version);
  const single = Object.entries(c.files);
  // bulk-create carries files in JSON: the small ones (a memory bomb of 160 MiB goes through create only).
  if (problem === undefined && single.length === 1 && (single[0]?.[1].length ?? 0) <= 8 * 2 ** 20) {
    const [file, bytes] = single[0] as [string, Buffer];
    const bulk = await request({ url: s.url, method: 'POST', path: '/api/2.0/mlflow/model-versions/bulk-create', json: { models: [{ name: `${name}-bulk`, file, content_base64: bytes.toString('base64') }] } });
    if (bulk.status >= 500) problem = `bulk-create: ${bulk.status} ${bulk.text.slice(0, 300)}`;
    else if (bulk.status === 200) {
      const x = bulk.json?.results?.[0];
      if (x?.status === 'READY' || (x?.status === 'FAILED_REGISTRATION' && typeof x.message === 'string' && x.message !== '')) statuses.push(x.status);
      else problem = `bulk-create: result ${JSON.stringify(x)}`;
    }
    // The same file as a tar body (application/x-tar, <name>/<file>).
    const tar = await request({ url: s.url, method: 'POST', path: '/api/2.0/mlflow/model-versions/bulk-create', headers: { 'content-type': 'application/x-tar' }, body: Buffer.concat([...tarEntry(`${name}-tar/${file}`, bytes), TAR_END]) });
    if (problem === undefined && tar.status >= 500) problem = `bulk-create (tar): ${tar.status} ${tar.text.slice(0, 300)}`;
    else if (problem === undefined && tar.status === 200) {
      const x = tar.json?.results?.[0];
      if (x?.status === 'READY' || (x?.status === 'FAILED_REGISTRATION' && typeof x.message === 'string' && x.message !== '')) statuses.push(x.status);
      else problem = `bulk-create (tar): result ${JSON.stringify(x)}`;
    }
  }
  return { kind: c.kind, statuses, problem };
}

/**
 * The campaign: a server child (inspector memory limit 128 MiB, to keep memory bombs small), a
 * fixture endpoint, warm-up cases, the RSS baseline and the pids, then the cases, then the checks.
 * Always tears the server down.
 */
export async function fuzzArtifacts(opts: ArtifactFuzzOptions): Promise<ArtifactFuzzReport> {
  const dir = await tempDir('ferry-artifact-fuzz-');
  const processes = new Processes();
  const dataDir = path.join(dir, 'data');
  try {
    const configFile = path.join(dir, 'config.json');
    await fsp.writeFile(configFile, JSON.stringify({ warmPoolSize: 0, inspectorMemoryLimit: '128MiB', maxBodySize: '32MiB' }));
    const { child, url } = await processes.startServer(dataDir, {}, ['--config', configFile]);
    const s: Server = { child, url, dataDir };
    const pid = child.pid as number;
    await registerVersion(url, 'art-fixture', await writeDemoModel(path.join(dir, 'fixture')));
    const created = await request({ url, method: 'POST', path: '/api/2.0/serving-endpoints', json: { name: 'art-ep', config: { served_entities: [{ entity_name: 'art-fixture', entity_version: '1', min_provisioned_concurrency: 4, max_provisioned_concurrency: 4 }] } } });
    if (created.status !== 200) throw new Error(`creating the fixture endpoint failed: ${created.text}`);
    if ((await waitSettled(url, 'art-ep', 60_000))?.state?.ready !== 'READY') throw new Error('the fixture endpoint is not READY');
    const example = (await request({ url, path: '/api/2.0/mlflow/model-versions/get?name=art-fixture&version=1' })).json?.model_version?.input_example;
    const problems: string[] = [];
    const byKind: Record<string, number> = {};
    let ready = 0;
    let failed = 0;
    const run = async (from: number, to: number): Promise<void> => {
      for (let i = from; i < to; i++) {
        const r = await runCase(s, dir, opts.seed, i).catch((err: unknown) => ({ kind: 'error', statuses: [], problem: `case threw: ${String(err)}` }));
        byKind[r.kind] = (byKind[r.kind] ?? 0) + 1;
        for (const st of r.statuses) if (st === 'READY') ready++; else failed++;
        if (r.problem !== undefined) problems.push(`case ${i} (${r.kind}, seed ${opts.seed}): ${r.problem}`);
        if ((i + 1) % 100 === 0) opts.log(`artifact fuzz: ${i + 1} cases, ${problems.length} problems, server RSS ${((await rssBytes(pid)) / 2 ** 20).toFixed(0)} MiB`);
        if (!alive(pid)) {
          problems.push(`the server died at case ${i} (${r.kind})`);
          return;
        }
      }
    };
    const warmup = Math.min(opts.warmupCases, opts.cases);
    await run(0, warmup);
    const rssWarmBytes = await rssBytes(pid);
    const replicas = await replicaPids(dataDir, 'art-ep');
    await run(warmup, opts.cases);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const rssAfterBytes = alive(pid) ? await rssBytes(pid) : NaN;
    if (!(rssAfterBytes <= rssWarmBytes + opts.rssToleranceBytes)) problems.push(`server RSS ${rssAfterBytes} after the run, over ${rssWarmBytes} + ${opts.rssToleranceBytes}`);
    const replicasAfter = await replicaPids(dataDir, 'art-ep');
    if (replicas.length === 0 || replicas.join() !== replicasAfter.join()) problems.push(`the fixture's replicas changed: ${replicas.join()} → ${replicasAfter.join()}`);
    const scored = await request({ url, method: 'POST', path: '/serving-endpoints/art-ep/invocations', json: example });
    if (scored.status !== 200) problems.push(`the fixture endpoint answered ${scored.status} after the run: ${scored.text.slice(0, 300)}`);
    await kill(child, 'SIGTERM');
    return { seed: opts.seed, cases: opts.cases, ready, failed, byKind, rssWarmBytes, rssAfterBytes, problems };
  } finally {
    await processes.killAll();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

export function formatArtifactReport(r: ArtifactFuzzReport): string {
  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`;
  return [
    `artifact fuzz: seed ${r.seed}, ${r.cases} cases (${Object.entries(r.byKind).sort().map(([k, n]) => `${k} ${n}`).join(', ')})`,
    `versions: ${r.ready} READY, ${r.failed} FAILED_REGISTRATION with a reason`,
    `server RSS: after warm-up ${mib(r.rssWarmBytes)}, after run ${mib(r.rssAfterBytes)}`,
    r.problems.length === 0 ? 'no findings' : `${r.problems.length} findings:\n  ${r.problems.slice(0, 50).join('\n  ')}`,
  ].join('\n');
}
