/**
 * Generated XGBoost family members for bench/multi.ts, so the million mixes linear, ONNX tree and
 * XGBoost models without Python: member i is a `reg:squarederror` booster of two depth-2 trees
 * over the family's 4 features (thresholds and leaf values drawn from a PRNG seeded with i),
 * written as UBJSON in the layout `Booster.save_model("model.ubj")` uses (the fields Ferry's
 * evaluator reads). Example: `xgboostMember(7)` is 2,481 bytes; `compileXgboost` runs it and answers what the same
 * document as XGBoost JSON answers.
 */
import { createPrng } from '../src/fixtures/prng.js';
import { FAMILY_FEATURES } from '../src/fixtures/index.js';

type Json = string | number | boolean | Json[] | { [key: string]: Json } | Float32Array | Int32Array;

/** The member's model as XGBoost's JSON document (numbers in typed arrays where XGBoost's UBJSON has typed arrays). */
export function xgboostMemberDoc(i: number): Json {
  const rand = createPrng(i + 1);
  // Node 0 splits into 1 and 2, each splitting into two leaves (3..6).
  const tree = (id: number): Json => ({
    id,
    tree_param: { num_deleted: '0', num_feature: String(FAMILY_FEATURES), num_nodes: '7', size_leaf_vector: '0' },
    left_children: Int32Array.from([1, 3, 5, -1, -1, -1, -1]),
    right_children: Int32Array.from([2, 4, 6, -1, -1, -1, -1]),
    parents: Int32Array.from([2147483647, 0, 0, 1, 1, 2, 2]),
    split_indices: Int32Array.from([0, 1, 2, 0, 0, 0, 0].map((f, n) => (n < 3 ? Math.floor(rand() * FAMILY_FEATURES) : f))),
    split_conditions: Float32Array.from(Array.from({ length: 7 }, (_, n) => (n < 3 ? rand() * 2 - 1 : rand() - 0.5))),
    default_left: Int32Array.from([1, 0, 1, 0, 0, 0, 0]),
    split_type: Int32Array.from([0, 0, 0, 0, 0, 0, 0]),
    base_weights: new Float32Array(7), loss_changes: new Float32Array(7), sum_hessian: new Float32Array(7),
    categories: [], categories_nodes: [], categories_segments: [], categories_sizes: [],
  });
  return {
    learner: {
      attributes: {}, feature_names: [], feature_types: [],
      gradient_booster: { name: 'gbtree', model: { gbtree_model_param: { num_parallel_tree: '1', num_trees: '2', size_leaf_vector: '0' }, tree_info: Int32Array.from([0, 0]), trees: [tree(0), tree(1)] } },
      learner_model_param: { base_score: '5E-1', boost_from_average: '1', num_class: '0', num_feature: String(FAMILY_FEATURES), num_target: '1' },
      objective: { name: 'reg:squarederror', reg_loss_param: { scale_pos_weight: '1' } },
    },
    version: Int32Array.from([1, 7, 4]),
  };
}

/** UBJSON of `doc`: strings `S`, int32 `l`, float32 `d`, typed arrays as `[$l#L…` / `[$d#L…`, keys length-prefixed. */
export function encodeUbjson(doc: Json): Buffer {
  const parts: Buffer[] = [];
  const int32 = (n: number): Buffer => {
    const b = Buffer.alloc(5);
    b[0] = 0x6c; // l
    b.writeInt32BE(n, 1);
    return b;
  };
  // Lengths and counts as int64 (`L`), as XGBoost writes them (and as Ferry's format sniffing expects).
  const int64 = (n: number): Buffer => {
    const b = Buffer.alloc(9);
    b[0] = 0x4c; // L
    b.writeBigInt64BE(BigInt(n), 1);
    return b;
  };
  const text = (s: string): Buffer => Buffer.concat([int64(Buffer.byteLength(s)), Buffer.from(s, 'utf8')]);
  const put = (v: Json): void => {
    if (typeof v === 'string') parts.push(Buffer.from('S'), text(v));
    else if (typeof v === 'boolean') parts.push(Buffer.from(v ? 'T' : 'F'));
    else if (typeof v === 'number') {
      if (Number.isInteger(v)) parts.push(int32(v));
      else {
        const b = Buffer.alloc(5);
        b[0] = 0x64; // d
        b.writeFloatBE(v, 1);
        parts.push(b);
      }
    } else if (v instanceof Float32Array || v instanceof Int32Array) {
      const b = Buffer.alloc(v.length * 4);
      v.forEach((x, k) => (v instanceof Float32Array ? b.writeFloatBE(x, k * 4) : b.writeInt32BE(x, k * 4)));
      parts.push(Buffer.from(v instanceof Float32Array ? '[$d#' : '[$l#'), int64(v.length), b);
    } else if (Array.isArray(v)) {
      parts.push(Buffer.from('['));
      v.forEach(put);
      parts.push(Buffer.from(']'));
    } else {
      parts.push(Buffer.from('{'));
      for (const [k, x] of Object.entries(v)) {
        parts.push(text(k));
        put(x);
      }
      parts.push(Buffer.from('}'));
    }
  };
  put(doc);
  return Buffer.concat(parts);
}

/** Member i as the bytes of a `.ubj` file. */
export function xgboostMember(i: number): Buffer {
  return encodeUbjson(xgboostMemberDoc(i));
}
