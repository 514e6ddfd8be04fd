/**
 * The route fuzzer, shared by the suite (test/fuzz.test.ts, bounded) and `npm run fuzz`
 * (scripts/fuzz.ts, long): starts a real `ferry server` child with a served fixture model, reads
 * the route table from the code (`Router.list()`), sends seeded fast-check requests
 * (./fuzz-cases.ts) to every route over keep-alive HTTP, or a raw socket where the request is
 * malformed on purpose, with bounded concurrency, and checks every answer, the processes and the
 * server's memory. A finding prints its case id and the exact request; `npm run fuzz -- --seed S
 * --replay N` sends that one request again.
 */
import type { ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import fc from 'fast-check';
import { IRIS_COLUMNS, writeDemoModel } from '../../src/fixtures/index.js';
import { exclusionReason, judge, requestArb, type FuzzCase, type FuzzTarget, type Outcome, type RouteInfo } from './fuzz-cases.js';
import {
  ADMIN_TOKEN, ferryChildren, kill, Processes, registerVersion, replicaPids, request, startTestServer, tempDir, waitFor, waitSettled, withTempDir,
} from './index.js';

export { exclusionReason, judge, type FuzzCase, type Outcome } from './fuzz-cases.js';

export interface FuzzOptions {
  /** fast-check seed; the same seed and code send the same requests. */
  seed: number;
  /** Requests in the measured run. */
  cases: number;
  /** Stop the measured run after this long even if `cases` are not all sent. */
  durationMs?: number;
  /** Requests sent first (another seed) to warm the server up before the memory baseline. */
  warmupCases: number;
  /** Requests in flight at once. */
  concurrency: number;
  /** A request without an answer after this long is a finding. */
  timeoutMs: number;
  /** How far the server's RSS after the run may exceed its RSS after the warm-up. */
  rssToleranceBytes: number;
  /** Wait after the run before measuring memory and processes. */
  settleMs: number;
  log: (line: string) => void;
}

/** One finding: what was wrong, and the exact request to send again. */
export interface Finding {
  /** `<seed>:<index>`: `npm run fuzz -- --seed <seed> --replay <index>` sends it again. */
  id: string;
  problem: string;
  request: ReturnType<typeof describeCase>;
}

export interface Tally {
  cases: number;
  /** Requests that went over a raw socket (malformed method, target, headers or framing). */
  rawCases: number;
  /** Answers by status ("closed": no answer, "timeout"). */
  statuses: Map<string, number>;
  findingCount: number;
  /** The first findings, with their requests. */
  findings: Finding[];
  elapsedMs: number;
}

export interface FuzzReport {
  seed: number;
  routes: RouteInfo[];
  warmup: Tally;
  run: Tally;
  /** Server RSS after the fixture started, after the warm-up and after the run (settled). */
  rssStartBytes: number;
  rssWarmBytes: number;
  rssAfterBytes: number;
  /** `"level":"error"` lines the server logged during the runs (5xx stacks land there). */
  serverErrors: string[];
  /** Everything that makes the run fail; empty when it passes. */
  problems: string[];
}

/** Settings the suite and `npm run fuzz` share. */
export const FUZZ_DEFAULTS = {
  /** 8 in flight keeps both cores of a small machine busy without queueing in the gateway buffer. */
  concurrency: 8,
  /** Every route answers in milliseconds; 10 s without an answer is a hang, not a slow machine. */
  timeoutMs: 10_000,
  /**
   * Measured growth after the warm-up: 10-29 MiB in the suite (5k warm-up, 20k cases), 4 MiB with a
   * 20k warm-up and 100k cases: V8 grows its heap in steps and returns memory only after idle GCs,
   * so some growth is not a leak. 64 MiB is twice the worst seen; over a 500k-case campaign it
   * still catches a leak of ~130 bytes per request.
   */
  rssToleranceBytes: 64 * 2 ** 20,
  settleMs: 1000,
} as const;

/** Findings kept with their requests; the count goes on. */
const MAX_FINDINGS_KEPT = 20;
/** fast-check draws this many cases per sample call (each with its own derived seed). */
const CHUNK = 256;

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

interface FuzzServer {
  url: string;
  host: string;
  port: number;
  pid: number;
  dataDir: string;
  logFile: string;
  target: FuzzTarget;
  routes: RouteInfo[];
  close(): Promise<void>;
}

/**
 * The route table, from the code: an in-process server on a throw-away data directory (no warm
 * pool), read and closed. Only `method` and `pattern` are used.
 */
export async function routeTable(): Promise<RouteInfo[]> {
  return withTempDir(async (dir) => {
    const server = await startTestServer(dir, { warmPoolSize: 0 });
    try {
      return server.router.list().map(({ method, pattern }) => ({ method, pattern }));
    } finally {
      await server.close();
    }
  });
}

/**
 * Starts `ferry server` as a child on a temp data directory, registers the demo iris classifier
 * as `fuzz-iris` (and a decoy model whose only version failed registration) and serves it on the
 * endpoint `fuzz-ep`, pinned to one replica (min = max concurrency) so that autoscaling neither
 * adds nor retires replicas during the run.
 */
async function startFuzzServer(log: (line: string) => void): Promise<FuzzServer> {
  const routes = await routeTable();
  const dir = await tempDir('ferry-fuzz-');
  const dataDir = path.join(dir, 'data');
  const processes = new Processes();
  let server: ChildProcess | undefined;
  /** SIGTERM first, so that the server stops its replicas; SIGKILL whatever is left after 10 s. */
  const close = async (): Promise<void> => {
    const children = await ferryChildren(dataDir);
    if (server) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([kill(server, 'SIGTERM'), new Promise((r) => { timer = setTimeout(r, 10_000); })]);
      clearTimeout(timer);
    }
    await processes.killAll();
    await waitFor('replicas to exit with the server', () => (children.every((pid) => !alive(pid)) ? true : undefined), 15_000).catch(() => {
      for (const pid of children) if (alive(pid)) process.kill(pid, 'SIGKILL');
    });
    await fsp.rm(dir, { recursive: true, force: true });
  };
  try {
    const { child, url } = await processes.startServer(dataDir);
    server = child;
    const { hostname, port } = new URL(url);
    const t: FuzzTarget = {
      model: 'fuzz-iris', version: '1', endpoint: 'fuzz-ep', servedEntity: 'fuzz-iris-1', decoyModel: 'fuzz-decoy',
      inputName: 'x', columns: IRIS_COLUMNS, inputExample: undefined, adminToken: ADMIN_TOKEN,
    };
    await registerVersion(url, t.model, await writeDemoModel(path.join(dir, 'model')));
    await request({ url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name: t.decoyModel } });
    await request({ url, method: 'POST', path: '/api/2.0/mlflow/model-versions/create', json: { name: t.decoyModel, source: '/nonexistent-ferry-fuzz' } });
    const v = await request({ url, path: `/api/2.0/mlflow/model-versions/get?name=${t.model}&version=${t.version}` });
    t.inputExample = v.json?.model_version?.input_example;
    const inputName = v.json?.model_version?.signature?.inputs?.[0]?.name;
    if (typeof inputName === 'string') t.inputName = inputName;
    const created = await request({
      url, method: 'POST', path: '/api/2.0/serving-endpoints',
      json: { name: t.endpoint, config: { served_entities: [{ entity_name: t.model, entity_version: t.version, min_provisioned_concurrency: 4, max_provisioned_concurrency: 4 }] } },
    });
    if (created.status !== 200) throw new Error(`creating the fixture endpoint failed: ${created.text}`);
    const settled = await waitSettled(url, t.endpoint, 60_000);
    if (settled?.state?.ready !== 'READY') throw new Error(`the fixture endpoint is not READY: ${JSON.stringify(settled)}`);
    log(`fuzz: server pid ${child.pid} at ${url}, ${routes.length} routes, endpoint ${t.endpoint} READY`);
    return { url, host: hostname, port: Number(port), pid: child.pid ?? 0, dataDir, logFile: `${dataDir}.log`, target: t, routes, close };
  } catch (err) {
    await close();
    throw err;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function rssBytes(pid: number): Promise<number> {
  const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1] ?? NaN) * 1024;
}

// ---------------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------------

/** Framing headers and bytes for `c`. */
function frame(c: FuzzCase): { headers: Array<[string, string]>; bytes: Buffer } {
  const body = Buffer.from(c.body);
  const n = body.length;
  const chunked = n === 0 ? Buffer.from('0\r\n\r\n') : Buffer.concat([Buffer.from(`${n.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]);
  switch (c.framing) {
    case 'length': return { headers: [['content-length', String(n)]], bytes: body };
    case 'chunked': return { headers: [['transfer-encoding', 'chunked']], bytes: chunked };
    case 'length-short': return { headers: [['content-length', String(Math.floor(n / 2))]], bytes: body };
    // Odd lengths declare more than the body limit: refused before reading.
    case 'length-long': return { headers: [['content-length', String(n % 2 === 1 ? 2 ** 40 : n + 100)]], bytes: body };
    case 'length-and-chunked': return { headers: [['content-length', String(n)], ['transfer-encoding', 'chunked']], bytes: chunked };
    case 'length-invalid': return { headers: [['content-length', ['abc', '-1', '1.5', '0x10', '1,2', '99999999999999999999999', ''][n % 7]!]], bytes: body };
    case 'length-duplicate': return { headers: [['content-length', String(n)], ['content-length', String(n + 1)]], bytes: body };
    case 'chunked-invalid': return { headers: [['transfer-encoding', 'chunked']], bytes: Buffer.concat([Buffer.from('zz\r\n'), body, Buffer.from('\r\n0\r\n\r\n')]) };
  }
}

/** The server's default request-head limit (`maxHeaderSize`, Node's default too). */
const MAX_HEADER_BYTES = 16 * 1024;

/**
 * Whether the connection may close without an answer (see `judge`): requests Node's parser may
 * refuse, which it answers by writing 400/431 and closing at once. Where the client is still
 * sending (the rest of the head, a body), the close is a reset that can arrive before the answer
 * is read. So: sent raw, a target other than a plain path (not origin-form, bytes outside
 * printable ASCII), or a head over the limit.
 */
function mayClose(c: FuzzCase, raw: boolean): boolean {
  return raw || !/^\/[\x21-\x7e]*$/.test(c.target) || c.target.length + c.headers.reduce((n, [k, v]) => n + k.length + v.length + 4, 0) > MAX_HEADER_BYTES;
}

const STANDARD_METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'TRACE', 'PROPFIND', 'PURGE', 'M-SEARCH', 'SEARCH', 'QUERY']);

/**
 * Whether `c` needs a raw socket: malformed framing, repeated header names, or a method node:http
 * would change (it upper-cases) or handle specially (CONNECT). Anything else node:http refuses to
 * send (characters in the target or a header) is found when it throws.
 *
 * A request with an Upgrade header also gets a connection of its own: after one, Node's server
 * (no 'upgrade' listener, so it serves it as a plain request) leaves a following request whose
 * head is over the limit unanswered until `headersTimeout` (then 408), instead of answering 431 at
 * once. Measured with node 20.20 on a bare http.Server; the delay is bounded, and it is Node's,
 * so the fuzzer keeps such requests off the shared keep-alive sockets.
 */
function needsRawSocket(c: FuzzCase): boolean {
  if (c.framing !== 'length' && c.framing !== 'chunked') return true;
  if (!STANDARD_METHODS.has(c.method)) return true;
  const names = c.headers.map(([k]) => k.toLowerCase());
  return new Set(names).size !== names.length || names.includes('host') || names.includes('upgrade');
}

/** Sends `c` over the keep-alive agent. Throws synchronously where node:http refuses the request. */
function sendHttp(s: { host: string; port: number }, agent: http.Agent, c: FuzzCase, timeoutMs: number): Promise<Outcome> {
  const f = frame(c);
  const req = http.request({ host: s.host, port: s.port, method: c.method, path: c.target, agent, headers: Object.fromEntries([...c.headers, ...f.headers]) });
  return new Promise((resolve) => {
    let stage = 'connecting';
    const timer = setTimeout(() => { req.destroy(); resolve({ kind: 'timeout', stage }); }, timeoutMs);
    req.on('socket', (socket) => {
      if (!socket.connecting) stage = 'sending';
      else socket.once('connect', () => { stage = 'sending'; });
    });
    req.on('finish', () => { stage = 'waiting for the answer'; });
    req.on('response', (res) => {
      stage = `reading the body of a ${res.statusCode} answer`;
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => { clearTimeout(timer); resolve({ kind: 'answer', status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }); });
      res.on('error', (err) => { clearTimeout(timer); resolve({ kind: 'closed', error: err.message }); });
    });
    req.on('error', (err: NodeJS.ErrnoException) => { clearTimeout(timer); resolve({ kind: 'closed', error: err.code ?? err.message }); });
    req.end(f.bytes);
  });
}

/** Sends `c` as bytes on a fresh connection (`Connection: close`, then half-closed) and parses the first answer. */
function sendRaw(s: { host: string; port: number }, c: FuzzCase, timeoutMs: number): Promise<Outcome> {
  const f = frame(c);
  const headers = [...(c.headers.some(([k]) => k.toLowerCase() === 'host') ? [] : [['host', `${s.host}:${s.port}`]]), ['connection', 'close'], ...c.headers, ...f.headers];
  const head = Buffer.from(`${c.method} ${c.target} HTTP/1.1\r\n${headers.map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`, 'utf8');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect({ host: s.host, port: s.port });
    let stage = 'connecting';
    const timer = setTimeout(() => { socket.destroy(); resolve({ kind: 'timeout', stage: `${stage}, ${Buffer.concat(chunks).length} bytes received` }); }, timeoutMs);
    socket.on('connect', () => { stage = 'sending'; socket.end(Buffer.concat([head, f.bytes]), () => { stage = 'waiting for the answer'; }); });
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => undefined); // reset after the answer: what arrived is parsed on close
    socket.on('close', () => { clearTimeout(timer); resolve(parseRawAnswer(Buffer.concat(chunks))); });
  });
}

/**
 * The first final (non-1xx) HTTP response in `bytes`. Bodies are Content-Length framed: neither
 * Ferry nor Node's parser chunks an error.
 */
function parseRawAnswer(bytes: Buffer): Outcome {
  const end = bytes.indexOf('\r\n\r\n');
  const m = end === -1 ? null : /^HTTP\/1\.[01] (\d{3})/.exec(bytes.subarray(0, end).toString('latin1'));
  if (!m) return { kind: 'closed', error: bytes.length === 0 ? 'no bytes' : 'no complete response head' };
  const status = Number(m[1]);
  if (status < 200) return parseRawAnswer(bytes.subarray(end + 4)); // 100 Continue: the answer follows
  const headers: Record<string, string> = {};
  for (const line of bytes.subarray(0, end).toString('latin1').split('\r\n').slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  const length = headers['content-length'] === undefined ? undefined : Number(headers['content-length']);
  const body = bytes.subarray(end + 4, length === undefined ? undefined : end + 4 + length);
  return { kind: 'answer', status, headers, body: Buffer.from(body) };
}

/** Sends `c`; returns the outcome and whether it went over a raw socket. */
async function send(s: { host: string; port: number }, agent: http.Agent, c: FuzzCase, timeoutMs: number): Promise<{ outcome: Outcome; raw: boolean }> {
  if (!needsRawSocket(c)) {
    try {
      return { outcome: await sendHttp(s, agent, c, timeoutMs), raw: false };
    } catch {
      // node:http refused to send it (a character it does not allow): send the bytes as they are.
    }
  }
  return { outcome: await sendRaw(s, c, timeoutMs), raw: true };
}

/** A request as printable, replayable JSON. */
export function describeCase(c: FuzzCase): { route: string; method: string; target: string; headers: Array<[string, string]>; framing: string; body_utf8: string; body_base64: string } {
  const cut = (s: string): string => (s.length > 300 ? `${s.slice(0, 300)}…(${s.length} chars)` : s);
  return {
    route: c.route, method: c.method, target: cut(c.target), headers: c.headers.map(([k, v]) => [k, cut(v)]), framing: c.framing,
    body_utf8: cut(Buffer.from(c.body).toString('utf8')), body_base64: cut(Buffer.from(c.body).toString('base64')),
  };
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

/** Case `index` of a seed: cases are drawn in chunks of {@link CHUNK}, each chunk from a seed derived from `seed`. */
function caseSource(arb: fc.Arbitrary<FuzzCase>, seed: number): (index: number) => FuzzCase {
  let chunkIndex = -1;
  let chunk: FuzzCase[] = [];
  return (index) => {
    const ci = Math.floor(index / CHUNK);
    if (ci !== chunkIndex) {
      chunk = fc.sample(arb, { seed: (seed + ci * 7919) | 0, numRuns: CHUNK });
      chunkIndex = ci;
    }
    return chunk[index % CHUNK] as FuzzCase;
  };
}

async function runCases(s: FuzzServer, seed: number, opts: Pick<FuzzOptions, 'cases' | 'durationMs' | 'concurrency' | 'timeoutMs' | 'log'>): Promise<Tally> {
  const caseAt = caseSource(requestArb(s.routes, s.target), seed);
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.concurrency });
  const tally: Tally = { cases: 0, rawCases: 0, statuses: new Map(), findingCount: 0, findings: [], elapsedMs: 0 };
  const t0 = performance.now();
  const deadline = opts.durationMs === undefined ? Infinity : Date.now() + opts.durationMs;
  let next = 0;
  let lastProgress = Date.now();
  const worker = async (): Promise<void> => {
    while (next < opts.cases && Date.now() < deadline) {
      const index = next++;
      const c = caseAt(index);
      const { outcome, raw } = await send(s, agent, c, opts.timeoutMs);
      tally.cases++;
      if (raw) tally.rawCases++;
      const key = outcome.kind === 'answer' ? String(outcome.status) : outcome.kind;
      tally.statuses.set(key, (tally.statuses.get(key) ?? 0) + 1);
      const problem = judge(c, outcome, mayClose(c, raw));
      if (problem !== undefined) {
        tally.findingCount++;
        if (tally.findings.length < MAX_FINDINGS_KEPT) tally.findings.push({ id: `${seed}:${index}`, problem, request: describeCase(c) });
      }
      if (Date.now() - lastProgress > 10_000) {
        lastProgress = Date.now();
        const rss = await rssBytes(s.pid).catch(() => NaN);
        opts.log(`fuzz: ${tally.cases} cases, ${Math.round(tally.cases / ((performance.now() - t0) / 1000))}/s, ${tally.findingCount} findings, server RSS ${mib(rss)}`);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: opts.concurrency }, worker));
  } finally {
    agent.destroy();
  }
  tally.elapsedMs = performance.now() - t0;
  return tally;
}

/** Seed of the warm-up run: another stream than the measured run's. */
const warmupSeed = (seed: number): number => (seed ^ 0x5eed5eed) | 0;

/**
 * The whole campaign: server and fixture up, warm-up, baselines (RSS, replica and pool pids), the
 * measured run, settle, then the checks: every answer judged (see `judge`), the server and the
 * same replica and warm-pool processes alive, the fixture still served with the admin token, RSS
 * within `rssToleranceBytes` of the warm baseline. Always tears the server down.
 */
export async function fuzzRoutes(opts: FuzzOptions): Promise<FuzzReport> {
  const s = await startFuzzServer(opts.log);
  try {
    const problems: string[] = [];
    const rssStartBytes = await rssBytes(s.pid);
    const childrenBefore = (await ferryChildren(s.dataDir)).sort();
    const replicasBefore = (await replicaPids(s.dataDir)).sort();
    if (replicasBefore.length !== 1) problems.push(`expected 1 replica of the fixture endpoint, found ${replicasBefore.length}`);

    const warmup = await runCases(s, warmupSeed(opts.seed), { cases: opts.warmupCases, concurrency: opts.concurrency, timeoutMs: opts.timeoutMs, log: opts.log });
    await new Promise((r) => setTimeout(r, opts.settleMs));
    const rssWarmBytes = await rssBytes(s.pid);
    await fsp.writeFile(s.logFile, ''); // the run's errors only (the warm-up's findings are reported below)
    const run = await runCases(s, opts.seed, opts);
    await new Promise((r) => setTimeout(r, opts.settleMs));

    for (const [name, t] of [['warm-up', warmup], ['run', run]] as const) {
      if (t.findingCount > 0) problems.push(`${t.findingCount} finding(s) in the ${name} (seed ${name === 'run' ? opts.seed : warmupSeed(opts.seed)})`);
      for (const f of t.findings) problems.push(`finding ${f.id}${name === 'run' ? '' : ' (warm-up)'}: ${f.problem}\n  request: ${JSON.stringify(f.request)}`);
    }
    if (!alive(s.pid)) problems.push(`the server (pid ${s.pid}) died`);
    const childrenAfter = (await ferryChildren(s.dataDir)).sort();
    const replicasAfter = (await replicaPids(s.dataDir)).sort();
    if (replicasAfter.join() !== replicasBefore.join()) problems.push(`replica pids changed: ${replicasBefore.join(',')} → ${replicasAfter.join(',')}`);
    if (childrenAfter.join() !== childrenBefore.join()) problems.push(`replica and warm-pool pids changed: ${childrenBefore.join(',')} → ${childrenAfter.join(',')}`);
    const scored = await request({ url: s.url, method: 'POST', path: `/serving-endpoints/${s.target.endpoint}/invocations`, json: s.target.inputExample });
    if (scored.status !== 200) problems.push(`the fixture endpoint no longer answers with the admin token: ${scored.status} ${scored.text.slice(0, 200)}`);

    const rssAfterBytes = alive(s.pid) ? await rssBytes(s.pid) : NaN;
    if (!(rssAfterBytes <= rssWarmBytes + opts.rssToleranceBytes)) {
      problems.push(`server RSS ${mib(rssAfterBytes)} after the run, over ${mib(rssWarmBytes)} after the warm-up + ${mib(opts.rssToleranceBytes)} tolerance`);
    }
    const serverErrors = (await fsp.readFile(s.logFile, 'utf8').catch(() => '')).split('\n').filter((l) => l.includes('"level":"error"'));
    return { seed: opts.seed, routes: s.routes, warmup, run, rssStartBytes, rssWarmBytes, rssAfterBytes, serverErrors, problems };
  } finally {
    await s.close();
  }
}

/** Starts the fixture, sends case `index` of `seed` once and describes request and answer (the reproducer). */
export async function replayCase(seed: number, index: number, timeoutMs: number, log: (line: string) => void): Promise<{ problem: string | undefined; excluded: string | undefined }> {
  const s = await startFuzzServer(log);
  try {
    const c = caseSource(requestArb(s.routes, s.target), seed)(index);
    log(`request ${seed}:${index}: ${JSON.stringify(describeCase(c), null, 2)}`);
    const agent = new http.Agent({ keepAlive: true });
    const { outcome, raw } = await send(s, agent, c, timeoutMs);
    agent.destroy();
    log(`sent over ${raw ? 'a raw socket' : 'node:http'}; answer: ${outcome.kind === 'answer' ? `${outcome.status} ${JSON.stringify(outcome.headers)}\n${outcome.body.toString('utf8').slice(0, 4000)}` : JSON.stringify(outcome)}`);
    const errors = (await fsp.readFile(s.logFile, 'utf8').catch(() => '')).split('\n').filter((l) => l.includes('"level":"error"'));
    for (const e of errors) log(`server log: ${e}`);
    return { problem: judge(c, outcome, mayClose(c, raw)), excluded: exclusionReason(c, s.target) };
  } finally {
    await s.close();
  }
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** A few lines for a human: counts, statuses, rate, 5xx, memory, findings. */
export function formatReport(r: FuzzReport): string {
  const statuses = (t: Tally): string => [...t.statuses].sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `${k}:${n}`).join(' ');
  const fivexx = (t: Tally): number => [...t.statuses].filter(([k]) => /^5\d\d$/.test(k)).reduce((sum, [, n]) => sum + n, 0);
  const line = (name: string, t: Tally): string =>
    `${name}: ${t.cases} cases (${t.rawCases} raw) in ${(t.elapsedMs / 1000).toFixed(1)} s = ${Math.round(t.cases / (t.elapsedMs / 1000))}/s; 5xx ${fivexx(t)}; findings ${t.findingCount}\n  statuses ${statuses(t)}`;
  return [
    `fuzz seed ${r.seed}: ${r.routes.length} routes`,
    line('warm-up', r.warmup),
    line('run', r.run),
    `server RSS: start ${mib(r.rssStartBytes)}, after warm-up ${mib(r.rssWarmBytes)}, after run ${mib(r.rssAfterBytes)}`,
    `server error log lines during the run: ${r.serverErrors.length}${r.serverErrors.slice(0, 3).map((l) => `\n  ${l.slice(0, 1000)}`).join('')}`,
    r.problems.length === 0 ? 'result: PASS' : `result: FAIL\n${r.problems.map((p) => `- ${p}`).join('\n')}\nreplay one: npm run fuzz -- --seed <seed> --replay <index>`,
  ].join('\n');
}
