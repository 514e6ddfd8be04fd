/**
 * Reading a Hugging Face model directory (pure JS: JSON files and the ONNX graph's protobuf, no
 * tokenizer or session), shared by registration (`inspect`, in the server) and `load` (in the
 * replica), so both derive the same task and signature from the same files.
 *
 * Layout (what transformers.js reads for a text model exported with Optimum):
 * ```
 * config.json            architectures, model_type, id2label
 * tokenizer.json         the tokenizers-library tokenizer
 * tokenizer_config.json  special tokens, model_max_length
 * onnx/model.onnx        the graph: input_ids, attention_mask[, token_type_ids] → logits | last_hidden_state
 * modules.json, 1_Pooling/config.json   (sentence-transformers, optional) pooling and Normalize
 * ferry.json             (optional) {"flavor": "transformers", "task", "pooling", "normalize"}
 * MLmodel                (optional) flavors.transformers.task
 * ```
 */
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { FerryError } from '../../errors.js';
import type { Signature, TensorSpec } from '../../tensor/index.js';
import { checkManifestKeys, insideArtifact, isFile, isJsonObject, readJsonFile, readManifest, readMetadataText } from '../manifest.js';
import { inspectOnnx } from '../onnx/model-proto.js';

export const TRANSFORMERS_TASKS = ['text-classification', 'feature-extraction', 'token-classification'] as const;
export type TransformersTask = (typeof TRANSFORMERS_TASKS)[number];

/** Pipeline names accepted for a task, as Hugging Face pipelines accept them. */
const TASK_ALIASES: Record<string, TransformersTask> = {
  'sentiment-analysis': 'text-classification',
  ner: 'token-classification',
  'sentence-similarity': 'feature-extraction',
};

/** How feature-extraction turns token vectors into one vector per text (transformers.js names). */
export const POOLINGS = ['mean', 'cls', 'first_token', 'last_token'] as const;
export type Pooling = (typeof POOLINGS)[number];

/** The text input every task takes: one string per row. */
export const TEXT_INPUT = 'text';

export interface TransformersModel {
  task: TransformersTask;
  signature: Signature;
  /** feature-extraction: token vectors → one vector per text. */
  pooling: Pooling;
  /** feature-extraction: divide each embedding by its L2 norm. */
  normalize: boolean;
}

const REQUIRED_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json'] as const;
const MANIFEST_KEYS = ['task', 'pooling', 'normalize'] as const;

function invalid(problem: string): FerryError {
  return new FerryError('INVALID_PARAMETER_VALUE', `Invalid Hugging Face model directory: ${problem}.`);
}

/**
 * Reads `dir` as a Hugging Face text model whose ONNX graph is `modelFile` and derives its task and
 * signature. Throws a FerryError (INVALID_PARAMETER_VALUE) naming the missing or wrong file.
 */
export async function readTransformersModel(dir: string, modelFile: string): Promise<TransformersModel> {
  for (const file of REQUIRED_FILES) {
    if (!(await isFile(dir, file))) throw invalid(`${file} not found (a transformers model needs ${REQUIRED_FILES.join(', ')} and an ONNX graph such as onnx/model.onnx)`);
  }
  const config = await readJsonFile(dir, 'config.json');
  if (!isJsonObject(config)) throw invalid('config.json is not a JSON object');
  const manifest = (await readManifest(dir)) ?? {};
  checkManifestKeys(manifest, 'transformers', MANIFEST_KEYS);

  const task = parseTask(manifest.task, 'ferry.json task') ?? (await mlmodelTask(dir)) ?? (await taskFromConfig(dir, config));
  const graph = await inspectOnnx(dir, insideArtifact(modelFile, 'The ONNX graph'));
  await checkExternalData(dir, config, modelFile);
  if (!graph.inputs.some((i) => i.name === 'input_ids')) {
    throw invalid(`the ONNX graph ${modelFile} has no input_ids input (inputs: ${graph.inputs.map((i) => i.name).join(', ')}); export it for a text model`);
  }
  const output = (name: string): TensorSpec | undefined => graph.outputs.find((o): o is TensorSpec => o.name === name && o.dtype !== 'map' && o.dtype !== 'json');
  const requireOutput = (names: readonly string[]): TensorSpec => {
    const found = names.map(output).find((o) => o !== undefined);
    if (found === undefined) {
      throw invalid(`the ONNX graph ${modelFile} has no ${names.join(' or ')} output, which task ${task} reads (outputs: ${graph.outputs.map((o) => o.name).join(', ')})`);
    }
    return found;
  };

  const text: TensorSpec = { name: TEXT_INPUT, dtype: 'string', shape: [-1] };
  switch (task) {
    case 'text-classification':
      requireOutput(['logits']);
      return {
        task, pooling: 'mean', normalize: false,
        signature: { inputs: [text], outputs: [{ name: 'label', dtype: 'string', shape: [-1] }, { name: 'score', dtype: 'float32', shape: [-1] }] },
      };
    case 'token-classification':
      requireOutput(['logits']);
      return { task, pooling: 'mean', normalize: false, signature: { inputs: [text], outputs: [{ name: 'entities', dtype: 'json', shape: undefined }] } };
    case 'feature-extraction': {
      const hidden = requireOutput(['last_hidden_state', 'token_embeddings', 'logits']);
      const graphDim = hidden.shape?.at(-1);
      const configDim = typeof config.hidden_size === 'number' ? config.hidden_size : undefined;
      const dim = graphDim !== undefined && graphDim > 0 ? graphDim : configDim ?? -1;
      return {
        task, ...(await poolingOf(dir, manifest)),
        signature: { inputs: [text], outputs: [{ name: 'embeddings', dtype: 'float32', shape: [-1, dim] }] },
      };
    }
  }
}

/**
 * The external weight files config.json's `transformers.js_config.use_external_data_format`
 * announces (`model.onnx_data`, `model.onnx_data_1`, ...) must be there: transformers.js 4.3 loses
 * the error of a missing one in an unhandled rejection, which would crash the replica mid-load.
 */
async function checkExternalData(dir: string, config: Record<string, unknown>, modelFile: string): Promise<void> {
  const jsConfig = config['transformers.js_config'];
  const setting = isJsonObject(jsConfig) ? jsConfig.use_external_data_format : undefined;
  const base = path.posix.basename(modelFile);
  // As the library reads it: a count (true = 1), or counts keyed by file name with or without .onnx.
  const raw = isJsonObject(setting) ? setting[base] ?? setting[path.posix.basename(base, '.onnx')] : setting;
  const chunks = Number(raw ?? 0);
  if (!Number.isInteger(chunks) || chunks < 0) throw invalid(`config.json transformers.js_config.use_external_data_format is ${JSON.stringify(setting)}; expected true, false or a number of files`);
  for (let i = 0; i < chunks; i++) {
    const file = `${modelFile}_data${i === 0 ? '' : `_${i}`}`;
    if (!(await isFile(dir, file))) throw invalid(`${file} not found (config.json announces ${chunks} external data file${chunks === 1 ? '' : 's'} for ${modelFile})`);
  }
}

/** A task name (or alias) from metadata, undefined when absent; throws for an unsupported one. */
function parseTask(value: unknown, where: string): TransformersTask | undefined {
  if (value === undefined || value === null) return undefined;
  const task = typeof value === 'string' ? (TASK_ALIASES[value] ?? value) : value;
  if (!(TRANSFORMERS_TASKS as readonly unknown[]).includes(task)) {
    throw invalid(`${where} is ${JSON.stringify(value)}; supported tasks: ${TRANSFORMERS_TASKS.join(', ')} (aliases: ${Object.keys(TASK_ALIASES).join(', ')})`);
  }
  return task as TransformersTask;
}

/** `flavors.transformers.task` of an MLflow MLmodel file, when there is one. */
async function mlmodelTask(dir: string): Promise<TransformersTask | undefined> {
  if (!(await isFile(dir, 'MLmodel'))) return undefined;
  let doc: unknown;
  try {
    doc = parseYaml(await readMetadataText(dir, 'MLmodel') ?? '');
  } catch (err) {
    throw invalid(`the MLmodel file is not valid YAML: ${(err as Error).message}`);
  }
  const flavors = isJsonObject(doc) ? doc.flavors : undefined;
  const transformers = isJsonObject(flavors) ? flavors.transformers : undefined;
  return parseTask(isJsonObject(transformers) ? transformers.task : undefined, 'the MLmodel flavors.transformers.task');
}

/**
 * The task the model's head implies: `*ForSequenceClassification` → text-classification,
 * `*ForTokenClassification` → token-classification, a bare encoder (`BertModel`) or a
 * sentence-transformers directory (`modules.json`) → feature-extraction.
 */
async function taskFromConfig(dir: string, config: Record<string, unknown>): Promise<TransformersTask> {
  const architectures = Array.isArray(config.architectures) ? config.architectures.filter((a): a is string => typeof a === 'string') : [];
  for (const arch of architectures) {
    if (arch.endsWith('ForSequenceClassification')) return 'text-classification';
    if (arch.endsWith('ForTokenClassification')) return 'token-classification';
    if (arch.endsWith('Model')) return 'feature-extraction';
  }
  if (await isFile(dir, 'modules.json')) return 'feature-extraction';
  throw invalid(`cannot tell the task from config.json (architectures: ${architectures.length > 0 ? architectures.join(', ') : 'none'}); name it in ferry.json, e.g. {"flavor": "transformers", "task": "text-classification"} (supported: ${TRANSFORMERS_TASKS.join(', ')})`);
}

/**
 * Pooling and normalisation for feature-extraction: ferry.json `pooling` / `normalize` when given;
 * else the sentence-transformers modules (the Pooling module's config.json, a Normalize module);
 * else mean pooling and normalisation, the usual sentence-embedding recipe.
 */
async function poolingOf(dir: string, manifest: Record<string, unknown>): Promise<{ pooling: Pooling; normalize: boolean }> {
  const modules = await readJsonFile(dir, 'modules.json');
  const list = Array.isArray(modules) ? modules.filter(isJsonObject) : [];
  const typeEnds = (m: Record<string, unknown>, suffix: string): boolean => typeof m.type === 'string' && m.type.endsWith(suffix);
  let pooling: Pooling = 'mean';
  let normalize = modules === undefined || list.some((m) => typeEnds(m, 'Normalize'));
  const poolingModule = list.find((m) => typeEnds(m, 'Pooling'));
  if (poolingModule !== undefined && typeof poolingModule.path === 'string') {
    const file = path.posix.join(insideArtifact(poolingModule.path || '.', 'modules.json Pooling path'), 'config.json');
    const cfg = await readJsonFile(dir, file);
    if (isJsonObject(cfg)) pooling = stPooling(cfg, file);
  }
  if (manifest.pooling !== undefined) {
    if (!(POOLINGS as readonly unknown[]).includes(manifest.pooling)) throw invalid(`ferry.json pooling is ${JSON.stringify(manifest.pooling)}; expected one of ${POOLINGS.join(', ')}`);
    pooling = manifest.pooling as Pooling;
  }
  if (manifest.normalize !== undefined) {
    if (typeof manifest.normalize !== 'boolean') throw invalid(`ferry.json normalize is ${JSON.stringify(manifest.normalize)}; expected true or false`);
    normalize = manifest.normalize;
  }
  return { pooling, normalize };
}

/** The pooling a sentence-transformers Pooling config selects; the modes transformers.js lacks are refused. */
function stPooling(cfg: Record<string, unknown>, file: string): Pooling {
  if (cfg.pooling_mode_cls_token === true) return 'cls';
  if (cfg.pooling_mode_lasttoken === true) return 'last_token';
  if (cfg.pooling_mode_mean_tokens === true) return 'mean';
  const modes = Object.keys(cfg).filter((k) => k.startsWith('pooling_mode_') && cfg[k] === true);
  throw invalid(`${file} selects pooling ${modes.join(', ') || 'none'}; supported: mean, cls, lasttoken (or set "pooling" in ferry.json)`);
}
