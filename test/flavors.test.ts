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

/** A one-split XGBoost regressor in XGBoost's JSON format (as `Booster.save_model('model.json')` writes it). */
const XGBOOST_JSON = JSON.stringify({
  learner: {
    learner_model_param: { base_score: '5E-1', num_class: '0', num_feature: '2' },
    objective: { name: 'reg:squarederror' },
    gradient_booster: {
      name: 'gbtree',
      model: {
        trees: [{ tree_param: { size_leaf_vector: '0' }, left_children: [1, -1, -1], right_children: [2, -1, -1], split_indices: [0, 0, 0], split_conditions: [0.5, -1, 1], default_left: [1, 0, 0] }],
        tree_info: [0],
      },
    },
  },
});
flavorContract({
  name: 'xgboost',
  write: async (dir) => {
    await fsp.writeFile(path.join(dir, 'model.json'), XGBOOST_JSON);
    return { dir, modelFile: 'model.json' };
  },
});
