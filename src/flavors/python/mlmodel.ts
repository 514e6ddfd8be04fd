/**
 * An MLflow `MLmodel` file's `python_function` flavor, read as data: the signature (column or
 * tensor based), the loader and how a request's tensors become the model's input. Pure functions of
 * the parsed YAML, so registration (and an out-of-process inspector) can call them: nothing here
 * unpickles, imports or runs the model.
 *
 * MLflow signatures are JSON strings inside the YAML:
 *   column based: '[{"type": "double", "name": "a"}, {"type": "string", "name": "b"}]'
 *     → inputs a: float64 [-1], b: string [-1]; the model gets a pandas DataFrame with columns a, b.
 *   tensor based: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]'
 *     → input "input": float32 [-1, 4]; the model gets the numpy array (one unnamed tensor) or a
 *     dict of arrays keyed by name (named tensors).
 */
import { FerryError } from '../../errors.js';
import type { DType, Signature, TensorSpec } from '../../tensor/index.js';
import { isJsonObject } from '../manifest.js';

/** How the Python worker builds the model's input from the request's tensors. */
export interface PythonInput {
  /** `columns`: a DataFrame, one column per input; `tensor`: the one array; `tensors`: a dict of arrays. */
  kind: 'columns' | 'tensor' | 'tensors';
  /** Input names in signature order (the DataFrame's column order). */
  names: string[];
}

/** What registration and the replica need from an MLmodel with a python_function flavor. */
export interface PythonModelInfo {
  signature: Signature;
  input: PythonInput;
  /** `loader_module` of the python_function flavor, e.g. "mlflow.sklearn", "mlflow.pyfunc.model". */
  loaderModule: string;
  /** The Python version the model was saved with, e.g. "3.11.2", when recorded. */
  pythonVersion: string | undefined;
}

/** The input name Ferry gives an unnamed tensor (MLflow's single-tensor signatures have none). */
const UNNAMED_TENSOR = 'input';

/** MLflow column types → Ferry dtypes. `binary` and `datetime` columns have no tensor dtype. */
const COLUMN_TYPES: Record<string, DType> = {
  double: 'float64', float: 'float32', long: 'int64', integer: 'int32', boolean: 'bool', string: 'string',
};

/** numpy dtype names (tensor-spec) → Ferry dtypes; `object`/`str` arrays carry strings. */
const TENSOR_DTYPES: Record<string, DType> = {
  float16: 'float16', float32: 'float32', float64: 'float64', int8: 'int8', int16: 'int16', int32: 'int32', int64: 'int64',
  uint8: 'uint8', uint16: 'uint16', uint32: 'uint32', uint64: 'uint64', bool: 'bool', object: 'string', str: 'string',
};

function bad(message: string): FerryError {
  return new FerryError('INVALID_PARAMETER_VALUE', `The MLmodel file's ${message}`);
}

/**
 * Reads the python_function flavor and the signature of a parsed MLmodel.
 * @throws FerryError INVALID_PARAMETER_VALUE naming the field that is missing or malformed.
 */
export function pythonModelInfo(mlmodel: unknown): PythonModelInfo {
  if (!isJsonObject(mlmodel) || !isJsonObject(mlmodel.flavors)) throw bad('flavors must be a mapping of flavor names.');
  const pyfunc = mlmodel.flavors.python_function;
  if (!isJsonObject(pyfunc)) throw bad(`flavors.python_function must be a mapping, got ${JSON.stringify(pyfunc)}.`);
  const loaderModule = pyfunc.loader_module;
  if (typeof loaderModule !== 'string' || loaderModule === '') throw bad(`flavors.python_function.loader_module must name a Python module, got ${JSON.stringify(loaderModule)}.`);
  const pv = pyfunc.python_version;
  const pythonVersion = typeof pv === 'string' || typeof pv === 'number' ? String(pv) : undefined;
  const sig = mlmodel.signature;
  if (!isJsonObject(sig) || sig.inputs === undefined || sig.inputs === null) {
    throw bad('signature is missing: Ferry serves MLflow models that carry one (save or log the model with signature= or input_example=).');
  }
  // pandas names an unnamed frame's columns 0, 1, ...
  const inputs = specsOf(sig.inputs, 'signature.inputs', (i, columns) => (columns ? String(i) : UNNAMED_TENSOR));
  if (inputs.specs.length === 0) throw bad('signature.inputs lists no input.');
  // Outputs are informational (metadata routes); an unnamed single output is MLflow's "predictions".
  const outputs = sig.outputs === undefined || sig.outputs === null
    ? { specs: [] as TensorSpec[] }
    : specsOf(sig.outputs, 'signature.outputs', (i, _columns, count) => (count === 1 ? 'predictions' : `output_${i}`));
  return {
    signature: {
      inputs: inputs.specs,
      outputs: outputs.specs,
    },
    input: {
      kind: inputs.columns ? 'columns' : inputs.named ? 'tensors' : 'tensor',
      names: inputs.specs.map((s) => s.name),
    },
    loaderModule,
    pythonVersion,
  };
}

/**
 * One signature side (a JSON string in the YAML) as TensorSpecs. Column and tensor specs cannot
 * be mixed (MLflow refuses that too); an unnamed tensor is allowed only alone.
 */
function specsOf(
  raw: unknown, field: string, unnamedName: (index: number, columns: boolean, count: number) => string,
): { specs: TensorSpec[]; columns: boolean; named: boolean } {
  let list: unknown;
  try {
    list = typeof raw === 'string' ? JSON.parse(raw) as unknown : raw;
  } catch (err) {
    throw bad(`${field} is not valid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(list)) throw bad(`${field} must be a JSON list of column or tensor specs, got ${JSON.stringify(list)}.`);
  const specs: TensorSpec[] = [];
  let columns = 0;
  let unnamed = 0;
  for (let i = 0; i < list.length; i++) {
    const where = `${field}[${i}]`;
    const item: unknown = list[i];
    if (!isJsonObject(item)) throw bad(`${where} must be an object, got ${JSON.stringify(item)}.`);
    const name = item.name === undefined || item.name === null ? '' : item.name;
    if (typeof name !== 'string') throw bad(`${where}.name must be a string, got ${JSON.stringify(name)}.`);
    if (name === '') unnamed++;
    if (item.type === 'tensor') {
      const ts = item['tensor-spec'];
      if (!isJsonObject(ts)) throw bad(`${where}.tensor-spec must be an object with dtype and shape.`);
      const dtype = typeof ts.dtype === 'string' ? TENSOR_DTYPES[ts.dtype] : undefined;
      if (dtype === undefined) throw bad(`${where}.tensor-spec.dtype ${JSON.stringify(ts.dtype)} is not supported (supported: ${Object.keys(TENSOR_DTYPES).join(', ')}).`);
      const shape = ts.shape;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && (d as number) >= -1)) {
        throw bad(`${where}.tensor-spec.shape must be a list of dimensions (-1 for any), got ${JSON.stringify(shape)}.`);
      }
      specs.push({ name, dtype, shape: shape as number[] });
    } else {
      const dtype = typeof item.type === 'string' ? COLUMN_TYPES[item.type] : undefined;
      if (dtype === undefined) throw bad(`${where}.type ${JSON.stringify(item.type)} is not supported (supported: tensor, ${Object.keys(COLUMN_TYPES).join(', ')}).`);
      columns++;
      specs.push({ name, dtype, shape: [-1] });
    }
  }
  if (columns > 0 && columns < specs.length) throw bad(`${field} mixes column and tensor specs.`);
  const isColumns = columns > 0;
  if (!isColumns && unnamed > 0 && specs.length > 1) throw bad(`${field} has several tensors, not all named.`);
  for (let i = 0; i < specs.length; i++) {
    const s = specs[i]!;
    if (s.name === '') s.name = unnamedName(i, isColumns, specs.length);
  }
  const names = new Set(specs.map((s) => s.name));
  if (names.size !== specs.length) throw bad(`${field} names an input twice.`);
  return { specs, columns: isColumns, named: unnamed === 0 };
}

/**
 * The `model_class`es of an mlflow.xgboost model whose pyfunc `predict` is `Booster.predict` on the
 * same rows: a Booster, and the scikit-learn regressor (its `predict` is the booster's prediction).
 * `XGBClassifier.predict` answers class labels where the booster answers probabilities, so a
 * classifier is left to Python.
 */
const BOOSTER_PREDICT_CLASSES = new Set(['xgboost.core.Booster', 'xgboost.sklearn.XGBRegressor']);

/**
 * The XGBoost model file of an MLflow model saved by `mlflow.xgboost` (the `xgboost` flavor's
 * `data`, e.g. "model.xgb"), when its pyfunc prediction is the booster's: such a version can also
 * be evaluated without Python (a family member). Undefined for any other MLmodel. Example:
 * `{flavors: {python_function: {loader_module: mlflow.xgboost}, xgboost: {data: model.xgb,
 * model_class: xgboost.core.Booster}}}` → "model.xgb".
 */
export function mlflowXgboostFile(mlmodel: unknown): string | undefined {
  if (!isJsonObject(mlmodel) || !isJsonObject(mlmodel.flavors)) return undefined;
  const { python_function: pyfunc, xgboost } = mlmodel.flavors;
  if (!isJsonObject(pyfunc) || pyfunc.loader_module !== 'mlflow.xgboost' || !isJsonObject(xgboost)) return undefined;
  const modelClass = xgboost.model_class ?? 'xgboost.core.Booster';
  if (typeof modelClass !== 'string' || !BOOSTER_PREDICT_CLASSES.has(modelClass)) return undefined;
  return typeof xgboost.data === 'string' && xgboost.data !== '' ? xgboost.data : undefined;
}
