/**
 * The flavor interface and what it loads (a leaf of types): the flavors import these from here,
 * not from ./index.ts, which names the flavors.
 */
import type { OutputValue, Signature, Tensor } from '../tensor/index.js';
import type { FlavorCapabilities } from './capabilities.js';
import type { FlavorName, WorkloadType } from './names.js';

export interface LoadOptions {
  /** The model file inside the artifact directory, relative to it (e.g. "model.onnx"). */
  modelFile: string;
  workloadType: WorkloadType;
  /** Threads for one model call; 1 suits one replica per core (the local default). */
  intraOpThreads: number;
  /**
   * The replica's memory limit (bytes). A flavor that runs the model in a process of its own bounds
   * that process by it (the Python worker's address space: RLIMIT_AS), so that one oversized call
   * fails alone instead of the runtime's watchdog killing the whole replica (it sums the replica's
   * process tree). Example: 2 GiB → a Python allocation past 2 GiB raises MemoryError (a
   * MODEL_ERROR), the replica keeps serving. Not for GPU_* workload types: CUDA reserves far more
   * address space than it uses, so only the watchdog bounds a GPU worker.
   */
  memoryLimitBytes?: number;
  /** The Python interpreter a python-flavor model runs in (the server's `python` setting); default `python3` on PATH. */
  pythonExecutable?: string;
  /**
   * The descriptor of a link to a Python worker the runtime's fork server forked for this replica
   * (the Python warm pool): the python flavor uses it instead of starting a worker itself.
   */
  pythonLinkFd?: number;
  /**
   * The user a flavor that starts processes for the model's code (the Python worker) starts them
   * as, from their first instruction; the replica's own `user` when it drops privileges.
   */
  processUser?: { uid: number; gid: number };
}

export interface LoadedModel {
  signature: Signature;
  /**
   * Runs the model on validated inputs (every signature input present with a matching dtype and
   * shape). Rejects with a FerryError (MODEL_ERROR) when the runtime fails.
   */
  predict(inputs: Record<string, Tensor>, params?: Record<string, unknown>): Promise<Record<string, OutputValue>>;
  close(): Promise<void>;
  /**
   * True when `predict` never holds the calling thread (the flavor runs the model on a thread of
   * its own), so the replica calls it from its main thread and does not time a synthetic batch.
   */
  readonly ownThread?: boolean;
}

export interface Flavor {
  name: FlavorName;
  /** What the replica process needs to run this flavor (./capabilities.ts). */
  capabilities: FlavorCapabilities;
  /** The model file, relative to the artifact directory, when the artifact names none (ferry.json `main`). */
  defaultModelFile: string;
  /** Reads the signature from the artifact without running it. Throws a FerryError saying what is wrong. */
  inspect(dir: string, modelFile: string): Promise<Signature>;
  /**
   * A scoring request (MLflow JSON) that fits `signature`, for an artifact that brings no input
   * example; absent when the flavor cannot derive one.
   */
  inputExample?(dir: string, modelFile: string, signature: Signature): Promise<unknown>;
  load(dir: string, opts: LoadOptions): Promise<LoadedModel>;
}

