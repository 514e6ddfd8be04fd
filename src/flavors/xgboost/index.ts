/**
 * The xgboost flavor: a gradient-boosted tree model saved by XGBoost itself (`model.ubj`,
 * `model.json`, or the legacy binary `model.xgb`), served by Ferry's own evaluator
 * (src/multi/xgboost.ts) in plain JS: no Python, no onnxruntime, no native addon. `inspect` parses
 * the file (pure JS, so the inspector process can run it) and reads the signature from it: input
 * `input` float32 [-1, num_feature], output `predictions`.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { FerryError } from '../../errors.js';
import { compileXgboost, parseXgboost, xgboostSignature } from '../../multi/xgboost.js';
import { FLAVOR_CAPABILITIES } from '../capabilities.js';
import type { Signature } from '../../tensor/index.js';
import type { Flavor } from '../types.js';
import { checkManifestKeys, insideArtifact, readManifest } from '../manifest.js';

/** Largest model file read: XGBoost models of real use are a few MB; the parser's own limits bound the rest. */
export const MAX_XGBOOST_BYTES = 256 * 1024 * 1024;

/** The bytes of `modelFile` inside `dir`; a 400 naming the file when it is missing, not a file or too large. */
async function readModelFile(dir: string, modelFile: string): Promise<Uint8Array> {
  const file = path.join(dir, insideArtifact(modelFile, 'The xgboost model file'));
  const st = await fsp.stat(file).catch(() => undefined);
  if (st?.isFile() !== true) throw new FerryError('INVALID_PARAMETER_VALUE', `The xgboost model file '${modelFile}' is missing or not a file.`);
  if (st.size > MAX_XGBOOST_BYTES) throw new FerryError('INVALID_PARAMETER_VALUE', `The xgboost model file '${modelFile}' is ${st.size} bytes; at most ${MAX_XGBOOST_BYTES} are accepted.`);
  return fsp.readFile(file);
}

/** The signature of an XGBoost model file's bytes, as registration reads it. */
export function inspectXgboostBytes(bytes: Uint8Array, modelFile: string): Signature {
  if (bytes.byteLength > MAX_XGBOOST_BYTES) throw new FerryError('INVALID_PARAMETER_VALUE', `The xgboost model file '${modelFile}' is ${bytes.byteLength} bytes; at most ${MAX_XGBOOST_BYTES} are accepted.`);
  try {
    return xgboostSignature(parseXgboost(bytes, modelFile));
  } catch (err) {
    // At registration a file the evaluator cannot run is the caller's input: a 400, same message.
    if (err instanceof FerryError) throw new FerryError('INVALID_PARAMETER_VALUE', err.message, { cause: err });
    throw err;
  }
}

export const xgboostFlavor: Flavor = {
  name: 'xgboost',
  capabilities: FLAVOR_CAPABILITIES.xgboost,
  defaultModelFile: 'model.ubj',

  async inspect(dir, modelFile) {
    // ferry.json takes only `flavor` and `main` here: a typo ("mian") is reported, not ignored.
    const manifest = await readManifest(dir);
    if (manifest !== undefined) checkManifestKeys(manifest, 'xgboost', []);
    return inspectXgboostBytes(await readModelFile(dir, modelFile), modelFile);
  },

  async load(dir, opts) {
    return compileXgboost(await readModelFile(dir, opts.modelFile), opts.modelFile);
  },
};
