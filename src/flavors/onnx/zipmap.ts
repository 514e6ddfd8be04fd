/**
 * ZipMap support. onnxruntime-node returns tensors only ("Non tensor type is temporarily not
 * supported"), yet every scikit-learn classifier exported by skl2onnx ends in ZipMap, whose output
 * is a sequence of {class label: probability} maps. So the flavor cuts those ZipMap nodes off the
 * graph, fetches their [rows, classes] float input tensor instead, and zips the maps in JS.
 */
import onnxProto from 'onnx-proto';
import type { MapSequence } from '../../tensor/index.js';
import type { ModelProto } from './model-proto.js';
import { int64ToString, invalidModel } from './model-proto.js';

/** A detached ZipMap: the original output name, the tensor now fetched instead, and the class labels. */
export interface DetachedZipMap {
  output: string;
  input: string;
  labels: string[];
}

/** Map keys are the labels as strings: int64 labels in decimal, string labels as they are. */
function labelsOf(attributes: readonly onnxProto.onnx.IAttributeProto[]): string[] {
  const ints = attributes.find((a) => a.name === 'classlabels_int64s')?.ints;
  if (ints && ints.length > 0) return ints.map(int64ToString);
  const strings = attributes.find((a) => a.name === 'classlabels_strings')?.strings;
  return (strings ?? []).map((s) => Buffer.from(s.buffer, s.byteOffset, s.byteLength).toString('utf8'));
}

/**
 * Removes every ZipMap node whose output is a graph output, in place, and makes its input tensor
 * the graph output instead. Returns what was detached (empty: the model needs no rewrite).
 */
export function detachZipMaps(model: ModelProto, file: string): DetachedZipMap[] {
  const graph = model.graph;
  if (!graph) return [];
  const nodes = graph.node ?? [];
  const outputs = graph.output ?? [];
  const outputNames = new Set(outputs.map((o) => o.name ?? ''));
  const detached: DetachedZipMap[] = [];
  for (const zip of nodes) {
    const output = zip.output?.[0] ?? '';
    if (zip.opType !== 'ZipMap' || !outputNames.has(output)) continue;
    if (nodes.some((n) => n.input?.includes(output))) {
      throw invalidModel(file, `ZipMap output '${output}' is both a graph output and used inside the graph, which onnxruntime-node cannot serve`);
    }
    const labels = labelsOf(zip.attribute ?? []);
    if (labels.length === 0) throw invalidModel(file, `ZipMap '${zip.name ?? output}' has no class labels`);
    detached.push({ output, input: zip.input?.[0] ?? '', labels });
  }
  if (detached.length === 0) return [];

  const byOutput = new Map(detached.map((d) => [d.output, d]));
  graph.node = nodes.filter((n) => !(n.opType === 'ZipMap' && byOutput.has(n.output?.[0] ?? '')));
  graph.output = outputs.flatMap((o) => {
    const d = byOutput.get(o.name ?? '');
    if (d === undefined) return [o];
    if (outputNames.has(d.input)) return [];
    // ZipMap's input is a float tensor [rows, classes]; onnxruntime infers the shape.
    return [{ name: d.input, type: { tensorType: { elemType: onnxProto.onnx.TensorProto.DataType.FLOAT } } }];
  });
  return detached;
}

/** One {label: probability} map per row of a [rows, labels.length] score matrix. */
export function zipRows(scores: Float32Array, labels: readonly string[]): MapSequence {
  const width = labels.length;
  const rows = width === 0 ? 0 : scores.length / width;
  const data: Array<Record<string, number>> = new Array<Record<string, number>>(rows);
  for (let r = 0; r < rows; r++) {
    const row: Record<string, number> = {};
    for (let c = 0; c < width; c++) row[labels[c] ?? ''] = scores[r * width + c] ?? 0;
    data[r] = row;
  }
  return { dtype: 'map', data };
}
