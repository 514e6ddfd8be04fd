/**
 * Artifact inspection outside the server's heap. Parsing an uploaded artifact (ONNX protobuf,
 * GGUF header, transformers JSON, MLmodel YAML, ferry.json, input_example.json) is the one place
 * where hostile bytes meet Ferry's own parsers; it happens in a separate inspector process
 * (inspector-main.ts), never in the server: an ONNX file of 6 million empty nodes once grew the
 * server by ~1 GB and stalled it for 4 s. A worker thread would not do: Buffers and native memory
 * are outside its resourceLimits, and its crash can take the process with it.
 *
 * Limits, each ending that one artifact's registration with FAILED_REGISTRATION and a reason:
 * - memory: V8 heap limited to `memoryLimitBytes` (--max-old-space-size), and the process is killed
 *   when its resident memory passes the same bound (polled every 50 ms);
 * - time: `timeoutMs` per frame (wall clock, from the start of its inspection to its answers): a
 *   batch past it is retried one artifact per frame, each with the whole limit;
 * - counts: the parsers refuse counts past their bounds before allocating (ONNX_LIMITS, the GGUF
 *   reader's), so a real limit hit is rare;
 * - rights: Node's permission model: the process reads only Ferry's code and `readRoots` (the
 *   artifact store's local directories); it cannot write, start processes, load addons or
 *   start workers. Its environment is empty.
 * - channel: length-prefixed JSON frames on its stdin/stdout (inspector-frames.ts), each bounded,
 *   and every answer checked against a schema; anything else kills the process.
 *
 * A pool of `processes` long-lived processes, each inspecting one artifact at a time, in the order
 * sent (up to WINDOW frames sent ahead). A frame carries a batch of up to INSPECT_BATCH artifacts
 * (`inspectMany`, for bulk registration: one pipe write and one wake-up per batch rather than per
 * artifact); the process writes the batch's answers together, one frame per artifact. When a
 * process dies (crash, memory or time limit) with a frame in progress, the artifact that killed it
 * is known only for a frame of one: that one fails. A batch's unanswered artifacts go back to the
 * front of the queue one per frame, so the culprit kills a fresh process alone and fails alone
 * (one more process start per hostile artifact); the frames it had not started go back unharmed.
 * A dead or killed process is replaced at the next request. Requests wait in a FIFO only as long
 * as their callers do: registration calls are bounded by the API (bulk-create: 10,000).
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import fs from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { FerryError, type ErrorCode, ERROR_TABLE } from '../errors.js';
import { ferryCodePaths, residentBytes } from '../runtime/index.js';
import { DTYPES } from '../tensor/index.js';
import type { Inspection } from './inspect.js';
import { encodeFrame, FrameReader, MAX_INSPECTOR_ATTACHMENT_BYTES, type Frame } from './inspector-frames.js';
import { FLAVOR_NAMES } from '../flavors/index.js';

export interface InspectorOptions {
  /** The inspector's V8 heap limit and resident-memory bound (e.g. 256 MiB). */
  memoryLimitBytes: number;
  /** Longest one inspection may take. */
  timeoutMs: number;
  /** Directories (and everything under them) the inspector may read: where artifacts are inspected. */
  readRoots: readonly string[];
  /** Inspector processes (each inspects one artifact at a time). */
  processes?: number;
}

/** Inspector processes by default: two keep bulk registration's throughput (docs/multi-model.md). */
const DEFAULT_PROCESSES = 2;
/** How often a busy inspector's resident memory is read. */
const RSS_POLL_MS = 50;
/** Bytes of an inspector's stderr kept, for the reason of a crash (V8's "heap out of memory"). */
const STDERR_TAIL_BYTES = 4096;

const MAIN = fileURLToPath(new URL('./inspector-main.js', import.meta.url));

const mib = (bytes: number): number => Math.floor(bytes / (1024 * 1024));

const tensorSpec = z.strictObject({
  name: z.string(),
  dtype: z.enum(DTYPES),
  shape: z.array(z.number().int().min(-1)).optional(),
}).transform((s) => ({ name: s.name, dtype: s.dtype, shape: s.shape }));
const rowSpec = z.strictObject({ name: z.string(), dtype: z.enum(['map', 'json']) }).transform((s) => ({ name: s.name, dtype: s.dtype, shape: undefined }));
/** What an inspector may answer; anything else is a broken inspector, killed. */
const answerSchema = z.union([
  z.strictObject({
    id: z.number().int(),
    index: z.number().int(),
    ok: z.literal(true),
    inspection: z.strictObject({
      flavor: z.enum(FLAVOR_NAMES),
      modelFile: z.string(),
      signature: z.strictObject({ inputs: z.array(tensorSpec), outputs: z.array(z.union([tensorSpec, rowSpec])) }),
      inputExample: z.unknown().optional(),
    }).transform((i) => ({ ...i, inputExample: i.inputExample })),
  }),
  z.strictObject({ id: z.number().int(), index: z.number().int(), ok: z.literal(false), code: z.string().refine((c) => c in ERROR_TABLE), message: z.string() }),
]);

/** One artifact's outcome in `inspectMany`: its inspection, or the error that is its version's status message. */
export type InspectionResult = { ok: true; inspection: Inspection } | { ok: false; error: FerryError };

/** Artifacts inspected per frame by `inspectMany` and `inspectFiles`. */
export const INSPECT_BATCH = 64;
/** Most bytes of models held in memory sent in one frame by `inspectFiles` (a bigger model goes alone). */
const BATCH_BYTES = 4 * 1024 * 1024;

/** One artifact to inspect: a directory, or a one-file model held in memory (bulk registration). */
type Item = { dir: string } | { file: string; content: Uint8Array };

/** A frame's worth of artifacts; `settle` is called once per artifact, with its index in `items`. */
interface Job {
  items: Item[];
  settle: (index: number, result: InspectionResult) => void;
}

const shuttingDown = (): FerryError => new FerryError('TEMPORARILY_UNAVAILABLE', 'The server is shutting down; register the version again.');

export class Inspector {
  /** Requests not yet sent to a process (those a dead process had not started come back to the front). */
  private readonly queue: Job[] = [];
  private readonly processes: InspectorProcess[] = [];
  private closed = false;

  constructor(o: InspectorOptions) {
    const count = o.processes ?? DEFAULT_PROCESSES;
    for (let i = 0; i < count; i++) this.processes.push(new InspectorProcess(o, () => this.pump()));
  }

  /** Inspects the artifact directory `dir`; rejects with a FerryError whose message is the version's status message. */
  async inspect(dir: string): Promise<Inspection> {
    const [r] = await this.inspectMany([dir]);
    if (r === undefined) throw shuttingDown();
    if (!r.ok) throw r.error;
    return r.inspection;
  }

  /**
   * Inspects many artifact directories, INSPECT_BATCH per frame; never rejects: each artifact has
   * its own result, in the order of `dirs`. A hostile artifact fails only itself.
   */
  inspectMany(dirs: readonly string[]): Promise<InspectionResult[]> {
    return this.enqueue(dirs.map((dir) => ({ dir })));
  }

  /**
   * Inspects one-file models held in memory (`inspectFile`: ONNX or XGBoost), sent in the frames
   * themselves, INSPECT_BATCH (and at most BATCH_BYTES) per frame: nothing is written or read
   * from disk. As `inspectMany` otherwise.
   */
  async inspectFiles(files: ReadonlyArray<{ file: string; content: Uint8Array }>): Promise<InspectionResult[]> {
    const fits = files.filter((f) => f.content.byteLength <= MAX_INSPECTOR_ATTACHMENT_BYTES);
    const inspected = await this.enqueue(fits.map(({ file, content }) => ({ file, content })));
    let next = 0;
    return files.map((f) => (f.content.byteLength <= MAX_INSPECTOR_ATTACHMENT_BYTES ? inspected[next++] as InspectionResult : {
      ok: false,
      error: new FerryError('INVALID_PARAMETER_VALUE', `The model file '${f.file}' is ${f.content.byteLength} bytes; bulk registration inspects at most ${MAX_INSPECTOR_ATTACHMENT_BYTES} per model: register it alone (ferry models register, or model-versions/create).`),
    }));
  }

  private enqueue(items: Item[]): Promise<InspectionResult[]> {
    const results = new Array<InspectionResult>(items.length);
    if (this.closed) return Promise.resolve(results.fill({ ok: false, error: shuttingDown() }));
    return new Promise<InspectionResult[]>((resolve) => {
      let left = items.length;
      if (left === 0) resolve(results);
      for (let from = 0; from < items.length;) {
        let to = from + 1;
        let bytes = itemBytes(items[from] as Item);
        while (to < items.length && to - from < INSPECT_BATCH && bytes + itemBytes(items[to] as Item) <= BATCH_BYTES) bytes += itemBytes(items[to++] as Item);
        const first = from;
        this.queue.push({
          items: items.slice(from, to),
          settle: (index, result) => {
            results[first + index] = result;
            if (--left === 0) resolve(results);
          },
        });
        from = to;
      }
      this.pump();
    });
  }

  /** Hands queued requests to the processes with room, least loaded first. */
  private pump(): void {
    if (this.closed) return;
    for (;;) {
      const job = this.queue[0];
      if (job === undefined) return;
      let best: InspectorProcess | undefined;
      for (const p of this.processes) if (p.room() > 0 && (best === undefined || p.room() > best.room())) best = p;
      if (best === undefined) return;
      this.queue.shift();
      best.send(job, (unstarted) => {
        this.queue.unshift(...unstarted);
      });
    }
  }

  /** Stops the processes; queued requests fail. */
  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.queue.splice(0)) job.items.forEach((_d, i) => job.settle(i, { ok: false, error: shuttingDown() }));
    await Promise.all(this.processes.map((p) => p.stop()));
  }
}

/** Why an inspector process stopped answering, as the version's status message says it. */
type Failure = { kind: 'memory' } | { kind: 'timeout' } | { kind: 'protocol'; detail: string };

/** A frame sent to a process: answered in order, since the process inspects one at a time. */
interface Sent extends Job {
  id: number;
  /** How many of `items` are answered (answers come in order). */
  answered: number;
  /** Where the requests this process had not finished go when it dies. */
  requeue: (jobs: Job[]) => void;
}

/** One started inspector process and what the server knows of it. */
interface Started {
  child: ChildProcessByStdio<Writable, Readable, Readable>;
  exited: Promise<void>;
  /** Requests sent and not answered, oldest (the one being inspected) first. */
  inflight: Sent[];
  /** Set when the server kills it, to say why. */
  failure: Failure | undefined;
  stderrTail: string;
  /** The time limit of the request at the head of `inflight`, and the memory poll while any is. */
  timer: NodeJS.Timeout | undefined;
  poll: NodeJS.Timeout | undefined;
}

/**
 * Requests sent ahead to one process: it inspects them one after another, so the one it works on
 * is always the oldest unanswered; sending ahead saves a round trip per artifact (on a loaded
 * 2-core machine, waking the process per request halved bulk registration's rate).
 */
const WINDOW = 8;

/** One inspector process slot: started on demand, replaced after it dies. */
class InspectorProcess {
  private started: Started | undefined;
  private nextId = 1;

  constructor(private readonly options: InspectorOptions, private readonly wake: () => void) {}

  /**
   * How many more requests this slot takes now: WINDOW frames, and no more once the model bytes
   * sent ahead (bulk registration's attachments) reach a quarter of its memory limit, so what
   * waits in its pipe and heap cannot by itself push it over the limit.
   */
  room(): number {
    const inflight = this.started?.inflight ?? [];
    const bytes = inflight.reduce((n, sent) => n + sent.items.reduce((m, i) => m + itemBytes(i), 0), 0);
    return bytes >= this.options.memoryLimitBytes / 4 ? 0 : WINDOW - inflight.length;
  }

  send(job: Job, requeue: (jobs: Job[]) => void): void {
    const on = this.started ?? this.spawn();
    const sent: Sent = { ...job, id: this.nextId++, answered: 0, requeue };
    on.inflight.push(sent);
    if (on.inflight.length === 1) this.headStarted(on);
    const files = sent.items.flatMap((i) => ('content' in i ? [i.content] : []));
    on.child.stdin.write(encodeFrame({ id: sent.id, items: sent.items.map((i) => ('dir' in i ? { dir: i.dir } : { file: i.file, size: i.content.byteLength })) }, files));
  }

  /** The head of `on.inflight` is being inspected from now: its time limit starts. */
  private headStarted(on: Started): void {
    clearTimeout(on.timer);
    on.timer = setTimeout(() => this.kill(on, { kind: 'timeout' }), this.options.timeoutMs);
    on.poll ??= setInterval(() => void this.checkMemory(on), RSS_POLL_MS);
  }

  private spawn(): Started {
    const reads = new Set([...ferryCodePaths(), ...this.options.readRoots.flatMap(realAndGiven)]);
    const child = spawn(process.execPath, [
      `--max-old-space-size=${Math.max(16, mib(this.options.memoryLimitBytes))}`,
      '--experimental-permission', '--disable-warning=ExperimentalWarning',
      ...[...reads].map((p) => `--allow-fs-read=${p}`),
      MAIN,
    ], { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
    const started: Started = { child, exited: Promise.resolve(), inflight: [], failure: undefined, stderrTail: '', timer: undefined, poll: undefined };
    this.started = started;
    const reader = new FrameReader(0);
    child.stdout.on('data', (chunk: Buffer) => {
      if (started.failure !== undefined) return; // being killed: nothing it says counts
      let frames: Frame[];
      try {
        frames = reader.push(chunk);
      } catch (err) {
        return this.kill(started, { kind: 'protocol', detail: (err as Error).message });
      }
      for (const frame of frames) this.onAnswer(started, frame.message);
      this.wake();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      started.stderrTail = (started.stderrTail + chunk.toString('utf8')).slice(-STDERR_TAIL_BYTES);
    });
    // A write to a process that just died fails with EPIPE; its exit reports the failure.
    child.stdin.on('error', () => undefined);
    started.exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        if (this.started === started) this.started = undefined;
        this.idle(started);
        const [head, ...unstarted] = started.inflight.splice(0);
        const back: Job[] = unstarted;
        if (head !== undefined) {
          const left = head.items.length - head.answered;
          if (left === 1) head.settle(head.answered, { ok: false, error: this.failureError(started, code, signal) });
          // Which of a batch killed the process is unknown: each unanswered artifact again, alone.
          else back.unshift(...head.items.slice(head.answered).map((item, k) => ({ items: [item], settle: (_i: number, r: InspectionResult) => head.settle(head.answered + k, r) })));
        }
        if (back.length > 0) head?.requeue(back);
        resolve();
        this.wake();
      });
    });
    return started;
  }

  private idle(on: Started): void {
    clearTimeout(on.timer);
    clearInterval(on.poll);
    on.timer = undefined;
    on.poll = undefined;
  }

  private onAnswer(on: Started, frame: unknown): void {
    if (on.failure !== undefined) return;
    const parsed = answerSchema.safeParse(frame);
    const head = on.inflight[0];
    if (!parsed.success || parsed.data.id !== head?.id || parsed.data.index !== head.answered) {
      const detail = parsed.success
        ? `an answer to request ${parsed.data.id} item ${parsed.data.index}, which is not the one in progress`
        : `an answer that is not an inspection (${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')})`;
      return this.kill(on, { kind: 'protocol', detail });
    }
    const index = head.answered++;
    if (head.answered === head.items.length) {
      on.inflight.shift();
      if (on.inflight.length > 0) this.headStarted(on);
      else this.idle(on);
    }
    const a = parsed.data;
    head.settle(index, a.ok ? { ok: true, inspection: a.inspection } : { ok: false, error: new FerryError(a.code as ErrorCode, a.message) });
  }

  private async checkMemory(on: Started): Promise<void> {
    const pid = on.child.pid;
    const rss = pid === undefined ? undefined : await residentBytes([pid]);
    if (rss !== undefined && rss > this.options.memoryLimitBytes) this.kill(on, { kind: 'memory' });
  }

  /** Kills `on` (the first reason wins); the next request starts a new process at once. */
  private kill(on: Started, failure: Failure): void {
    on.failure ??= failure;
    if (this.started === on) this.started = undefined;
    on.child.kill('SIGKILL');
  }

  /** The status message for the artifact being inspected when the process exited. */
  private failureError(on: Started, code: number | null, signal: NodeJS.Signals | null): FerryError {
    const limit = `${mib(this.options.memoryLimitBytes)} MiB`;
    const f = on.failure;
    const oom = /heap out of memory|Reached heap limit|Allocation failed/i.test(on.stderrTail);
    const reason = f?.kind === 'timeout' ? `inspection took longer than its time limit (${this.options.timeoutMs} ms)`
      : f?.kind === 'memory' || oom ? `inspection exceeded its memory limit (${limit})`
        : f?.kind === 'protocol' ? `the inspector answered out of protocol (${f.detail})`
          : `the inspector process died (${signal === null ? `exit code ${code ?? 'unknown'}` : signal})`;
    return new FerryError('INVALID_PARAMETER_VALUE', `The artifact could not be inspected: ${reason}. The inspector reads the model's metadata only; an artifact that needs more is refused (see docs/security.md, "Hostile artifacts").`);
  }

  /** Ends the process (requests it still holds fail as the server is shutting down). */
  async stop(): Promise<void> {
    const on = this.started;
    if (on === undefined) return;
    this.started = undefined;
    for (const sent of on.inflight.splice(0)) for (let i = sent.answered; i < sent.items.length; i++) sent.settle(i, { ok: false, error: shuttingDown() });
    on.child.stdin.end();
    const timer = setTimeout(() => on.child.kill('SIGKILL'), 2000);
    await on.exited;
    clearTimeout(timer);
  }
}

function itemBytes(i: Item): number {
  return 'content' in i ? i.content.byteLength : 0;
}

/** A directory by the path given and, where it differs, its real path (the permission model compares real paths). */
function realAndGiven(p: string): string[] {
  try {
    const real = fs.realpathSync(p);
    return real === p ? [p] : [p, real];
  } catch {
    return [p]; // not there yet (an empty store): created under the given path
  }
}
