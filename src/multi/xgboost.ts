/**
 * XGBoost models as compact evaluators: a gradient-boosted tree ensemble saved by XGBoost itself
 * (`model.json`, `model.ubj`, or the legacy binary `model.xgb` that `mlflow.xgboost.save_model`
 * writes by default) compiled into flat typed arrays and run in plain JS, with no Python and no
 * onnxruntime. This is the most common tiny model of the many-models case (docs/multi-model.md).
 *
 * Supported: the `gbtree` booster (including `num_parallel_tree` forests) with numerical splits
 * (missing values follow each node's default direction) and, in JSON/UBJSON, categorical splits
 * (a category in the node's set goes right, any other category, a negative or a too large one goes
 * left, as XGBoost 1.7 decides); objectives `reg:squarederror`, `reg:squaredlogerror`,
 * `reg:pseudohubererror`, `reg:absoluteerror`, `reg:logistic`, `binary:logistic`,
 * `binary:logitraw`, `binary:hinge`, `count:poisson`, `reg:gamma`, `reg:tweedie`, `multi:softprob`,
 * `multi:softmax` and the ranking objectives (raw scores). Refused with the reason: `gblinear`,
 * `dart`, vector leaves (multi-target trees), survival objectives, categorical splits in the
 * legacy binary format (XGBoost cannot write those either).
 *
 * Arithmetic follows XGBoost's CPU predictor in float32: each row's margins start at the base
 * margin (`base_score` through the objective's link: logit for logistic objectives, log for
 * poisson/gamma/tweedie) and add each tree's leaf in tree order, rounding to float32 after every
 * addition; features are float32 and compared with the float32 split value (`x < split` goes
 * left). Margins are therefore bit-identical to `Booster.predict(output_margin=True)`; the
 * sigmoid, exp and softmax transforms use double-precision `Math.exp` rounded to float32 where
 * XGBoost calls `expf`, so transformed outputs are within 1 ulp of float32 (test/multi-xgboost
 * counts exact and 1-ulp answers against python3-xgboost 1.7: all 1,856 outputs of its eight models
 * were bit-identical).
 */
import { FerryError } from '../errors.js';
import type { OutputValue, Signature } from '../tensor/index.js';
import type { CompactModel } from './compact.js';
import { COMPACT_OVERHEAD_BYTES } from './compact.js';
import { decodeUbjson, type UbjValue } from './ubjson.js';

/** One tree as XGBoost stores it: per node its children (-1 for a leaf), split feature, split value or leaf value, default direction. */
interface XgbTree {
  left: Int32Array;
  right: Int32Array;
  feature: Uint32Array;
  /** The split value of an inner node, the leaf value of a leaf. */
  value: Float32Array;
  defaultLeft: Uint8Array;
  /** Categorical nodes: node id → the categories that go right. */
  categories: Map<number, Set<number>>;
}

/** What the evaluator needs of a model, from any of the three file formats. */
export interface XgbModel {
  objective: string;
  /** `base_score` as saved (probability space for logistic objectives). */
  baseScore: number;
  numFeature: number;
  /** Output groups: the number of classes for multi:*, else 1. */
  numGroup: number;
  trees: XgbTree[];
  /** The output group of each tree. */
  treeGroup: Int32Array;
}

/** Limits for hostile files: XGBoost models of real use are far below them. */
const MAX_TREES = 1_000_000;
const MAX_NODES = 50_000_000;
const MAX_FEATURES = 10_000_000;
const MAX_CLASSES = 100_000;

const LINK_LOGIT = new Set(['reg:logistic', 'binary:logistic']);
const LINK_LOG = new Set(['count:poisson', 'reg:gamma', 'reg:tweedie']);
const IDENTITY = new Set(['binary:logitraw', 'reg:squarederror', 'reg:squaredlogerror', 'reg:pseudohubererror', 'reg:absoluteerror', 'reg:linear', 'rank:pairwise', 'rank:ndcg', 'rank:map', 'binary:hinge', 'multi:softprob', 'multi:softmax']);

/** Whether `file` names a model file XGBoost wrote (by its extension). */
export function isXgboostFile(file: string): boolean {
  return /\.(json|ubj|xgb|bst|model|deprecated)$/i.test(file);
}

/** Reads an XGBoost model file of any of the three formats; throws a MODEL_ERROR naming what is wrong. */
export function parseXgboost(bytes: Uint8Array, file: string): XgbModel {
  const bad = (why: string): never => {
    throw new FerryError('MODEL_ERROR', `'${file}' is not an XGBoost model this server can run: ${why}.`);
  };
  try {
    const head = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(4, bytes.length)).toString('latin1');
    if (head.startsWith('{L') || head.startsWith('{i') || head.startsWith('{U') || head.startsWith('{$') || head.startsWith('{#')) return fromJson(decodeUbjson(bytes), bad);
    if (head.trimStart().startsWith('{')) return fromJson(parseXgbJson(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8')), bad);
    return fromLegacyBinary(bytes, bad);
  } catch (err) {
    if (err instanceof FerryError) throw err;
    return bad(err instanceof Error ? err.message : String(err));
  }
}

type Bad = (why: string) => never;

/**
 * JSON as XGBoost writes it: standard JSON except that a float may be `NaN`, `Infinity` or
 * `-Infinity` (the split value of a categorical node is NaN). Those bare tokens, outside strings,
 * become the strings "NaN", "Infinity" and "-Infinity", which `numbers` reads back.
 */
function parseXgbJson(text: string): UbjValue {
  let out = '';
  let from = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') {
      inString = true;
      continue;
    }
    const token = ch === 'N' && text.startsWith('NaN', i) ? 'NaN' : ch === 'I' && text.startsWith('Infinity', i) ? 'Infinity' : ch === '-' && text.startsWith('-Infinity', i) ? '-Infinity' : undefined;
    if (token !== undefined) {
      out += `${text.slice(from, i)}"${token}"`;
      i += token.length - 1;
      from = i + 1;
    }
  }
  return JSON.parse(out + text.slice(from)) as UbjValue;
}

function field(o: UbjValue | undefined, key: string, bad: Bad): UbjValue {
  if (typeof o !== 'object' || o === null || Array.isArray(o) || ArrayBuffer.isView(o)) return bad(`expected an object holding '${key}'`);
  const v = Object.hasOwn(o, key) ? (o as Record<string, UbjValue>)[key] : undefined;
  return v === undefined ? bad(`missing '${key}'`) : v;
}

function numberOf(v: UbjValue, what: string, bad: Bad, nonFinite = false): number {
  const n = typeof v === 'string' ? Number(v) : v;
  return typeof n === 'number' && (Number.isFinite(n) || (nonFinite && typeof v === 'string' && v !== '')) ? n : bad(`'${what}' is not a number`);
}

function textOf(v: UbjValue, what: string, bad: Bad): string {
  return typeof v === 'string' ? v : bad(`'${what}' is not a string`);
}

/** A numeric array field as a plain number list (JSON arrays, UBJSON typed arrays); `nonFinite` admits NaN and infinities. */
function numbers(v: UbjValue, what: string, bad: Bad, nonFinite = false): ArrayLike<number> {
  if (Array.isArray(v)) return v.map((x, i) => numberOf(x, `${what}[${i}]`, bad, nonFinite));
  if (ArrayBuffer.isView(v)) return v;
  return bad(`'${what}' is not an array`);
}

function fromJson(doc: UbjValue, bad: Bad): XgbModel {
  const learner = field(doc, 'learner', bad);
  const param = field(learner, 'learner_model_param', bad);
  const objective = textOf(field(field(learner, 'objective', bad), 'name', bad), 'objective.name', bad);
  const booster = field(learner, 'gradient_booster', bad);
  const boosterName = textOf(field(booster, 'name', bad), 'gradient_booster.name', bad);
  if (boosterName !== 'gbtree') bad(`booster '${boosterName}' (only gbtree is supported)`);
  const model = field(booster, 'model', bad);
  const rawTrees = field(model, 'trees', bad);
  if (!Array.isArray(rawTrees)) return bad("'trees' is not an array");
  if (rawTrees.length > MAX_TREES) bad(`${rawTrees.length} trees (at most ${MAX_TREES})`);
  let nodes = 0;
  const trees = rawTrees.map((t, i): XgbTree => {
    const tp = field(t, 'tree_param', bad);
    if (numberOf(field(tp, 'size_leaf_vector', bad), 'size_leaf_vector', bad) > 1) bad(`tree ${i} has vector leaves (multi-target trees are not supported)`);
    const left = Int32Array.from(numbers(field(t, 'left_children', bad), 'left_children', bad));
    const n = left.length;
    nodes += n;
    if (nodes > MAX_NODES) bad(`more than ${MAX_NODES} nodes`);
    const same = <T extends ArrayLike<number>>(a: T, what: string): T => (a.length === n ? a : bad(`tree ${i}: '${what}' has ${a.length} entries, not ${n}`));
    const tree: XgbTree = {
      left,
      right: same(Int32Array.from(numbers(field(t, 'right_children', bad), 'right_children', bad)), 'right_children'),
      feature: same(Uint32Array.from(numbers(field(t, 'split_indices', bad), 'split_indices', bad)), 'split_indices'),
      value: same(Float32Array.from(numbers(field(t, 'split_conditions', bad), 'split_conditions', bad, true)), 'split_conditions'),
      defaultLeft: same(Uint8Array.from(numbers(field(t, 'default_left', bad), 'default_left', bad)), 'default_left'),
      categories: new Map(),
    };
    const splitType = Object.hasOwn(t as object, 'split_type') ? numbers(field(t, 'split_type', bad), 'split_type', bad) : [];
    if (Array.from(splitType).some((s) => s !== 0)) {
      const catNodes = numbers(field(t, 'categories_nodes', bad), 'categories_nodes', bad);
      const segments = numbers(field(t, 'categories_segments', bad), 'categories_segments', bad);
      const sizes = numbers(field(t, 'categories_sizes', bad), 'categories_sizes', bad);
      const cats = numbers(field(t, 'categories', bad), 'categories', bad);
      for (let j = 0; j < catNodes.length; j++) {
        const start = segments[j] ?? -1;
        const size = sizes[j] ?? -1;
        if (start < 0 || size < 0 || start + size > cats.length) bad(`tree ${i}: categories segment ${j} is out of range`);
        tree.categories.set(catNodes[j] ?? -1, new Set(Array.from({ length: size }, (_, k) => cats[start + k] ?? -1)));
      }
    }
    return tree;
  });
  const treeGroup = Int32Array.from(numbers(field(model, 'tree_info', bad), 'tree_info', bad));
  const numClass = numberOf(field(param, 'num_class', bad), 'num_class', bad);
  return checked({
    objective,
    baseScore: numberOf(field(param, 'base_score', bad), 'base_score', bad),
    numFeature: numberOf(field(param, 'num_feature', bad), 'num_feature', bad),
    numGroup: Math.max(1, numClass),
    trees, treeGroup,
  }, bad);
}

/**
 * The legacy binary format (XGBoost < 2 `save_model` to a name not ending in .json/.ubj, and
 * MLflow's default `model.xgb`): an optional `binf` header; the learner's parameters (136 bytes:
 * float base_score, uint32 num_feature, int32 num_class, int32 contain_extra_attrs, …); the
 * objective and booster names (uint64 length + bytes each); the gbtree parameters (160 bytes,
 * int32 num_trees first); per tree its parameters (148 bytes, int32 num_nodes second), its nodes
 * (20 bytes each: int32 parent, left, right, uint32 split index with the default-left flag in the
 * top bit, float32 split value or leaf value) and their statistics (16 bytes each, unused here);
 * then one int32 output group per tree. Little-endian, as XGBoost writes it on x86 and ARM.
 */
function fromLegacyBinary(bytes: Uint8Array, bad: Bad): XgbModel {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(4, bytes.length)).toString('latin1') === 'binf' ? 4 : 0;
  const need = (n: number, what: string): void => {
    if (pos + n > bytes.length) bad(`the file ends inside ${what} (byte ${pos}, ${n} bytes needed)`);
  };
  const string = (what: string): string => {
    need(8, what);
    const len = Number(view.getBigUint64(pos, true));
    pos += 8;
    if (len > 256) bad(`${what} is ${len} bytes long`);
    need(len, what);
    const s = Buffer.from(bytes.buffer, bytes.byteOffset + pos, len).toString('utf8');
    pos += len;
    return s;
  };
  need(136, 'the learner parameters');
  const baseScore = view.getFloat32(pos, true);
  const numFeature = view.getUint32(pos + 4, true);
  const numClass = view.getInt32(pos + 8, true);
  pos += 136;
  const objective = string('the objective name');
  const booster = string('the booster name');
  if (booster !== 'gbtree') bad(`booster '${booster}' (only gbtree is supported)`);
  need(160, 'the gbtree parameters');
  const numTrees = view.getInt32(pos, true);
  pos += 160;
  if (numTrees < 0 || numTrees > MAX_TREES) bad(`${numTrees} trees`);
  const trees: XgbTree[] = [];
  let total = 0;
  for (let t = 0; t < numTrees; t++) {
    need(148, `tree ${t}'s parameters`);
    const n = view.getInt32(pos + 4, true);
    if (view.getInt32(pos + 20, true) > 1) bad(`tree ${t} has vector leaves`);
    pos += 148;
    total += n;
    if (n < 1 || total > MAX_NODES) bad(`tree ${t} declares ${n} nodes`);
    need(n * 36, `tree ${t}'s nodes`);
    const tree: XgbTree = {
      left: new Int32Array(n), right: new Int32Array(n), feature: new Uint32Array(n), value: new Float32Array(n), defaultLeft: new Uint8Array(n), categories: new Map(),
    };
    for (let i = 0; i < n; i++) {
      const o = pos + i * 20;
      tree.left[i] = view.getInt32(o + 4, true);
      tree.right[i] = view.getInt32(o + 8, true);
      const sindex = view.getUint32(o + 12, true);
      tree.feature[i] = sindex & 0x7fffffff;
      tree.defaultLeft[i] = sindex >>> 31;
      tree.value[i] = view.getFloat32(o + 16, true);
    }
    pos += n * 36; // nodes, then their statistics
    trees.push(tree);
  }
  need(numTrees * 4, 'the tree groups');
  const treeGroup = new Int32Array(numTrees);
  for (let t = 0; t < numTrees; t++) treeGroup[t] = view.getInt32(pos + t * 4, true);
  return checked({ objective, baseScore, numFeature, numGroup: Math.max(1, numClass), trees, treeGroup }, bad);
}

/** Checks what evaluation relies on: children in range and acyclic (each child after its parent), features and groups in range. */
function checked(m: XgbModel, bad: Bad): XgbModel {
  if (!LINK_LOGIT.has(m.objective) && !LINK_LOG.has(m.objective) && !IDENTITY.has(m.objective)) bad(`objective '${m.objective}' is not supported`);
  if (!Number.isInteger(m.numFeature) || m.numFeature < 1 || m.numFeature > MAX_FEATURES) bad(`num_feature ${m.numFeature}`);
  if (!Number.isInteger(m.numGroup) || m.numGroup > MAX_CLASSES) bad(`num_class ${m.numGroup}`);
  if (m.objective.startsWith('multi:') !== m.numGroup > 1) bad(`objective '${m.objective}' with num_class ${m.numGroup}`);
  if (m.treeGroup.length !== m.trees.length) bad(`${m.treeGroup.length} tree groups for ${m.trees.length} trees`);
  if (m.trees.length === 0) bad('no trees');
  m.treeGroup.forEach((g, t) => {
    if (g < 0 || g >= m.numGroup) bad(`tree ${t} belongs to output group ${g} of ${m.numGroup}`);
  });
  m.trees.forEach((tree, t) => {
    for (let i = 0; i < tree.left.length; i++) {
      const l = tree.left[i] ?? -1;
      const r = tree.right[i] ?? -1;
      if (l === -1) continue;
      // XGBoost numbers children after their parent, so a walk always ends.
      if (l <= i || r <= i || l >= tree.left.length || r >= tree.left.length) bad(`tree ${t} node ${i} has children ${l}, ${r}`);
      if ((tree.feature[i] ?? 0) >= m.numFeature) bad(`tree ${t} node ${i} splits on feature ${tree.feature[i] ?? 0} of ${m.numFeature}`);
    }
  });
  return m;
}

/** XGBoost's `kMaxCat`: categories are floats below 2^24 (exact integers in float32). */
const MAX_CATEGORY = 2 ** 24;

/**
 * All trees' nodes in one set of typed arrays (absolute child indexes, -1 for leaves), so a
 * family replica holds a model in a few arrays rather than per-tree objects.
 */
interface Flat { left: Int32Array; right: Int32Array; feature: Uint32Array; value: Float32Array; defaultLeft: Uint8Array; roots: Int32Array; group: Int32Array; cats: Map<number, Set<number>>; bytes: number }

function flatten(m: XgbModel): Flat {
  const total = m.trees.reduce((n, t) => n + t.left.length, 0);
  const f: Flat = {
    left: new Int32Array(total), right: new Int32Array(total), feature: new Uint32Array(total), value: new Float32Array(total), defaultLeft: new Uint8Array(total),
    roots: new Int32Array(m.trees.length), group: m.treeGroup, cats: new Map(), bytes: 0,
  };
  let base = 0;
  m.trees.forEach((t, ti) => {
    f.roots[ti] = base;
    for (let i = 0; i < t.left.length; i++) {
      const l = t.left[i] ?? -1;
      f.left[base + i] = l === -1 ? -1 : base + l;
      f.right[base + i] = l === -1 ? -1 : base + (t.right[i] ?? 0);
      f.feature[base + i] = t.feature[i] ?? 0;
      f.value[base + i] = t.value[i] ?? 0;
      f.defaultLeft[base + i] = t.defaultLeft[i] ?? 0;
    }
    for (const [node, set] of t.categories) f.cats.set(base + node, set);
    base += t.left.length;
  });
  f.bytes = total * (4 + 4 + 4 + 4 + 1) + m.trees.length * 8 + [...f.cats.values()].reduce((n, s) => n + 16 * s.size, 0);
  return f;
}

/** `expf` as XGBoost calls it, within 1 ulp: double-precision exp rounded to float32. */
const expf = (x: number): number => Math.fround(Math.exp(x));

/** XGBoost 1.7's `common::Sigmoid` in float32. */
function sigmoid(x: number): number {
  const t = Math.min(-x, Math.fround(88.7));
  return Math.fround(1 / Math.fround(expf(t) + 1));
}

/** The base margin: `base_score` through the objective's `ProbToMargin`, in float32. */
function baseMargin(m: XgbModel): number {
  const b = Math.fround(m.baseScore);
  if (LINK_LOGIT.has(m.objective)) return Math.fround(-Math.log(Math.fround(Math.fround(1 / b) - 1)));
  if (LINK_LOG.has(m.objective)) return Math.fround(Math.log(b));
  return b;
}

/**
 * The signature of an XGBoost model: input `input` float32 [-1, num_feature] (NaN is a missing
 * value), output `predictions` float32: [-1] for one output group or `multi:softmax` (the class
 * index), [-1, classes] for `multi:softprob`, exactly the shape `Booster.predict` gives.
 */
export function xgboostSignature(m: XgbModel): Signature {
  const softprob = m.objective === 'multi:softprob';
  return {
    inputs: [{ name: 'input', dtype: 'float32', shape: [-1, m.numFeature] }],
    outputs: [{ name: 'predictions', dtype: 'float32', shape: softprob ? [-1, m.numGroup] : [-1] }],
  };
}

/**
 * The compact evaluator of an XGBoost model file, with the signature of `xgboostSignature`.
 */
export function compileXgboost(bytes: Uint8Array, file: string): CompactModel {
  const m = parseXgboost(bytes, file);
  const f = flatten(m);
  const groups = m.numGroup;
  const features = m.numFeature;
  const base = baseMargin(m);
  const outWidth = m.objective === 'multi:softprob' ? groups : 1;
  const signature = xgboostSignature(m);
  const leafOf = (x: Float32Array, row: number, node: number): number => {
    let n = node;
    for (;;) {
      const l = f.left[n] ?? -1;
      if (l === -1) return f.value[n] ?? 0;
      const v = x[row * features + (f.feature[n] ?? 0)] ?? Number.NaN;
      const cats = f.cats.get(n);
      if (Number.isNaN(v)) n = f.defaultLeft[n] === 1 ? l : f.right[n] ?? 0;
      else if (cats !== undefined) n = v < 0 || v >= MAX_CATEGORY || !cats.has(Math.trunc(v)) ? l : f.right[n] ?? 0;
      else n = v < (f.value[n] ?? 0) ? l : f.right[n] ?? 0;
    }
  };
  const evaluate = (x: Float32Array, rows: number): Float32Array => {
    const margins = new Float32Array(rows * groups).fill(base);
    for (let t = 0; t < f.roots.length; t++) {
      const root = f.roots[t] ?? 0;
      const g = f.group[t] ?? 0;
      for (let r = 0; r < rows; r++) margins[r * groups + g] = Math.fround((margins[r * groups + g] ?? 0) + leafOf(x, r, root));
    }
    return transform(m.objective, margins, rows, groups);
  };
  return {
    kind: `XGBoost ${m.objective}`,
    signature,
    sizeBytes: f.bytes + COMPACT_OVERHEAD_BYTES,
    predict(inputs) {
      const x = inputs.input;
      if (x === undefined || !(x.data instanceof Float32Array)) return Promise.reject(new FerryError('MODEL_ERROR', "Missing float32 input 'input'."));
      const rows = x.shape[0] ?? 0;
      const y = evaluate(x.data, rows);
      const out: OutputValue = { dtype: 'float32', shape: outWidth === 1 ? [rows] : [rows, outWidth], data: y };
      return Promise.resolve({ predictions: out });
    },
    close: () => Promise.resolve(),
  };
}

/** XGBoost's `PredTransform` of each objective on [rows, groups] margins. */
function transform(objective: string, margins: Float32Array, rows: number, groups: number): Float32Array {
  if (objective === 'reg:logistic' || objective === 'binary:logistic') return margins.map(sigmoid);
  if (LINK_LOG.has(objective)) return margins.map(expf);
  if (objective === 'binary:hinge') return margins.map((v) => (v > 0 ? 1 : 0));
  if (objective !== 'multi:softprob' && objective !== 'multi:softmax') return margins;
  if (objective === 'multi:softmax') {
    const best = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      let top = 0;
      for (let c = 1; c < groups; c++) if ((margins[r * groups + c] ?? 0) > (margins[r * groups + top] ?? 0)) top = c;
      best[r] = top;
    }
    return best;
  }
  // common::Softmax: float max, float exps, a double sum, float quotients.
  for (let r = 0; r < rows; r++) {
    const o = r * groups;
    let max = margins[o] ?? 0;
    for (let c = 1; c < groups; c++) max = Math.max(max, margins[o + c] ?? 0);
    let sum = 0;
    for (let c = 0; c < groups; c++) {
      const e = expf(Math.fround((margins[o + c] ?? 0) - max));
      margins[o + c] = e;
      sum += e;
    }
    const s = Math.fround(sum);
    for (let c = 0; c < groups; c++) margins[o + c] = Math.fround((margins[o + c] ?? 0) / s);
  }
  return margins;
}
