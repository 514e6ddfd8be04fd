/** Every flavor runs the flavor contract (test/contract/flavor.ts) on a small valid artifact of its own. */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { writeJsModel, writeMlflowLinear, writeTinyBert, writeTinyGguf } from '../src/fixtures/index.js';
import { flavorContract } from './contract/flavor.js';

/** An MLflow pyfunc model's MLmodel as mlflow.sklearn writes it (the pickle is never read by inspect). */
const PYFUNC_MLMODEL = `flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.pkl
    python_version: 3.11.2
  sklearn:
    pickled_model: model.pkl
    serialization_format: cloudpickle
signature:
  inputs: '[{"type": "double", "name": "a", "required": true}, {"type": "string", "name": "s", "required": true}]'
  outputs: '[{"type": "double", "required": true}]'
  params: null
`;

flavorContract({ name: 'onnx', write: async (dir) => ({ dir: await writeMlflowLinear(dir), modelFile: 'model.onnx' }) });
flavorContract({ name: 'transformers', write: async (dir) => ({ dir: await writeTinyBert(dir, 'text-classification'), modelFile: 'onnx/model.onnx' }) });
flavorContract({ name: 'js', write: async (dir) => ({ dir: await writeJsModel(dir), modelFile: 'model.mjs' }) });
flavorContract({
  name: 'llm',
  write: async (dir) => {
    const file = await writeTinyGguf(dir);
    return { dir: path.dirname(file), modelFile: path.basename(file) };
  },
});
flavorContract({
  name: 'python',
  write: async (dir) => {
    await fsp.writeFile(path.join(dir, 'MLmodel'), PYFUNC_MLMODEL);
    await fsp.writeFile(path.join(dir, 'model.pkl'), 'never unpickled at registration');
    return { dir, modelFile: 'MLmodel' };
  },
});
