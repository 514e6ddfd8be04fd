/**
 * The js flavor: a user's own ES module, packaged with its files, as the model. The module exports
 * `predict(input, params)` and optionally `load(context)`; `ferry.json` names it (`main`, default
 * `model.mjs`) and declares its signature (contract in ./contract.ts and docs/flavors.md).
 *
 * - `inspect` (server) reads ferry.json only: the module is never imported outside a replica.
 * - `load` (replica) runs the module on a worker thread of its own (./host.ts), under the replica's
 *   permission model: it may read Ferry's code and its own model directory, nothing else (no data
 *   directory, no database), and may not write files or start processes.
 * - An error thrown by the module is the request's MODEL_ERROR (500, "Model error: ..."); the
 *   replica keeps serving. A call still running after `timeout_ms` is answered DEADLINE_EXCEEDED
 *   (504) and the module's thread is terminated and started again (its `load` runs again); calls
 *   waiting behind it are answered TEMPORARILY_UNAVAILABLE (503, retryable). A module that crashes
 *   its thread is restarted the same way. Where the module's files are out of reach by then (an
 *   unsandboxed replica that dropped root after loading), the replica stops and the controller
 *   replaces it; in the sandbox the replica is the replica user from its start and reloads.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { FerryError, type ErrorCode } from '../../errors.js';
import type { OutputValue, Signature, Tensor } from '../../tensor/index.js';
import type { Flavor, LoadedModel } from '../types.js';
import { FLAVOR_CAPABILITIES } from '../capabilities.js';
import { isFile } from '../manifest.js';
import { DEFAULT_MAIN, fromColumns, mainOf, readJsManifest, toColumns, type JsManifest } from './contract.js';
import type { HostInit, HostReply, HostRequest } from './messages.js';

const HOST_SCRIPT = fileURLToPath(new URL('./host.js', import.meta.url));

interface Pending {
  resolve: (output: unknown) => void;
  reject: (err: FerryError) => void;
  timer: NodeJS.Timeout;
}

/** One worker thread with the module loaded. */
class Host {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private dead: FerryError | undefined;

  private constructor(private readonly worker: Worker, private readonly onDeath: (host: Host) => void) {
    worker.on('message', (msg: HostReply) => this.onMessage(msg));
    worker.on('error', (err) => this.fail(modelError('MODEL_ERROR', `the module crashed: ${err.message}`)));
    worker.on('exit', (code) => this.fail(modelError('TEMPORARILY_UNAVAILABLE', `the module's thread exited (code ${code}); it is being restarted`)));
  }

  /** Starts a thread, imports the module and awaits its `load`; rejects with the module's error. */
  static start(init: HostInit, onDeath: (host: Host) => void): Promise<Host> {
    const worker = new Worker(HOST_SCRIPT, { workerData: init });
    return new Promise((resolve, reject) => {
      const failed = (text: string): void => {
        void worker.terminate();
        reject(modelError('MODEL_ERROR', `load failed: ${text}`));
      };
      const onExit = (code: number): void => failed(`the module's thread exited during load (code ${code})`);
      const onError = (err: Error): void => failed(err.message);
      worker.once('exit', onExit);
      worker.once('error', onError);
      worker.once('message', (msg: HostReply) => {
        worker.off('exit', onExit);
        worker.off('error', onError);
        if (msg.type === 'ready') resolve(new Host(worker, onDeath));
        else failed(msg.type === 'load-failed' ? msg.message : `unexpected '${msg.type}' message`);
      });
    });
  }

  call(input: Record<string, unknown[]>, params: Record<string, unknown>, timeoutMs: number): Promise<unknown> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(modelError('DEADLINE_EXCEEDED', `predict did not return within ${timeoutMs} ms (ferry.json timeout_ms); the module was restarted`));
        this.fail(modelError('TEMPORARILY_UNAVAILABLE', `the module was restarted after a call ran past ${timeoutMs} ms; retry`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.worker.postMessage({ id, input, params } satisfies HostRequest);
    });
  }

  /** Stops the thread; calls still pending are rejected. */
  async stop(): Promise<void> {
    this.fail(modelError('TEMPORARILY_UNAVAILABLE', 'the model is closed'));
    await this.worker.terminate();
  }

  private onMessage(msg: HostReply): void {
    if (msg.type !== 'result' && msg.type !== 'failed') return;
    const p = this.pending.get(msg.id);
    if (p === undefined) return;
    this.pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.type === 'failed') p.reject(modelError('MODEL_ERROR', msg.message));
    else p.resolve(msg.output);
  }

  /** Marks the thread dead (once), rejects what is pending, terminates it and reports the death. */
  private fail(err: FerryError): void {
    if (this.dead) return;
    this.dead = err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    void this.worker.terminate();
    this.onDeath(this);
  }
}

function modelError(code: ErrorCode, text: string): FerryError {
  return new FerryError(code, `Model error: ${text}`);
}

/** A loaded js model: the current host thread, replaced when it dies. */
class JsModel implements LoadedModel {
  readonly ownThread = true;
  readonly signature: Signature;
  private host: Promise<Host>;
  private closed = false;

  private constructor(private readonly init: HostInit, private readonly manifest: JsManifest) {
    this.signature = manifest.signature;
    this.host = Host.start(init, this.restart);
  }

  async predict(inputs: Record<string, Tensor>, params?: Record<string, unknown>): Promise<Record<string, OutputValue>> {
    const host = await this.host;
    const rows = Object.values(inputs)[0]?.shape[0] ?? 0;
    const output = await host.call(toColumns(inputs), params ?? {}, this.manifest.timeoutMs);
    return fromColumns(output, this.signature, rows);
  }

  async close(): Promise<void> {
    this.closed = true;
    const host = await this.host.catch(() => undefined);
    await host?.stop();
  }

  /**
   * A dead thread is replaced by a fresh one (the module loads again). That needs the module's
   * files, which a replica that dropped privileges after loading (the server runs as root) can no
   * longer read; then the reload fails, every later call gets that error, and the replica asks
   * itself to stop (SIGTERM: it drains what is in flight and exits), so that the controller
   * replaces it with a fresh process, as after a crash.
   */
  private readonly restart = (dead: Host): void => {
    if (this.closed) return;
    void this.host.then((current) => {
      if (current !== dead) return;
      this.host = Host.start(this.init, this.restart);
      this.host.catch((err: unknown) => {
        if (this.closed) return;
        process.stdout.write(`${JSON.stringify({ ts: new Date().toISOString(), level: 'error', msg: 'js model could not be restarted; stopping the replica', error: String(err) })}\n`);
        process.kill(process.pid, 'SIGTERM');
      });
    });
  };

  /** Starts the first thread; `load` awaits it so that a module that cannot load fails the replica's start. */
  static async load(init: HostInit, manifest: JsManifest): Promise<JsModel> {
    const model = new JsModel(init, manifest);
    await model.host;
    return model;
  }
}

/** The js flavor. */
export const jsFlavor: Flavor = {
  name: 'js',
  capabilities: FLAVOR_CAPABILITIES.js,
  defaultModelFile: DEFAULT_MAIN,

  async inspect(dir, modelFile) {
    const main = mainOf(modelFile);
    const { signature } = await readJsManifest(dir);
    if (!(await isFile(dir, main))) throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid js model: the module ${main} (ferry.json main) is not in the model directory.`);
    return signature;
  },

  async load(dir, opts) {
    const main = mainOf(opts.modelFile);
    const manifest = await readJsManifest(dir);
    const root = path.resolve(dir);
    return JsModel.load({ modulePath: path.join(root, main), main, dir: root, params: manifest.params }, manifest);
  },
};
