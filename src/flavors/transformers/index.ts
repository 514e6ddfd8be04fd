/**
 * The transformers flavor: Hugging Face text models (ONNX exports in the Hugging Face layout, see
 * ./layout.ts) run through the transformers.js pipelines, from local files only.
 *
 * - `inspect` (server) reads JSON files and the ONNX protobuf; it never imports transformers.js.
 * - `load` (replica) imports transformers.js, switches every remote or cache path off (no hub
 *   download, no cache directory: replicas may read only their model directory and write
 *   nothing), and builds the task's pipeline on onnxruntime-node.
 * - One model call takes a batch of texts: the pipeline tokenizes them together, padded to the
 *   longest, and runs the graph once, so the replica's batcher turns concurrent requests into
 *   one padded call.
 */
import path from 'node:path';
import { FerryError, invalidParameter } from '../../errors.js';
import type { OutputValue, Tensor } from '../../tensor/index.js';
import type { Flavor, LoadedModel, LoadOptions } from '../types.js';
import { FLAVOR_CAPABILITIES } from '../capabilities.js';
import { readTransformersModel, TEXT_INPUT, type TransformersModel, type TransformersTask } from './layout.js';

export { TRANSFORMERS_TASKS, type TransformersTask } from './layout.js';

type TransformersJs = typeof import('@huggingface/transformers');
/** What the three pipelines have in common: a batch of texts and options in, task-specific results out. */
type TextPipeline = ((texts: string[], options?: Record<string, unknown>) => Promise<unknown>) & { dispose(): Promise<unknown> };

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** The derived input example's texts (scored when an endpoint deploys the model); they suit every task. */
const EXAMPLE_TEXTS = ['Ferry serves models.', 'Alice lives in Paris.'];

/**
 * Request `params` each task accepts, with a check per value. A request with params runs alone
 * (one batch has one set of options).
 */
const PARAMS: Record<TransformersTask, Record<string, { expected: string; ok: (v: unknown) => boolean }>> = {
  'text-classification': {},
  'feature-extraction': {
    normalize: { expected: 'true or false', ok: (v) => typeof v === 'boolean' },
  },
  'token-classification': {
    aggregation_strategy: { expected: '"none" or "simple"', ok: (v) => v === 'none' || v === 'simple' },
    ignore_labels: { expected: 'a list of label names', ok: (v) => Array.isArray(v) && v.every((l) => typeof l === 'string') },
  },
};

/**
 * Makes transformers.js read only `dir`'s files: no hub (even for a name that looks like a hub
 * id), no file-system or browser cache, and a `fetch` that refuses, so a missing file is an error
 * that names the local path and never a download.
 */
function localFilesOnly(hf: TransformersJs, dir: string): void {
  const { env } = hf;
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = dir;
  env.useFSCache = false;
  env.useBrowserCache = false;
  env.useWasmCache = false;
  env.useCustomCache = false;
  env.fetch = (url: string | URL): Promise<never> => Promise.reject(new Error(`network access is disabled in Ferry replicas (tried ${String(url)})`));
  env.logLevel = hf.LogLevel.ERROR;
}

class TransformersModelHandle implements LoadedModel {
  readonly signature;

  constructor(private readonly info: TransformersModel, private readonly pipe: TextPipeline) {
    this.signature = info.signature;
  }

  async predict(inputs: Record<string, Tensor>, params?: Record<string, unknown>): Promise<Record<string, OutputValue>> {
    const texts = inputs[TEXT_INPUT]?.data;
    if (!Array.isArray(texts) || !texts.every((t): t is string => typeof t === 'string')) {
      throw new FerryError('MODEL_ERROR', `Model execution failed: input '${TEXT_INPUT}' must be strings.`);
    }
    const options = this.options(params ?? {});
    let result: unknown;
    try {
      result = texts.length === 0 ? [] : await this.pipe(texts, options);
    } catch (err) {
      throw new FerryError('MODEL_ERROR', `Model execution failed: ${message(err)}`, { cause: err });
    }
    return this.outputs(result, texts.length);
  }

  async close(): Promise<void> {
    await this.pipe.dispose();
  }

  /** The pipeline options for one call: the model's configuration, then the request's params. */
  private options(params: Record<string, unknown>): Record<string, unknown> {
    const accepted = PARAMS[this.info.task];
    for (const [key, value] of Object.entries(params)) {
      const rule = accepted[key];
      const names = Object.keys(accepted);
      if (rule === undefined) throw invalidParameter(`params.${key}`, value, names.length === 0 ? `no params (task ${this.info.task} takes none)` : `one of the params ${names.join(', ')}`);
      if (!rule.ok(value)) throw invalidParameter(`params.${key}`, value, rule.expected);
    }
    return this.info.task === 'feature-extraction' ? { pooling: this.info.pooling, normalize: this.info.normalize, ...params } : params;
  }

  /** The pipeline's result as the signature's outputs, one row per text. */
  private outputs(result: unknown, rows: number): Record<string, OutputValue> {
    const bad = (what: string): FerryError => new FerryError('MODEL_ERROR', `Model execution failed: the ${this.info.task} pipeline returned ${what} for ${rows} texts.`);
    switch (this.info.task) {
      case 'text-classification': {
        if (!Array.isArray(result) || result.length !== rows) throw bad('a result that is not one label per text');
        // top_k = 1: one {label, score} per text (some versions wrap it in a list of one).
        const best = result.map((r: unknown) => (Array.isArray(r) ? r[0] : r) as { label?: unknown; score?: unknown });
        if (!best.every((b) => typeof b?.label === 'string' && typeof b.score === 'number')) throw bad('labels without a string label and a numeric score');
        return {
          label: { dtype: 'string', shape: [rows], data: best.map((b) => b.label as string) },
          score: { dtype: 'float32', shape: [rows], data: Float32Array.from(best, (b) => b.score as number) },
        };
      }
      case 'feature-extraction': {
        if (rows === 0) {
          const dim = this.signature.outputs[0]?.shape?.[1] ?? 0;
          return { embeddings: { dtype: 'float32', shape: [0, Math.max(dim, 0)], data: new Float32Array(0) } };
        }
        const t = result as { dims?: unknown; data?: unknown };
        if (!Array.isArray(t.dims) || t.dims.length !== 2 || t.dims[0] !== rows || !(t.data instanceof Float32Array)) throw bad('a tensor that is not float32 [texts, dim]');
        // A copy the replica owns (transferable to another thread), not a view of the library's buffer.
        return { embeddings: { dtype: 'float32', shape: t.dims as number[], data: new Float32Array(t.data) } };
      }
      case 'token-classification':
        if (!Array.isArray(result) || result.length !== rows) throw bad('a result that is not one entity list per text');
        return { entities: { dtype: 'json', data: result } };
    }
  }
}

/** The ONNX graph `modelFile` as transformers.js options: its folder and its file name without `.onnx`. */
function graphLocation(modelFile: string): { subfolder: string; model_file_name: string } {
  const folder = path.posix.dirname(modelFile);
  return { subfolder: folder === '.' ? '' : folder, model_file_name: path.posix.basename(modelFile, '.onnx') };
}

async function createPipeline(hf: TransformersJs, info: TransformersModel, dir: string, opts: LoadOptions): Promise<TextPipeline> {
  const options = {
    local_files_only: true,
    // fp32 reads exactly `model_file_name`.onnx (quantized dtypes add a suffix such as _quantized).
    dtype: 'fp32' as const,
    device: opts.workloadType.startsWith('GPU') ? 'cuda' as const : 'cpu' as const,
    ...graphLocation(opts.modelFile),
    session_options: {
      intraOpNumThreads: opts.intraOpThreads,
      interOpNumThreads: 1,
      executionMode: 'sequential' as const,
      graphOptimizationLevel: 'all' as const,
    },
  };
  // One call per literal task keeps the library's overloads happy; all three take (texts, options).
  const pipe = info.task === 'text-classification'
    ? await hf.pipeline('text-classification', dir, options)
    : info.task === 'feature-extraction'
      ? await hf.pipeline('feature-extraction', dir, options)
      : await hf.pipeline('token-classification', dir, options);
  return pipe;
}

/** The transformers flavor. */
export const transformersFlavor: Flavor = {
  name: 'transformers',
  capabilities: FLAVOR_CAPABILITIES.transformers,
  defaultModelFile: 'onnx/model.onnx',

  async inspect(dir, modelFile) {
    return (await readTransformersModel(dir, modelFile)).signature;
  },

  async inputExample() {
    return { inputs: EXAMPLE_TEXTS };
  },

  async load(dir, opts) {
    const info = await readTransformersModel(dir, opts.modelFile);
    const hf = await import('@huggingface/transformers');
    localFilesOnly(hf, path.resolve(dir));
    let pipe: TextPipeline;
    try {
      pipe = await createPipeline(hf, info, path.resolve(dir), opts);
    } catch (err) {
      throw new FerryError('MODEL_ERROR', `transformers.js cannot load the ${info.task} model: ${message(err)}`, { cause: err });
    }
    return new TransformersModelHandle(info, pipe);
  },
};
