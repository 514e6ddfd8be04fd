import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileXgboost } from '../src/multi/index.js';
import { decodeUbjson } from '../src/multi/ubjson.js';
import { pythonImports, SYSTEM_PYTHON } from './support/index.js';

/**
 * Trains XGBoost models with Debian's python3-xgboost (1.7), saves each as JSON, UBJSON and the
 * legacy binary format, and records `Booster.predict` (margins and transformed outputs) on rows
 * with missing values. Prints one JSON document: {cases: [{name, objective, formats, x, rows,
 * features, margin, pred}]}, floats as float32 values.
 */
const SCRIPT = String.raw`
import json, sys, os
import numpy as np, xgboost as xgb
out = sys.argv[1]
rng = np.random.default_rng(7)
cases = []
def run(name, params, X, y, rounds, formats=("json", "ubj", "xgb"), dmatrix_kw={}, Xt=None):
    d = xgb.DMatrix(X, label=y, **dmatrix_kw)
    b = xgb.train(params, d, num_boost_round=rounds)
    files = []
    for f in formats:
        p = os.path.join(out, name + "." + f)
        b.save_model(p)
        files.append(p)
    Xt = X[:64] if Xt is None else Xt
    dt = xgb.DMatrix(Xt, **dmatrix_kw)
    cases.append(dict(name=name, objective=params["objective"], files=files, rows=int(Xt.shape[0]), features=int(Xt.shape[1]),
        x=[None if np.isnan(v) else float(v) for v in np.asarray(Xt, dtype=np.float32).ravel()],
        margin=[float(v) for v in b.predict(dt, output_margin=True).astype(np.float32).ravel()],
        pred=[float(v) for v in b.predict(dt).astype(np.float32).ravel()]))
X = rng.normal(size=(400, 6)).astype(np.float32)
X[rng.random(X.shape) < 0.1] = np.nan
yr = np.nan_to_num(X[:, 0]) * 3 + np.nan_to_num(X[:, 1]) ** 2
yb = (yr > 1).astype(int)
yc = np.digitize(yr, [0, 1.5]).astype(int)
run("reg", {"objective": "reg:squarederror", "max_depth": 5, "eta": 0.3}, X, yr, 100)
run("binary", {"objective": "binary:logistic", "max_depth": 4, "base_score": 0.3}, X, yb, 60)
run("logitraw", {"objective": "binary:logitraw", "max_depth": 3}, X, yb, 20)
run("softprob", {"objective": "multi:softprob", "num_class": 3, "max_depth": 4}, X, yc, 30)
run("softmax", {"objective": "multi:softmax", "num_class": 3, "max_depth": 4}, X, yc, 30)
run("poisson", {"objective": "count:poisson", "max_depth": 3}, X, np.abs(np.round(yr)), 30)
run("forest", {"objective": "reg:squarederror", "max_depth": 4, "num_parallel_tree": 5, "subsample": 0.8, "colsample_bynode": 0.8}, X, yr, 3)
Xc = np.column_stack([rng.integers(0, 8, 400), rng.normal(size=400)]).astype(np.float32)
yc2 = np.where(np.isin(Xc[:, 0], [1, 3, 6]), 2.0, -1.0) + Xc[:, 1]
Xt = Xc[:64].copy(); Xt[0, 0] = 11; Xt[1, 0] = -1; Xt[2, 0] = np.nan
run("categorical", {"objective": "reg:squarederror", "max_depth": 4, "tree_method": "hist", "max_cat_to_onehot": 1}, Xc, yc2, 20, formats=("json", "ubj"),
    dmatrix_kw={"feature_types": ["c", "q"], "enable_categorical": True}, Xt=Xt)
print(json.dumps({"cases": cases}))
`;

interface Case { name: string; objective: string; files: string[]; rows: number; features: number; x: Array<number | null>; margin: number[]; pred: number[] }

/** Distance in float32 units in the last place between two float32 values. */
function ulps(a: number, b: number): number {
  const f = new Float32Array([a, b]);
  const i = new Int32Array(f.buffer);
  const key = (v: number): number => (v < 0 ? -0x80000000 - v : v);
  return Math.abs(key(i[0] ?? 0) - key(i[1] ?? 0));
}

/** Objectives whose output is the summed margin itself. */
const RAW = new Set(['reg:squarederror', 'binary:logitraw']);
const python = SYSTEM_PYTHON;
const haveXgboost = pythonImports('xgboost');

test('XGBoost JSON, UBJSON and legacy binary models: margins bit-identical to Booster.predict, outputs within 1 ulp', { skip: haveXgboost ? false : 'python3-xgboost is not installed' }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-xgb-'));
  try {
    const { cases } = JSON.parse(execFileSync(python, ['-c', SCRIPT, dir], { encoding: 'utf8', maxBuffer: 64 << 20 })) as { cases: Case[] };
    assert.equal(cases.length, 8);
    const tally = { exact: 0, oneUlp: 0 };
    for (const c of cases) {
      const x = Float32Array.from(c.x, (v) => (v === null ? Number.NaN : v));
      for (const file of c.files) {
        const bytes = await readFile(file);
        const model = compileXgboost(bytes, file);
        assert.equal(model.kind, `XGBoost ${c.objective}`);
        assert.deepEqual(model.signature.inputs, [{ name: 'input', dtype: 'float32', shape: [-1, c.features] }]);
        const out = (await model.predict({ input: { dtype: 'float32', shape: [c.rows, c.features], data: x } })).predictions;
        assert.ok(out !== undefined && out.dtype === 'float32' && out.data instanceof Float32Array, file);
        assert.equal(out.data.length, c.pred.length, file);
        out.data.forEach((v, i) => {
          const d = ulps(v, c.pred[i] ?? Number.NaN);
          // Raw scores are the margins themselves: bit-identical.
          assert.ok(d <= (RAW.has(c.objective) ? 0 : 1), `${file} row value ${i}: ${v} vs xgboost ${c.pred[i]} (${d} ulps)`);
          if (d === 0) tally.exact++;
          else tally.oneUlp++;
        });
      }
    }
    // Most transformed outputs are bit-identical; the rest differ by one ulp (expf vs Math.exp).
    t.diagnostic(`outputs bit-identical: ${tally.exact}, 1 ulp apart: ${tally.oneUlp}`);
    assert.ok(tally.exact > tally.oneUlp * 4, JSON.stringify(tally));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('hostile XGBoost files are refused with a MODEL_ERROR naming the problem, never a crash or a hang', () => {
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['empty', new Uint8Array(0), /not an XGBoost model/],
    ['json garbage', Buffer.from('{"learner": 3}'), /learner_model_param/],
    ['binary truncated', Buffer.from('binf'), /ends inside the learner parameters/],
    ['ubjson huge count', Buffer.from([0x7b, 0x23, 0x6c, 0x10, 0, 0, 0]), /count 268435456 exceeds/],
    ['ubjson deep', Buffer.from(`{i\x01a${'['.repeat(200)}`, 'latin1'), /nesting deeper than 64/],
  ];
  for (const [name, bytes, re] of cases) assert.throws(() => compileXgboost(bytes, 'm.json'), (e: Error) => re.test(e.message) && /MODEL_ERROR|XGBoost/.test(`${(e as { code?: string }).code ?? ''} ${e.message}`), name);
  // A tree whose child points back at its parent would loop forever: refused when read.
  const cyclic = {
    learner: {
      learner_model_param: { base_score: '5E-1', num_class: '0', num_feature: '1' }, objective: { name: 'reg:squarederror' },
      gradient_booster: {
        name: 'gbtree',
        model: {
          tree_info: [0],
          trees: [{ tree_param: { size_leaf_vector: '0' }, left_children: [0, -1], right_children: [1, -1], split_indices: [0, 0], split_conditions: [0.5, 1], default_left: [1, 0] }],
        },
      },
    },
  };
  assert.throws(() => compileXgboost(Buffer.from(JSON.stringify(cyclic)), 'm.json'), /node 0 has children 0, 1/);
});

test('UBJSON decoding: typed arrays keep float32 bits; counts beyond the input are refused before allocating', () => {
  // {"a": [$d#i2 1.5 -0.25], "s": "hi", "n": null}
  const bytes = Buffer.concat([
    Buffer.from('{'), Buffer.from([0x69, 1]), Buffer.from('a'), Buffer.from('[$d#'), Buffer.from([0x69, 2]),
    Buffer.from(new Float32Array([1.5, -0.25]).buffer).swap32(), Buffer.from([0x69, 1]), Buffer.from('s'), Buffer.from([0x53, 0x69, 2]), Buffer.from('hi'),
    Buffer.from([0x69, 1]), Buffer.from('n'), Buffer.from('Z}'),
  ]);
  const v = decodeUbjson(bytes) as Record<string, unknown>;
  assert.ok(v.a instanceof Float32Array);
  assert.deepEqual(Array.from(v.a), [1.5, -0.25]);
  assert.equal(v.s, 'hi');
  assert.equal(v.n, null);
  assert.throws(() => decodeUbjson(Buffer.from([0x5b, 0x24, 0x64, 0x23, 0x6c, 0x10, 0, 0, 0])), /count 268435456 exceeds/);
  assert.throws(() => decodeUbjson(Buffer.from('Zjunk')), /bytes after the value/);
});
