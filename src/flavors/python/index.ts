/**
 * The python flavor: MLflow models with a `python_function` flavor (mlflow.sklearn, mlflow.xgboost,
 * mlflow.pytorch, a custom `PythonModel`, ...), run by a Python worker process that the replica
 * starts (python/ferry_worker.py). The replica stays the shell (transports, protocols, batching,
 * health, drain, metrics); the worker loads the model and runs `predict`.
 *
 * - `inspect` (server) reads the MLmodel YAML only (./mlmodel.ts): registration never unpickles.
 * - `load` (replica) starts the worker with the configured interpreter (`pythonExecutable`), in the
 *   replica's private model directory, as the replica user when one is given (from its first
 *   instruction: the model's code never runs as root), and sends it the parsed MLmodel.
 * - A Python exception in `predict` is the request's MODEL_ERROR (500) with the exception's
 *   message; the worker keeps serving. A worker that dies takes the replica with it (exit code 1,
 *   its in-flight requests see a transport failure the gateway retries elsewhere): the runtime
 *   reports a crash and the controller replaces the replica, as for any crash.
 */
import { spawn } from 'node:child_process';
import { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { FerryError } from '../../errors.js';
import type { OutputValue, Signature, Tensor } from '../../tensor/index.js';
import { FLAVOR_CAPABILITIES } from '../capabilities.js';
import type { Flavor, LoadedModel, LoadOptions } from '../types.js';
import { decodeOutputs, encodeFrame, FrameReader, type Frame } from './link.js';
import { pythonInspection, readMlmodel } from './inspection.js';
import { pythonModelInfo, type PythonModelInfo } from './mlmodel.js';

export { MLMODEL_FILE, pythonInspection, readMlmodel } from './inspection.js';
export { pythonModelInfo, type PythonInput, type PythonModelInfo } from './mlmodel.js';

/** dist/src/flavors/python/index.js → the repository's python/ferry_worker.py. */
export const WORKER_SCRIPT = fileURLToPath(new URL('../../../../python/ferry_worker.py', import.meta.url));
/**
 * How long a closing worker may take to finish its current call and exit once its input ends,
 * before it is killed: the replica's drain has already waited for in-flight requests.
 */
const CLOSE_GRACE_MS = 5000;
/** How much of the worker's stderr a failed load's message may quote from (its last line). */
const STDERR_TAIL_CHARS = 4096;

/** What the worker takes from the replica's own environment: which GPU it has and where CUDA's libraries are. */
const GPU_ENV_KEYS = ['CUDA_VISIBLE_DEVICES', 'CUDA_DEVICE_ORDER', 'LD_LIBRARY_PATH'] as const;

/**
 * The worker's environment: nothing from the server's, BLAS pools of one thread (one replica per
 * core; see `LoadOptions.intraOpThreads`), no bytecode files written into the model directory, no
 * user site-packages (the environment is the interpreter's). The device: MLflow's own
 * `MLFLOW_DEFAULT_PREDICTION_DEVICE`, "cuda" for GPU_* workload types and "cpu" otherwise (mlflow.pytorch
 * and Ferry's own PyTorch loader move the model and its inputs there; a custom pyfunc reads it), with
 * the GPU the runtime chose for the replica (`CUDA_VISIBLE_DEVICES`, from the replica's environment).
 */
function workerEnv(threads: number, workloadType: LoadOptions['workloadType'], from: NodeJS.ProcessEnv): Record<string, string> {
  const n = String(Math.max(1, threads));
  const env: Record<string, string> = {
    PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', HOME: '/nonexistent',
    PYTHONDONTWRITEBYTECODE: '1', PYTHONNOUSERSITE: '1', PYTHONUNBUFFERED: '1',
    OMP_NUM_THREADS: n, OPENBLAS_NUM_THREADS: n, MKL_NUM_THREADS: n,
    MLFLOW_DEFAULT_PREDICTION_DEVICE: workloadType === 'CPU' ? 'cpu' : 'cuda',
  };
  for (const key of GPU_ENV_KEYS) {
    const value = from[key];
    if (value !== undefined) env[key] = value;
  }
  return env;
}

interface Pending {
  resolve: (outputs: Record<string, OutputValue>) => void;
  reject: (err: FerryError) => void;
}

/** The running worker: one request in its queue per `predict`, answered in order. */
class PythonModel implements LoadedModel {
  readonly ownThread = true;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closing = false;
  private readonly channel: Socket;

  constructor(
    readonly signature: Signature,
    private readonly worker: WorkerProcess,
    reader: FrameReader,
    /** The output name MLflow's single prediction gets (the signature's, else "predictions"). */
    private readonly outputName: string,
  ) {
    this.channel = worker.channel;
    const channel = this.channel;
    channel.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = reader.push(chunk);
      } catch (err) {
        this.die(`sent a malformed frame (${(err as Error).message})`);
        return;
      }
      for (const f of frames) this.answer(f);
    });
    worker.onExit((how) => this.die(how));
    // A write to a worker that just died fails before its exit is seen.
    channel.on('error', (err) => this.die(`link failed (${err.message})`));
  }

  predict(inputs: Record<string, Tensor>, params?: Record<string, unknown>): Promise<Record<string, OutputValue>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.channel.cork();
      for (const b of encodeFrame({ op: 'predict', id, params: params ?? null }, inputs)) this.channel.write(b);
      this.channel.uncork();
    });
  }

  private answer({ header, payload }: Frame): void {
    const id = header.id;
    const p = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (p === undefined) {
      this.die(`answered an unknown request ${JSON.stringify(id)}`);
      return;
    }
    this.pending.delete(id as number);
    if (typeof header.error === 'string') {
      p.reject(new FerryError('MODEL_ERROR', `Model error: ${header.error}`));
      return;
    }
    try {
      const outputs = decodeOutputs(header.outputs, payload);
      const names = Object.keys(outputs);
      // One prediction: named as the signature names it (the worker calls it "predictions").
      p.resolve(names.length === 1 && names[0] === 'predictions' ? { [this.outputName]: outputs.predictions! } : outputs);
    } catch (err) {
      p.reject(err as FerryError);
    }
  }

  /**
   * The worker is gone or broken: the replica cannot serve without it. It exits at once, so its
   * in-flight requests fail as a lost connection (the gateway retries those on another replica)
   * and the runtime reports the crash.
   */
  private die(why: string): void {
    if (this.closing) return;
    this.closing = true;
    process.stderr.write(JSON.stringify({ ts: new Date().toISOString(), level: 'error', msg: `the Python worker ${why}; the replica exits` }) + '\n');
    this.worker.kill();
    process.exit(1);
  }

  async close(): Promise<void> {
    this.closing = true;
    const exited = new Promise<void>((resolve) => this.worker.onExit(() => resolve()));
    // End of input: the worker's read loop ends and it exits.
    this.channel.end();
    const timer = setTimeout(() => this.worker.kill(), CLOSE_GRACE_MS);
    await exited;
    clearTimeout(timer);
    for (const p of this.pending.values()) p.reject(new FerryError('TEMPORARILY_UNAVAILABLE', 'The model is shutting down.', { retryAfterS: 1 }));
    this.pending.clear();
  }
}

/** The worker process as the model sees it: its link, how to kill it, when it is gone. */
interface WorkerProcess {
  channel: Socket;
  /** Its pid in the replica's namespace, when the replica started it. */
  pid: number | undefined;
  kill(): void;
  /** Calls `listener` once the worker is gone, with how it ended. */
  onExit(listener: (how: string) => void): void;
  /** The last lines it wrote to stderr (a worker the replica started), for a failed load's message. */
  stderrTail(): string;
}

/** A worker this replica starts: `python -I -B ferry_worker.py` in `dir`, the link on its fd 3. */
function spawnWorker(dir: string, opts: LoadOptions): WorkerProcess {
  const python = opts.pythonExecutable ?? 'python3';
  const child = spawn(python, ['-I', '-B', WORKER_SCRIPT], {
    cwd: dir,
    env: workerEnv(opts.intraOpThreads, opts.workloadType, process.env),
    // fd 3 is a socketpair: the link. The worker's stdout is the replica's log; its stderr too,
    // through `tail`, which keeps the last lines for a failed load's message.
    stdio: ['ignore', 'inherit', 'pipe', 'pipe'],
    ...(opts.processUser === undefined ? {} : { uid: opts.processUser.uid, gid: opts.processUser.gid }),
  });
  const channel = child.stdio[3] as Socket | null;
  if (channel === null) throw new FerryError('MODEL_ERROR', 'Could not open the channel to the Python worker.');
  let tail = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    process.stderr.write(chunk);
    tail = (tail + chunk.toString('utf8')).slice(-STDERR_TAIL_CHARS);
  });
  child.once('error', (err: NodeJS.ErrnoException) => {
    channel.destroy(new Error(`could not start: ${
      err.code === 'ENOENT' ? 'no such interpreter' : err.code === 'EACCES' ? 'the replica user may not run it (or reach its directory)' : err.message
    }. Set the server's python setting to a Python 3 interpreter that the replica user can run.`));
  });
  return {
    channel, pid: child.pid,
    kill: () => child.kill('SIGKILL'),
    onExit: (listener) => {
      if (child.exitCode !== null || child.signalCode !== null) listener(exitText(child.exitCode, child.signalCode));
      else child.once('exit', (code, signal) => listener(exitText(code, signal)));
    },
    stderrTail: () => tail,
  };
}

/**
 * A worker forked for this replica by the runtime's Python fork server (`opts.pythonLinkFd`): the
 * replica only has the link. It is gone when the link closes; killing it is the runtime's part
 * (the fork server kills a replica's worker when the replica is gone), so `kill` closes the link,
 * on which the worker exits.
 */
function forkedWorker(fd: number): WorkerProcess {
  const channel = new Socket({ fd, readable: true, writable: true });
  return {
    channel, pid: undefined,
    kill: () => channel.destroy(),
    onExit: (listener) => {
      if (channel.closed) listener('closed its link');
      else channel.once('close', () => listener('closed its link'));
    },
    stderrTail: () => '',
  };
}

function exitText(code: number | null, signal: NodeJS.Signals | null): string {
  return `exited (${code !== null ? `code ${code}` : `signal ${signal ?? '?'}`})`;
}

/**
 * Starts the worker in `dir` (or takes the forked one on `opts.pythonLinkFd`) and loads the model:
 * resolves once it reports `loaded`; rejects with MODEL_ERROR carrying the worker's own error
 * (e.g. a missing package) when it fails.
 */
async function startWorker(dir: string, info: PythonModelInfo, mlmodel: unknown, opts: LoadOptions): Promise<PythonModel> {
  const python = opts.pythonExecutable ?? 'python3';
  const worker = opts.pythonLinkFd === undefined ? spawnWorker(dir, opts) : forkedWorker(opts.pythonLinkFd);
  const { channel } = worker;
  const reader = new FrameReader();
  const loaded = await new Promise<Frame>((resolve, reject) => {
    const fail = (why: string): void => reject(new FerryError('MODEL_ERROR', `The Python worker (${python}) ${why}`));
    const onData = (chunk: Buffer): void => {
      let frames: Frame[];
      try {
        frames = reader.push(chunk);
      } catch (err) {
        fail(`sent a malformed frame: ${(err as Error).message}`);
        return;
      }
      if (frames.length > 0) resolve(frames[0]!);
    };
    channel.on('data', onData);
    // The exit may be seen before the worker's last frame (its own error) is read: wait for the
    // channel's end, then report the exit with the last line the worker wrote.
    worker.onExit((how) => {
      const report = (): void => {
        const last = worker.stderrTail().trim().split('\n').filter((l) => l.trim() !== '').at(-1)?.trim();
        fail(`${how} while loading the model${last === undefined ? '' : `: ${last}`}`);
      };
      if (channel.destroyed) report();
      else channel.once('close', report);
    });
    channel.once('error', (err) => {
      if (err.message.startsWith('could not start')) fail(err.message);
    });
    // A CUDA process reserves far more address space than it uses (tens of GiB for the GPU's
    // unified memory), so a GPU worker gets no address-space limit: the runtime's watchdog bounds
    // its resident memory as part of the replica's process tree.
    const limits = opts.memoryLimitBytes === undefined || opts.workloadType !== 'CPU' ? {} : { memoryLimitBytes: opts.memoryLimitBytes };
    for (const b of encodeFrame({ op: 'load', mlmodel, input: info.input, limits })) channel.write(b);
  }).finally(() => {
    channel.removeAllListeners('data');
    channel.removeAllListeners('close');
  }).catch((err: unknown) => {
    worker.kill();
    throw err;
  });
  if (loaded.header.op !== 'loaded') {
    worker.kill();
    const error = typeof loaded.header.error === 'string' ? loaded.header.error : JSON.stringify(loaded.header);
    throw new FerryError('MODEL_ERROR', `The Python worker could not load the model: ${error}`);
  }
  const outputName = info.signature.outputs.length === 1 ? info.signature.outputs[0]!.name : 'predictions';
  process.stderr.write(JSON.stringify({
    ts: new Date().toISOString(), level: 'info', msg: 'python worker loaded the model',
    loader: loaded.header.loader, python: loaded.header.python, device: loaded.header.device, pid: worker.pid, forked: opts.pythonLinkFd !== undefined,
  }) + '\n');
  return new PythonModel(info.signature, worker, reader, outputName);
}

export const pythonFlavor: Flavor = {
  ...pythonInspection,
  capabilities: FLAVOR_CAPABILITIES.python,
  async load(dir, opts) {
    const mlmodel = await readMlmodel(dir);
    return startWorker(dir, pythonModelInfo(mlmodel), mlmodel, opts);
  },
};
