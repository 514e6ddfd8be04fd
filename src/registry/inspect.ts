/**
 * Registration-time inspection of a version's artifact directory: which flavor, which model file,
 * what signature, which input example. Reads metadata only (never runs the model), so it is safe
 * in the server process. Every problem is a FerryError whose message becomes the version's
 * `status_message` (FAILED_REGISTRATION).
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { FerryError } from '../errors.js';
import { getFlavor, type FlavorName } from '../flavors/index.js';
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

const EXPECTED = 'expected a .onnx file, a directory containing model.onnx, an MLflow model directory (MLmodel file with an onnx flavor), or a .gguf file';

export async function inspectArtifact(dir: string): Promise<Inspection> {
  const entries = await fsp.readdir(dir).catch(() => [] as string[]);
  const gguf = entries.filter((e) => e.endsWith('.gguf'));
  if (gguf.length > 1) throw new FerryError('INVALID_PARAMETER_VALUE', `The artifact has several .gguf files (${gguf.join(', ')}); an llm model is one GGUF file (split GGUF files are not supported).`);
  if (gguf.length === 1 && !entries.includes('MLmodel')) {
    const ggufFile = gguf[0] as string;
    return { flavor: 'llm', modelFile: ggufFile, signature: await getFlavor('llm').inspect(dir, ggufFile), inputExample: undefined };
  }
  let modelFile: string;
  let exampleFile: string | undefined;
  if (entries.includes('MLmodel')) {
    ({ modelFile, exampleFile } = await readMlmodel(path.join(dir, 'MLmodel')));
  } else {
    const onnxFiles = entries.filter((e) => e.endsWith('.onnx'));
    if (entries.includes('model.onnx')) modelFile = 'model.onnx';
    else if (onnxFiles.length === 1) modelFile = onnxFiles[0] as string;
    else if (onnxFiles.length > 1) throw new FerryError('INVALID_PARAMETER_VALUE', `The artifact has several .onnx files (${onnxFiles.join(', ')}) and no model.onnx: ${EXPECTED}.`);
    else throw new FerryError('INVALID_PARAMETER_VALUE', `No model found in the artifact: ${EXPECTED}.`);
    if (entries.includes('input_example.json')) exampleFile = 'input_example.json';
  }
  const flavor: FlavorName = 'onnx';
  const signature = await getFlavor(flavor).inspect(dir, modelFile);
  const inputExample = exampleFile === undefined ? undefined : await readInputExample(dir, exampleFile, signature);
  return { flavor, modelFile, signature, inputExample };
}

async function readMlmodel(file: string): Promise<{ modelFile: string; exampleFile: string | undefined }> {
  let doc: unknown;
  try {
    doc = parseYaml(await fsp.readFile(file, 'utf8'));
  } catch (err) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `The MLmodel file is not valid YAML: ${(err as Error).message}`);
  }
  const flavors = field(doc, 'flavors');
  const onnx = field(flavors, 'onnx');
  if (onnx === undefined) {
    const names = typeof flavors === 'object' && flavors !== null ? Object.keys(flavors).join(', ') : 'none';
    throw new FerryError('INVALID_PARAMETER_VALUE', `The MLmodel file has no onnx flavor (flavors: ${names}); Ferry serves MLflow models saved with mlflow.onnx.`);
  }
  const data = field(onnx, 'data');
  if (typeof data !== 'string') throw new FerryError('INVALID_PARAMETER_VALUE', "The MLmodel file's flavors.onnx.data must name the model file (e.g. model.onnx).");
  const example = field(field(doc, 'saved_input_example_info'), 'artifact_path');
  return { modelFile: safeRelative(data, 'flavors.onnx.data'), exampleFile: typeof example === 'string' ? safeRelative(example, 'saved_input_example_info.artifact_path') : undefined };
}

function field(obj: unknown, key: string): unknown {
  return typeof obj === 'object' && obj !== null ? (obj as Record<string, unknown>)[key] : undefined;
}

/** A path named inside an artifact must stay inside it. */
function safeRelative(p: string, what: string): string {
  const norm = path.posix.normalize(p);
  if (path.posix.isAbsolute(norm) || norm.startsWith('..') || norm.includes('\0')) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `The MLmodel file's ${what} (${JSON.stringify(p)}) must be a path inside the model directory.`);
  }
  return norm;
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
