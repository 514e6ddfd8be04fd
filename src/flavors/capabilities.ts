/**
 * What each flavor needs from the replica process that runs it, declared once per flavor (and
 * carried by its `Flavor` object) so that the runtime and the replica ask the flavor instead of
 * testing its name. A leaf module: the runtime reads it without importing any flavor (the onnx
 * flavor imports onnxruntime-node, a native addon).
 */
import type { FlavorName } from './names.js';

export interface FlavorCapabilities {
  /**
   * The replica loads native addons (onnxruntime, llama.cpp). False where the replica runs a
   * user's JavaScript: `process.dlopen` then throws.
   */
  readonly nativeAddons: boolean;
  /** The replica starts child processes (node-llama-cpp's probe, the Python worker). */
  readonly childProcesses: boolean;
  /** Host paths outside Ferry's code and the model that the replica's JavaScript reads. */
  readonly systemReads: readonly string[];
  /**
   * A generic warm-pool process (started with addons, no child processes, no system reads) may
   * serve it. False for flavors whose rights differ from the pool's (a flavor that needs no addons,
   * such as xgboost, may still use the pool: it only gets a right it does not use).
   */
  readonly warmPool: boolean;
  /**
   * The model computes off the replica's main thread by itself (llama.cpp's threads, a Python
   * process), so the replica calls it inline and never times a synthetic batch.
   */
  readonly inline: boolean;
  /**
   * The model's files are read by a process that runs as the replica user from its start (the
   * Python worker) even when the replica itself drops only after loading (no sandbox): the private
   * model directory is then made readable by that user, as it is for every sandboxed replica.
   */
  readonly modelReadAsReplicaUser: boolean;
  /** The replica runs a Python interpreter: its environment (prefix, sys.path) is bound into the sandbox. */
  readonly pythonEnvironment: boolean;
  /** The flavor runs code that comes with the model (a user's module, a pickle); refused without a sandbox unless allowed. */
  readonly runsUserCode: boolean;
  /** The `platform` of the model in Open Inference Protocol metadata. */
  readonly platform: string;
}

/** What node-llama-cpp reads to choose its binary: the glibc search paths of its `detectGlibc` and the OS release. */
const LLM_SYSTEM_READS = ['/lib', '/lib64', '/usr/lib', '/usr/lib64', '/etc/os-release'];

export const FLAVOR_CAPABILITIES: Readonly<Record<FlavorName, FlavorCapabilities>> = {
  onnx: { modelReadAsReplicaUser: false, pythonEnvironment: false, nativeAddons: true, childProcesses: false, systemReads: [], warmPool: true, inline: false, runsUserCode: false, platform: 'onnxruntime_onnx' },
  transformers: { modelReadAsReplicaUser: false, pythonEnvironment: false, nativeAddons: true, childProcesses: false, systemReads: [], warmPool: true, inline: false, runsUserCode: false, platform: 'transformers' },
  js: { modelReadAsReplicaUser: false, pythonEnvironment: false, nativeAddons: false, childProcesses: false, systemReads: [], warmPool: false, inline: false, runsUserCode: true, platform: 'js' },
  llm: { modelReadAsReplicaUser: false, pythonEnvironment: false, nativeAddons: true, childProcesses: true, systemReads: LLM_SYSTEM_READS, warmPool: false, inline: true, runsUserCode: false, platform: 'llm' },
  python: { modelReadAsReplicaUser: true, pythonEnvironment: true, nativeAddons: false, childProcesses: true, systemReads: [], warmPool: false, inline: true, runsUserCode: true, platform: 'mlflow_pyfunc' },
  xgboost: { modelReadAsReplicaUser: false, pythonEnvironment: false, nativeAddons: false, childProcesses: false, systemReads: [], warmPool: true, inline: false, runsUserCode: false, platform: 'xgboost' },
};
