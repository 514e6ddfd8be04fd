/**
 * Compact evaluators: ONNX-ML linear and tree-ensemble models run in plain JS from their parsed
 * ModelProto, with no onnxruntime session. A family replica holds thousands of such models, and
 * an onnxruntime session costs ~80–120 KB each and does not give all of it back on release()
 * (docs/multi-model.md, "Why compact evaluators"); a compact linear model is a few hundred bytes.
 *
 * Supported graphs (one float32 input [-1, F]; anything else is left to onnxruntime):
 * - `LinearRegressor` (post_transform NONE);
 * - `LinearClassifier` with ≥ 3 classes or 2 coefficient rows (post_transform NONE, LOGISTIC,
 *   SOFTMAX, SOFTMAX_ZERO), optionally followed by `ZipMap`;
 * - `TreeEnsembleRegressor` (aggregate SUM or AVERAGE, post_transform NONE);
 * - `TreeEnsembleClassifier` with ≥ 3 classes (post_transform NONE), optionally followed by `ZipMap`;
 * - `MatMul` by an initializer, then `Add` of an initializer (a linear layer as exported by hand).
 * Sums run in float32 (`Math.fround` after each step), as onnxruntime's CPU kernels do; for
 * inputs and weights that are binary fractions (the fixtures') results are bit-identical.
 */
import { FerryError } from '../errors.js';
import { int64ToNumber, int64ToString, signatureOf, type ModelProto } from '../flavors/onnx/model-proto.js';
import { zipRows } from '../flavors/onnx/zipmap.js';
import type { LoadedModel } from '../flavors/types.js';
import type { OutputValue, Signature, Tensor } from '../tensor/index.js';

type NodeProto = NonNullable<NonNullable<ModelProto['graph']>['node']>[number];
type TensorProto = NonNullable<NonNullable<ModelProto['graph']>['initializer']>[number];

/** A model the compact path runs: a LoadedModel plus the bytes it holds, for the cache's budget. */
export interface CompactModel extends LoadedModel {
  /** Which evaluator runs it, e.g. "TreeEnsembleRegressor". */
  readonly kind: string;
  /** Estimated heap bytes: the typed arrays plus a fixed per-model overhead. */
  readonly sizeBytes: number;
}

/**
 * Fixed heap cost of one compact model besides its weights (closures, the signature objects, the
 * cache entry): measured 2.87 KB of heap per model, weights included (~70–400 B), after compiling
 * 1000 generated family models (bench/multi.ts prints it again); rounded up.
 */
export const COMPACT_OVERHEAD_BYTES = 3072;

/** Computes the graph's outputs for one float32 [rows, F] input. */
type Evaluate = (x: Float32Array, rows: number) => Record<string, OutputValue>;

interface Compiled { kind: string; features: number; evaluate: Evaluate; weightBytes: number }

/** Attributes of one node by name, with typed getters; int64s become numbers. */
class Attrs {
  private readonly byName: Map<string, NonNullable<NodeProto['attribute']>[number]>;
  constructor(node: NodeProto) {
    this.byName = new Map((node.attribute ?? []).map((a) => [a.name ?? '', a]));
  }
  has(name: string): boolean {
    return this.byName.has(name);
  }
  floats(name: string): Float32Array {
    return Float32Array.from(this.byName.get(name)?.floats ?? []);
  }
  ints(name: string): number[] {
    return (this.byName.get(name)?.ints ?? []).map(int64ToNumber);
  }
  intStrings(name: string): string[] {
    return (this.byName.get(name)?.ints ?? []).map(int64ToString);
  }
  strings(name: string): string[] {
    return (this.byName.get(name)?.strings ?? []).map((s) => Buffer.from(s).toString('utf8'));
  }
  string(name: string, fallback: string): string {
    const s = this.byName.get(name)?.s;
    return s === undefined || s === null ? fallback : Buffer.from(s).toString('utf8');
  }
  int(name: string, fallback: number): number {
    const a = this.byName.get(name);
    return a?.i === undefined || a.i === null ? fallback : int64ToNumber(a.i);
  }
}

/** Class labels of a classifier or ZipMap: int64 labels as decimal text plus their dtype. */
function classLabels(a: Attrs): { labels: string[]; int: boolean } {
  const strings = a.strings('classlabels_strings');
  return strings.length > 0 ? { labels: strings, int: false } : { labels: a.intStrings('classlabels_int64s').concat(a.intStrings('classlabels_ints')), int: true };
}

function labelTensor(best: Int32Array, labels: readonly string[], int: boolean): Tensor {
  const rows = best.length;
  return int
    ? { dtype: 'int64', shape: [rows], data: BigInt64Array.from(best, (c) => BigInt(labels[c] ?? '0')) }
    : { dtype: 'string', shape: [rows], data: Array.from(best, (c) => labels[c] ?? '') };
}

/** Index of the first highest score of each row of a [rows, width] matrix. */
function argmaxRows(scores: Float32Array, rows: number, width: number): Int32Array {
  const best = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let top = 0;
    for (let c = 1; c < width; c++) if ((scores[r * width + c] ?? 0) > (scores[r * width + top] ?? 0)) top = c;
    best[r] = top;
  }
  return best;
}

/** onnxruntime's classifier post transforms, in place on a [rows, width] score matrix. */
function postTransform(kind: string, scores: Float32Array, rows: number, width: number): void {
  if (kind === 'NONE') return;
  for (let r = 0; r < rows; r++) {
    const o = r * width;
    if (kind === 'LOGISTIC') {
      for (let c = 0; c < width; c++) scores[o + c] = 1 / (1 + Math.exp(-(scores[o + c] ?? 0)));
      continue;
    }
    let max = -Infinity;
    for (let c = 0; c < width; c++) max = Math.max(max, scores[o + c] ?? 0);
    let sum = 0;
    for (let c = 0; c < width; c++) {
      const v = scores[o + c] ?? 0;
      // SOFTMAX_ZERO: zero scores stay zero (and do not count in the sum).
      const e = kind === 'SOFTMAX_ZERO' && v === 0 ? 0 : Math.exp(v - max);
      scores[o + c] = e;
      sum += e;
    }
    for (let c = 0; c < width; c++) scores[o + c] = sum === 0 ? 0 : (scores[o + c] ?? 0) / sum;
  }
}

const f32 = (data: Float32Array, rows: number, cols: number): Tensor => ({ dtype: 'float32', shape: [rows, cols], data });

/**
 * The one linear kernel, y = x·W + b on `rows` rows of `features` values, summed in float32 steps
 * in feature order as onnxruntime's ML ops do (so results match it bit for bit). Weight `o` of
 * feature `f` is `w[o * outStride + f * featureStride]`: ONNX-ML coefficients are one row per
 * output (`outStride` = features, `featureStride` = 1), a MatMul initializer one row per feature
 * (`outStride` = 1, `featureStride` = outputs). Example: features 2, outputs 1, w [2, 3], b [1],
 * x [1, 1] → y [6].
 */
function affine(x: Float32Array, rows: number, features: number, w: Float32Array, outStride: number, featureStride: number, bias: Float32Array): Float32Array {
  const outputs = bias.length;
  const y = new Float32Array(rows * outputs);
  for (let r = 0; r < rows; r++) {
    const xo = r * features;
    for (let o = 0; o < outputs; o++) {
      const wo = o * outStride;
      let acc = 0;
      for (let f = 0; f < features; f++) acc = Math.fround(acc + Math.fround((x[xo + f] ?? 0) * (w[wo + f * featureStride] ?? 0)));
      y[r * outputs + o] = Math.fround(acc + (bias[o] ?? 0));
    }
  }
  return y;
}

/** One bias per output from ONNX's `intercepts` / `B`: missing ones are 0, a single value broadcasts when `broadcast`. */
function biasOf(values: Float32Array, outputs: number, broadcast: boolean): Float32Array {
  return Float32Array.from({ length: outputs }, (_, o) => values[broadcast && values.length === 1 ? 0 : o] ?? 0);
}

function linearRegressor(node: NodeProto): Compiled | string {
  const a = new Attrs(node);
  if (a.string('post_transform', 'NONE') !== 'NONE') return 'LinearRegressor post_transform other than NONE';
  const coef = a.floats('coefficients');
  const targets = a.int('targets', 1);
  const intercepts = a.floats('intercepts');
  if (targets < 1 || coef.length === 0 || coef.length % targets !== 0) return 'LinearRegressor coefficients do not divide into targets';
  const features = coef.length / targets;
  const out = node.output?.[0] ?? '';
  const bias = biasOf(intercepts, targets, false);
  return {
    kind: 'LinearRegressor', features, weightBytes: coef.byteLength + intercepts.byteLength,
    evaluate(x, rows) {
      return { [out]: f32(affine(x, rows, features, coef, features, 1, bias), rows, targets) };
    },
  };
}

function linearClassifier(node: NodeProto): Compiled | string {
  const a = new Attrs(node);
  const post = a.string('post_transform', 'NONE');
  if (!['NONE', 'LOGISTIC', 'SOFTMAX', 'SOFTMAX_ZERO'].includes(post)) return `LinearClassifier post_transform ${post}`;
  const { labels, int } = classLabels(a);
  const coef = a.floats('coefficients');
  const intercepts = a.floats('intercepts');
  const classes = intercepts.length;
  // One coefficient row for two labels is onnxruntime's binary special case: left to it.
  if (classes < 2 || labels.length !== classes || coef.length % classes !== 0) return 'LinearClassifier with a binary (single-row) or inconsistent layout';
  const features = coef.length / classes;
  const [labelOut = '', scoreOut = ''] = node.output ?? [];
  return {
    kind: 'LinearClassifier', features, weightBytes: coef.byteLength + intercepts.byteLength,
    evaluate(x, rows) {
      const scores = affine(x, rows, features, coef, features, 1, intercepts);
      const best = argmaxRows(scores, rows, classes);
      postTransform(post, scores, rows, classes);
      return { [labelOut]: labelTensor(best, labels, int), [scoreOut]: f32(scores, rows, classes) };
    },
  };
}

const MODES = ['BRANCH_LEQ', 'BRANCH_LT', 'BRANCH_GTE', 'BRANCH_GT', 'BRANCH_EQ', 'BRANCH_NEQ', 'LEAF'] as const;
const LEAF = 6;

/**
 * The nodes of a tree ensemble flattened into typed arrays: per node its mode, feature,
 * float32 threshold, the indexes of its two children and whether a NaN goes the true way; per
 * leaf its (target or class, weight) pairs; one root index per tree (each tree's first node).
 */
interface Forest { mode: Uint8Array; feature: Int32Array; threshold: Float32Array; yes: Int32Array; no: Int32Array; nanYes: Uint8Array; leafStart: Int32Array; leafTarget: Int32Array; leafWeight: Float32Array; roots: Int32Array; bytes: number }

function forest(a: Attrs, prefix: 'target' | 'class'): Forest | string {
  const treeIds = a.ints('nodes_treeids');
  const nodeIds = a.ints('nodes_nodeids');
  const modes = a.strings('nodes_modes');
  const n = treeIds.length;
  if (n === 0 || nodeIds.length !== n || modes.length !== n) return 'tree ensemble node attributes of different lengths';
  if (a.has('nodes_values_as_tensor') || a.has(`${prefix}_weights_as_tensor`)) return 'tree ensemble with double-precision tensor attributes';
  const index = new Map<string, number>();
  const key = (t: number, id: number): string => `${t}:${id}`;
  treeIds.forEach((t, i) => index.set(key(t, nodeIds[i] ?? 0), i));
  const features = a.ints('nodes_featureids');
  const values = a.floats('nodes_values');
  const trues = a.ints('nodes_truenodeids');
  const falses = a.ints('nodes_falsenodeids');
  const missing = a.ints('nodes_missing_value_tracks_true');
  const f: Omit<Forest, 'leafStart' | 'leafTarget' | 'leafWeight' | 'roots' | 'bytes'> = {
    mode: new Uint8Array(n), feature: Int32Array.from(features), threshold: Float32Array.from(values), yes: new Int32Array(n), no: new Int32Array(n), nanYes: Uint8Array.from(missing.length === n ? missing : new Array<number>(n).fill(0)),
  };
  if (features.length !== n || values.length !== n) return 'tree ensemble node attributes of different lengths';
  const roots: number[] = [];
  const seen = new Set<number>();
  for (let i = 0; i < n; i++) {
    const m = MODES.indexOf(modes[i] as (typeof MODES)[number]);
    if (m < 0) return `tree ensemble node mode ${modes[i] ?? ''}`;
    f.mode[i] = m;
    const t = treeIds[i] ?? 0;
    if (!seen.has(t)) {
      seen.add(t);
      roots.push(i);
    }
    if (m === LEAF) continue;
    const yes = index.get(key(t, trues[i] ?? -1));
    const no = index.get(key(t, falses[i] ?? -1));
    if (yes === undefined || no === undefined) return `tree ensemble node ${nodeIds[i] ?? ''} of tree ${t} points at a missing node`;
    f.yes[i] = yes;
    f.no[i] = no;
  }
  // Leaf weights grouped by node (counting sort), so a walk reads them contiguously.
  const wTrees = a.ints(`${prefix}_treeids`);
  const wNodes = a.ints(`${prefix}_nodeids`);
  const wIds = a.ints(`${prefix}_ids`);
  const wWeights = a.floats(`${prefix}_weights`);
  const m = wTrees.length;
  if (wNodes.length !== m || wIds.length !== m || wWeights.length !== m) return `tree ensemble ${prefix} attributes of different lengths`;
  const owner = new Int32Array(m);
  const leafStart = new Int32Array(n + 1);
  for (let j = 0; j < m; j++) {
    const i = index.get(key(wTrees[j] ?? 0, wNodes[j] ?? 0));
    if (i === undefined) return `tree ensemble ${prefix} weight on a missing node`;
    owner[j] = i;
    leafStart[i + 1] = (leafStart[i + 1] ?? 0) + 1;
  }
  for (let i = 0; i < n; i++) leafStart[i + 1] = (leafStart[i + 1] ?? 0) + (leafStart[i] ?? 0);
  const fill = leafStart.slice(0, n);
  const leafTarget = new Int32Array(m);
  const leafWeight = new Float32Array(m);
  for (let j = 0; j < m; j++) {
    const o = owner[j] ?? 0;
    const slot = fill[o] ?? 0;
    fill[o] = slot + 1;
    leafTarget[slot] = wIds[j] ?? 0;
    leafWeight[slot] = wWeights[j] ?? 0;
  }
  const rootArr = Int32Array.from(roots);
  const bytes = f.mode.byteLength + f.feature.byteLength + f.threshold.byteLength + f.yes.byteLength + f.no.byteLength + f.nanYes.byteLength
    + leafStart.byteLength + leafTarget.byteLength + leafWeight.byteLength + rootArr.byteLength;
  return { ...f, leafStart, leafTarget, leafWeight, roots: rootArr, bytes };
}

/** The leaf row `x[off..]` reaches from node `i`. */
function walk(t: Forest, x: Float32Array, off: number, i: number): number {
  for (;;) {
    const mode = t.mode[i] ?? LEAF;
    if (mode === LEAF) return i;
    const v = x[off + (t.feature[i] ?? 0)] ?? NaN;
    const th = t.threshold[i] ?? 0;
    let go: boolean;
    if (Number.isNaN(v)) go = t.nanYes[i] === 1;
    else if (mode === 0) go = v <= th;
    else if (mode === 1) go = v < th;
    else if (mode === 2) go = v >= th;
    else if (mode === 3) go = v > th;
    else if (mode === 4) go = v === th;
    else go = v !== th;
    i = go ? (t.yes[i] ?? 0) : (t.no[i] ?? 0);
  }
}

/** Sums every tree's leaf weights into `scores` (width columns) for row r, in tree order, in float32. */
function accumulate(t: Forest, x: Float32Array, r: number, features: number, scores: Float32Array, width: number): void {
  for (const root of t.roots) {
    const leaf = walk(t, x, r * features, root);
    for (let k = t.leafStart[leaf] ?? 0; k < (t.leafStart[leaf + 1] ?? 0); k++) {
      const c = r * width + (t.leafTarget[k] ?? 0);
      scores[c] = Math.fround((scores[c] ?? 0) + (t.leafWeight[k] ?? 0));
    }
  }
}

const maxFeature = (t: Forest): number => t.feature.reduce((m, f, i) => (t.mode[i] === LEAF ? m : Math.max(m, f)), -1) + 1;

function treeRegressor(node: NodeProto, features: number): Compiled | string {
  const a = new Attrs(node);
  if (a.string('post_transform', 'NONE') !== 'NONE') return 'TreeEnsembleRegressor post_transform other than NONE';
  const agg = a.string('aggregate_function', 'SUM');
  if (agg !== 'SUM' && agg !== 'AVERAGE') return `TreeEnsembleRegressor aggregate_function ${agg}`;
  const t = forest(a, 'target');
  if (typeof t === 'string') return t;
  const targets = a.int('n_targets', 1);
  const base = a.floats('base_values');
  if (t.leafTarget.some((id) => id < 0 || id >= targets) || maxFeature(t) > features) return 'TreeEnsembleRegressor ids out of range';
  const out = node.output?.[0] ?? '';
  const trees = t.roots.length;
  return {
    kind: 'TreeEnsembleRegressor', features, weightBytes: t.bytes + base.byteLength,
    evaluate(x, rows) {
      const y = new Float32Array(rows * targets);
      for (let r = 0; r < rows; r++) {
        accumulate(t, x, r, features, y, targets);
        for (let k = 0; k < targets; k++) {
          const s = y[r * targets + k] ?? 0;
          y[r * targets + k] = Math.fround((agg === 'AVERAGE' ? s / trees : s) + (base[k] ?? 0));
        }
      }
      return { [out]: f32(y, rows, targets) };
    },
  };
}

function treeClassifier(node: NodeProto, features: number): Compiled | string {
  const a = new Attrs(node);
  if (a.string('post_transform', 'NONE') !== 'NONE') return 'TreeEnsembleClassifier post_transform other than NONE';
  const { labels, int } = classLabels(a);
  const classes = labels.length;
  // Two classes trigger onnxruntime's binary special cases (one score column mirrored): left to it.
  if (classes < 3) return 'TreeEnsembleClassifier with fewer than 3 classes';
  const t = forest(a, 'class');
  if (typeof t === 'string') return t;
  if (t.leafTarget.some((id) => id < 0 || id >= classes) || maxFeature(t) > features) return 'TreeEnsembleClassifier ids out of range';
  const base = a.floats('base_values');
  const [labelOut = '', scoreOut = ''] = node.output ?? [];
  return {
    kind: 'TreeEnsembleClassifier', features, weightBytes: t.bytes + base.byteLength,
    evaluate(x, rows) {
      const scores = new Float32Array(rows * classes);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < base.length && c < classes; c++) scores[r * classes + c] = base[c] ?? 0;
        accumulate(t, x, r, features, scores, classes);
      }
      return { [labelOut]: labelTensor(argmaxRows(scores, rows, classes), labels, int), [scoreOut]: f32(scores, rows, classes) };
    },
  };
}

/** A float32 initializer's values (raw little-endian bytes or float_data). */
function floatValues(t: TensorProto): Float32Array | undefined {
  if (t.dataType !== 1) return undefined;
  if (t.rawData && t.rawData.length > 0) {
    const copy = Uint8Array.from(t.rawData);
    return new Float32Array(copy.buffer, 0, copy.length >> 2);
  }
  return Float32Array.from(t.floatData ?? []);
}

function matMulAdd(mm: NodeProto, add: NodeProto, inits: ReadonlyMap<string, TensorProto>): Compiled | string {
  const wInit = inits.get(mm.input?.[1] ?? '');
  const bName = add.input?.find((i) => i !== mm.output?.[0]) ?? '';
  const bInit = inits.get(bName);
  const w = wInit && floatValues(wInit);
  const b = bInit && floatValues(bInit);
  const dims = (wInit?.dims ?? []).map(int64ToNumber);
  if (!w || !b || dims.length !== 2 || !add.input?.includes(mm.output?.[0] ?? '')) return 'MatMul/Add not of an input by float initializers';
  const [features = 0, width = 0] = dims;
  if (w.length !== features * width || (b.length !== width && b.length !== 1)) return 'MatMul/Add initializer shapes';
  const out = add.output?.[0] ?? '';
  const bias = biasOf(b, width, true);
  return {
    kind: 'MatMul+Add', features, weightBytes: w.byteLength + b.byteLength,
    evaluate(x, rows) {
      return { [out]: f32(affine(x, rows, features, w, 1, width, bias), rows, width) };
    },
  };
}

/** Turns a classifier's score output into ZipMap's sequence of maps when a ZipMap node follows. */
function withZipMap(inner: Compiled, zip: NodeProto): Compiled | string {
  const { labels } = classLabels(new Attrs(zip));
  const from = zip.input?.[0] ?? '';
  const to = zip.output?.[0] ?? '';
  return {
    ...inner,
    evaluate(x, rows) {
      const outs = inner.evaluate(x, rows);
      const scores = outs[from];
      if (scores === undefined || !(scores.data instanceof Float32Array)) throw new FerryError('MODEL_ERROR', `ZipMap input '${from}' is not a float tensor.`);
      outs[to] = zipRows(scores.data, labels);
      return outs;
    },
  };
}

const ML = 'ai.onnx.ml';

/** The evaluator of a supported graph, or why the graph is not supported. */
function compileGraph(model: ModelProto, features: number): Compiled | string {
  const nodes = model.graph?.node ?? [];
  const inits = new Map((model.graph?.initializer ?? []).map((t) => [t.name ?? '', t]));
  const [first, second, ...rest] = nodes;
  if (first === undefined || rest.length > 0) return `a graph of ${nodes.length} nodes`;
  const op = (n: NodeProto): string => `${n.domain === ML ? 'ml.' : ''}${n.opType ?? ''}`;
  if (second !== undefined) {
    if (op(first) === 'MatMul' && op(second) === 'Add') return matMulAdd(first, second, inits);
    if (op(second) !== 'ml.ZipMap' || second.input?.[0] !== first.output?.[1]) return `${op(first)} followed by ${op(second)}`;
  }
  let inner: Compiled | string;
  switch (op(first)) {
    case 'ml.LinearRegressor': inner = linearRegressor(first); break;
    case 'ml.LinearClassifier': inner = linearClassifier(first); break;
    case 'ml.TreeEnsembleRegressor': inner = treeRegressor(first, features); break;
    case 'ml.TreeEnsembleClassifier': inner = treeClassifier(first, features); break;
    default: return `operator ${op(first)}`;
  }
  if (typeof inner === 'string' || second === undefined) return inner;
  return withZipMap(inner, second);
}

/**
 * The compact evaluator of `model`, or the reason it has none (a string: the caller falls back to
 * onnxruntime and counts the fallback). Throws only for a model that is not valid ONNX at all.
 */
export function compileCompact(model: ModelProto, file: string): CompactModel | string {
  const signature: Signature = signatureOf(model, file);
  const [input, ...more] = signature.inputs;
  if (input === undefined || more.length > 0) return `${signature.inputs.length} graph inputs`;
  const width = input.shape?.[1];
  if (input.dtype !== 'float32' || input.shape?.length !== 2 || width === undefined || width < 1) return `input '${input.name}' is not float32 [-1, F]`;
  const c = compileGraph(model, width);
  if (typeof c === 'string') return c;
  if (c.features !== width) return `weights for ${c.features} features but input '${input.name}' has ${width}`;
  const wanted = signature.outputs.map((o) => o.name);
  const inputName = input.name;
  return {
    kind: c.kind,
    signature,
    sizeBytes: c.weightBytes + COMPACT_OVERHEAD_BYTES,
    predict(inputs) {
      const x = inputs[inputName];
      if (x === undefined || !(x.data instanceof Float32Array)) return Promise.reject(new FerryError('MODEL_ERROR', `Missing float32 input '${inputName}'.`));
      const all = c.evaluate(x.data, x.shape[0] ?? 0);
      const outputs: Record<string, OutputValue> = {};
      for (const name of wanted) {
        const v = all[name];
        if (v === undefined) return Promise.reject(new FerryError('MODEL_ERROR', `Model produced no output '${name}'.`));
        outputs[name] = v;
      }
      return Promise.resolve(outputs);
    },
    close: () => Promise.resolve(),
  };
}
