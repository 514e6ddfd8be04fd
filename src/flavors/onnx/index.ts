/**
 * The ONNX flavor: `inspect` reads the signature from the protobuf in pure JS; `load` runs the model
 * with onnxruntime-node (CPU, or the CUDA execution provider for GPU workload types).
 *
 * `session.run` executes synchronously on the calling thread (onnxruntime-node defers it with
 * setImmediate, then blocks the event loop until the model returns), so replicas that must stay
 * responsive while a model runs call `predict` from a worker thread.
 */
import onnxProto from 'onnx-proto';
import ort from 'onnxruntime-node';
import { FerryError } from '../../errors.js';
import type { OutputValue, Signature, Tensor } from '../../tensor/index.js';
import type { Flavor, LoadedModel, LoadOptions } from '../types.js';
import { FLAVOR_CAPABILITIES } from '../capabilities.js';
import type { ModelProto } from './model-proto.js';
import { fromOrtTensor, toOrtTensor } from './convert.js';
import { invalidModel, onnxInspection, readModel, signatureOf } from './model-proto.js';
import type { DetachedZipMap } from './zipmap.js';
import { detachZipMaps, zipRows } from './zipmap.js';

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Session options for `opts`: one model call uses `intraOpThreads` threads and runs its nodes in order. */
function sessionOptions(opts: LoadOptions): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: opts.workloadType.startsWith('GPU') ? ['cuda'] : ['cpu'],
    intraOpNumThreads: opts.intraOpThreads,
    // Sequential execution never runs two nodes at once, so inter-op threads would sit idle.
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  };
}

async function createSession(source: string | Uint8Array, modelFile: string, opts: LoadOptions): Promise<ort.InferenceSession> {
  const options = sessionOptions(opts);
  try {
    // Two calls because create() is overloaded on the source type and a union matches neither.
    return typeof source === 'string'
      ? await ort.InferenceSession.create(source, options)
      : await ort.InferenceSession.create(source, options);
  } catch (err) {
    const text = message(err);
    // The npm package ships the CPU provider only; the CUDA one is downloaded at install time on
    // request. Without it (or without the CUDA libraries it links), appending the provider fails
    // with "...Cuda: Failed to load shared library".
    if (opts.workloadType.startsWith('GPU') && /cuda/i.test(text) && /failed to load/i.test(text)) {
      throw new FerryError(
        'INVALID_PARAMETER_VALUE',
        `workload_type ${opts.workloadType} needs the CUDA execution provider, which this onnxruntime-node installation does not have. ` +
          `Reinstall it with the CUDA 12 provider (ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node, or set that variable for npm ci; ` +
          `CUDA 12 and cuDNN 9 must be installed), or serve the model with workload_type CPU. onnxruntime said: ${firstLine(text)}`,
        { cause: err },
      );
    }
    throw new FerryError('MODEL_ERROR', `onnxruntime cannot load '${modelFile}': ${text}`, { cause: err });
  }
}

const firstLine = (text: string): string => text.split('\n', 1)[0] ?? '';

class OnnxModel implements LoadedModel {
  constructor(
    readonly signature: Signature,
    private readonly session: ort.InferenceSession,
    /** ZipMap outputs by original output name. */
    private readonly zipMaps: ReadonlyMap<string, DetachedZipMap>,
  ) {}

  /** ONNX models take no inference parameters; `params` is ignored, as MLflow's onnx flavor does. */
  async predict(inputs: Record<string, Tensor>, _params?: Record<string, unknown>): Promise<Record<string, OutputValue>> {
    let results: ort.InferenceSession.ReturnType;
    try {
      const feeds: Record<string, ort.Tensor> = {};
      for (const name of this.session.inputNames) {
        const tensor = inputs[name];
        if (tensor === undefined) throw new Error(`missing input '${name}'`);
        feeds[name] = toOrtTensor(tensor);
      }
      results = await this.session.run(feeds);
    } catch (err) {
      throw new FerryError('MODEL_ERROR', `Model execution failed: ${message(err)}`, { cause: err });
    }
    const outputs: Record<string, OutputValue> = {};
    for (const spec of this.signature.outputs) {
      const zip = this.zipMaps.get(spec.name);
      const value = results[zip?.input ?? spec.name];
      if (value === undefined) throw new FerryError('MODEL_ERROR', `Model execution returned no output '${spec.name}'.`);
      outputs[spec.name] = zip === undefined ? fromOrtTensor(spec.name, value) : zipRows(value.data as Float32Array, zip.labels);
    }
    return outputs;
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

/** The ONNX flavor. */
export const onnxFlavor: Flavor = {
  ...onnxInspection,
  capabilities: FLAVOR_CAPABILITIES.onnx,

  async load(dir, opts) {
    const { path, model } = await readModel(dir, opts.modelFile);
    return loadModelProto(model, path, opts);
  },
};

/**
 * A session for a decoded model: onnxruntime reads `path` itself when given and the graph needs
 * no rewrite (which also resolves external weights); otherwise it gets the encoded graph. Model
 * families load from bytes this way (`path` undefined; their members are single files).
 */
export async function loadModelProto(model: ModelProto, path: string | undefined, opts: LoadOptions): Promise<LoadedModel> {
  const signature = signatureOf(model, opts.modelFile);
  const detached = detachZipMaps(model, opts.modelFile);
  for (const spec of signature.outputs) {
    if (spec.dtype === 'map' && !detached.some((d) => d.output === spec.name)) {
      throw invalidModel(opts.modelFile, `output '${spec.name}' is a sequence of maps not produced by ZipMap, which onnxruntime-node cannot return`);
    }
  }
  const source = detached.length === 0 && path !== undefined ? path : onnxProto.onnx.ModelProto.encode(model).finish();
  const session = await createSession(source, opts.modelFile, opts);
  return new OnnxModel(signature, session, new Map(detached.map((d) => [d.output, d])));
}
