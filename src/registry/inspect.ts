/**
 * Registration-time inspection of a version's artifact directory: which flavor, which model file,
 * what signature, which input example. Reads metadata only (never runs the model), and runs only
 * in the inspector process (inspector-main.ts), never in the server's. Every problem is a
 * FerryError whose message becomes the version's `status_message` (FAILED_REGISTRATION).
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { FerryError } from '../errors.js';
// The inspection leaf, not the flavors' index, which loads onnxruntime (see flavors/inspection.ts).
import {
  FLAVOR_NAMES, flavorInspection, insideArtifact, inspectOnnxBytes, inspectXgboostBytes, isFlavorName, MANIFEST_FILE, mlflowXgboostFile, readManifest, readMetadataText,
  type FlavorName,
} from '../flavors/inspection.js';
import { isXgboostFile } from '../multi/xgboost.js';
import { decodeMlflowRequest } from '../protocols/index.js';
import type { Signature } from '../tensor/index.js';

export interface Inspection {
  flavor: FlavorName;
  modelFile: string;
  signature: Signature;
  /** A ready-to-send MLflow scoring request body, or undefined. */
  inputExample: unknown;
}

/** Input examples are small by nature; a bigger file is probably not one. */
const MAX_INPUT_EXAMPLE_BYTES = 1024 * 1024;

const EXPECTED = 'expected a .onnx file, a directory containing model.onnx, an MLflow model directory (MLmodel file with an onnx, transformers or python_function flavor), ' +
  'a Hugging Face model directory (config.json, tokenizer.json, onnx/model.onnx), a .gguf file (an llm), an XGBoost model (.ubj, .xgb or XGBoost .json file), ' +
  'or a directory with a ferry.json naming its flavor';

/** Where the model is in an artifact directory, and which flavor reads it. */
interface Located {
  flavor: FlavorName;
  modelFile: string;
  exampleFile: string | undefined;
}

export async function inspectArtifact(dir: string): Promise<Inspection> {
  const { flavor, modelFile, exampleFile } = await locateModel(dir);
  const impl = flavorInspection(flavor);
  const signature = await impl.inspect(dir, modelFile);
  const inputExample = exampleFile === undefined
    ? await derivedExample(impl.inputExample?.(dir, modelFile, signature), signature)
    : await readInputExample(dir, exampleFile, signature);
  return { flavor, modelFile, signature, inputExample };
}

/**
 * Inspects a one-file model held in memory (bulk registration's): an ONNX file (`.onnx`) or an
 * XGBoost model (`.ubj`, `.xgb`, or a `.json` file that starts as an XGBoost model does), the
 * kinds a family serves; anything else is refused by name.
 */
export async function inspectFile(file: string, bytes: Buffer): Promise<Inspection> {
  const refuse = (): never => {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Bulk registration takes one ONNX (.onnx) or XGBoost (.ubj, .xgb, or XGBoost .json) file per model; '${file}' is neither: register it alone (ferry models register, or model-versions/create).`);
  };
  const xgboost = XGBOOST_BINARY_FILE.test(file) || (file.endsWith('.json') && XGBOOST_JSON_START.test(bytes.toString('utf8', 0, 64)));
  const signature = file.endsWith('.onnx') ? await inspectOnnxBytes(bytes, file) : xgboost ? inspectXgboostBytes(bytes, file) : refuse();
  return { flavor: file.endsWith('.onnx') ? 'onnx' : 'xgboost', modelFile: file, signature, inputExample: undefined };
}

/**
 * The flavor and model file, from the directory's layout, first match wins:
 * 1. `ferry.json` naming a `flavor` (and optionally `main`, the model file);
 * 2. an MLflow `MLmodel` (onnx, then transformers, then python_function flavor);
 * 3. `config.json` (a Hugging Face model) → transformers;
 * 4. `model.mjs` → js;
 * 5. `model.onnx`, or a single `.onnx` file → onnx;
 * 6. a single `.ubj` or `.xgb` file, or a single XGBoost `.json` file → xgboost.
 */
async function locateModel(dir: string): Promise<Located> {
  const entries = await fsp.readdir(dir).catch(() => [] as string[]);
  const example = entries.includes('input_example.json') ? 'input_example.json' : undefined;
  const manifest = entries.includes(MANIFEST_FILE) ? await readManifest(dir) : undefined;
  if (manifest?.flavor !== undefined) {
    const { flavor, main } = manifest;
    if (!isFlavorName(flavor)) throw new FerryError('INVALID_PARAMETER_VALUE', `${MANIFEST_FILE} names flavor ${JSON.stringify(flavor)}; Ferry's flavors are ${FLAVOR_NAMES.join(', ')}.`);
    if (main !== undefined && typeof main !== 'string') throw new FerryError('INVALID_PARAMETER_VALUE', `${MANIFEST_FILE} main must be a path inside the model directory, got ${JSON.stringify(main)}.`);
    const modelFile = main === undefined ? flavorInspection(flavor).defaultModelFile : insideArtifact(main, `${MANIFEST_FILE} main`);
    return { flavor, modelFile, exampleFile: example };
  }
  const gguf = entries.filter((e) => e.endsWith('.gguf'));
  if (gguf.length > 1) throw new FerryError('INVALID_PARAMETER_VALUE', `The artifact has several .gguf files (${gguf.join(', ')}); an llm model is one GGUF file (split GGUF files are not supported).`);
  if (gguf.length === 1 && !entries.includes('MLmodel')) return { flavor: 'llm', modelFile: gguf[0] as string, exampleFile: undefined };
  if (entries.includes('MLmodel')) return readMlmodel(dir);
  if (entries.includes('config.json')) return { flavor: 'transformers', modelFile: flavorInspection('transformers').defaultModelFile, exampleFile: example };
  if (entries.includes('model.mjs')) return { flavor: 'js', modelFile: flavorInspection('js').defaultModelFile, exampleFile: example };
  const onnxFiles = entries.filter((e) => e.endsWith('.onnx'));
  let modelFile: string;
  if (entries.includes('model.onnx')) modelFile = 'model.onnx';
  else if (onnxFiles.length === 1) modelFile = onnxFiles[0] as string;
  else if (onnxFiles.length > 1) throw new FerryError('INVALID_PARAMETER_VALUE', `The artifact has several .onnx files (${onnxFiles.join(', ')}) and no model.onnx: ${EXPECTED}.`);
  else return locateXgboost(dir, entries, example);
  return { flavor: 'onnx', modelFile, exampleFile: example };
}

/** How an XGBoost JSON model starts (`Booster.save_model` writes the learner first). */
const XGBOOST_JSON_START = /^\s*\{\s*"learner"\s*:/;
/** XGBoost's binary model files (UBJSON and the legacy format), by extension. */
const XGBOOST_BINARY_FILE = /\.(ubj|xgb)$/;

/**
 * An artifact with no ONNX file: a single `.ubj` or `.xgb` file is an XGBoost model, and so is
 * a single `.json` file (besides an input example) whose first bytes are an XGBoost learner.
 */
async function locateXgboost(dir: string, entries: string[], example: string | undefined): Promise<Located> {
  const binary = entries.filter((e) => XGBOOST_BINARY_FILE.test(e));
  if (binary.length > 1) throw new FerryError('INVALID_PARAMETER_VALUE', `The artifact has several XGBoost files (${binary.join(', ')}); name the model with ferry.json {"flavor": "xgboost", "main": "<file>"}.`);
  if (binary.length === 1) return { flavor: 'xgboost', modelFile: binary[0] as string, exampleFile: example };
  const json = entries.filter((e) => e.endsWith('.json') && e !== example);
  if (json.length === 1 && XGBOOST_JSON_START.test(await fileStart(path.join(dir, json[0] as string)))) return { flavor: 'xgboost', modelFile: json[0] as string, exampleFile: example };
  throw new FerryError('INVALID_PARAMETER_VALUE', `No model found in the artifact: ${EXPECTED}.`);
}

/** The first 64 bytes of a file as text ('' when it cannot be read). */
async function fileStart(file: string): Promise<string> {
  const fh = await fsp.open(file, 'r').catch(() => undefined);
  if (fh === undefined) return '';
  try {
    const { buffer, bytesRead } = await fh.read(Buffer.alloc(64), 0, 64, 0);
    return buffer.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}

async function readMlmodel(dir: string): Promise<Located> {
  // Bounded like every metadata file (4 MiB); the YAML parser bounds alias expansion itself.
  const text = await readMetadataText(dir, 'MLmodel');
  let doc: unknown;
  try {
    doc = parseYaml(text ?? '');
  } catch (err) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `The MLmodel file is not valid YAML: ${(err as Error).message}`);
  }
  const flavors = field(doc, 'flavors');
  const onnx = field(flavors, 'onnx');
  const example = field(field(doc, 'saved_input_example_info'), 'artifact_path');
  const exampleFile = typeof example === 'string' ? safeRelative(example, 'saved_input_example_info.artifact_path') : undefined;
  if (onnx === undefined) {
    // mlflow.transformers with an ONNX export in the Hugging Face layout beside MLmodel.
    if (field(flavors, 'transformers') !== undefined) return { flavor: 'transformers', modelFile: flavorInspection('transformers').defaultModelFile, exampleFile };
    // Any other MLflow model that Python can load (mlflow.sklearn, mlflow.xgboost, a PythonModel, ...).
    if (field(flavors, 'python_function') !== undefined) return { flavor: 'python', modelFile: await boosterFile(dir, doc) ?? 'MLmodel', exampleFile };
    const names = typeof flavors === 'object' && flavors !== null ? Object.keys(flavors).join(', ') : 'none';
    throw new FerryError('INVALID_PARAMETER_VALUE', `The MLmodel file has no onnx, transformers or python_function flavor (flavors: ${names}); Ferry serves MLflow models saved with mlflow.onnx, mlflow.transformers models with an ONNX export (onnx/model.onnx), and any model with a python_function flavor.`);
  }
  const data = field(onnx, 'data');
  if (typeof data !== 'string') throw new FerryError('INVALID_PARAMETER_VALUE', "The MLmodel file's flavors.onnx.data must name the model file (e.g. model.onnx).");
  return { flavor: 'onnx', modelFile: safeRelative(data, 'flavors.onnx.data'), exampleFile };
}

/**
 * For an mlflow.xgboost model whose prediction is the booster's (`mlflowXgboostFile`): its XGBoost
 * file, once Ferry's evaluator has parsed it, recorded as the python version's model file so the
 * version can also be a family member evaluated without Python (the python flavor itself reads
 * the MLmodel, whatever the model file). Undefined otherwise, also when the file does not parse:
 * the version is still served by Python.
 */
async function boosterFile(dir: string, mlmodel: unknown): Promise<string | undefined> {
  const data = mlflowXgboostFile(mlmodel);
  if (data === undefined || !isXgboostFile(data)) return undefined;
  const file = safeRelative(data, 'flavors.xgboost.data');
  const parsed = await flavorInspection('xgboost').inspect(dir, file).then(() => true, () => false);
  return parsed ? file : undefined;
}

function field(obj: unknown, key: string): unknown {
  return typeof obj === 'object' && obj !== null ? (obj as Record<string, unknown>)[key] : undefined;
}

/** A path named inside an artifact must stay inside it. */
function safeRelative(p: string, what: string): string {
  return insideArtifact(p, `The MLmodel file's ${what}`);
}

/** A flavor-derived example, checked against the signature like a saved one (a derivation bug must not deploy). */
async function derivedExample(example: Promise<unknown> | undefined, signature: Signature): Promise<unknown> {
  const body = await example;
  if (body === undefined) return undefined;
  try {
    decodeMlflowRequest(body, signature);
  } catch (err) {
    throw new FerryError('INTERNAL_ERROR', `The flavor's derived input example does not fit the model's signature: ${(err as Error).message}`);
  }
  return body;
}

/**
 * Reads an input example and returns it as a scoring request body. MLflow saves tensors as
 * `{"inputs": ...}` and dataframes in pandas "split" orient (`{"columns", "data"}`); both are
 * checked against the signature, so an example that the model cannot take fails registration.
 */
async function readInputExample(dir: string, file: string, signature: Signature): Promise<unknown> {
  const p = path.join(dir, file);
  const st = await fsp.stat(p).catch(() => undefined);
  if (!st?.isFile()) throw new FerryError('INVALID_PARAMETER_VALUE', `The input example '${file}' named by the artifact is missing.`);
  if (st.size > MAX_INPUT_EXAMPLE_BYTES) throw new FerryError('INVALID_PARAMETER_VALUE', `The input example '${file}' is ${st.size} bytes; at most ${MAX_INPUT_EXAMPLE_BYTES} are accepted.`);
  let raw: unknown;
  try {
    raw = JSON.parse(await fsp.readFile(p, 'utf8')) as unknown;
  } catch (err) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `The input example '${file}' is not valid JSON: ${(err as Error).message}`);
  }
  const body = field(raw, 'columns') !== undefined && field(raw, 'data') !== undefined ? { dataframe_split: raw } : raw;
  try {
    decodeMlflowRequest(body, signature);
  } catch (err) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `The input example '${file}' does not fit the model's signature: ${(err as Error).message}`);
  }
  return body;
}
