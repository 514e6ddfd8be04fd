/**
 * A ready-to-send scoring request for a model version. Pure (no Node APIs): the CLI and the web
 * console (ui/) both use it.
 */
import type { ModelVersion, TensorSpecJson } from '../api/index.js';

/** The parts of a model version an example is made from. */
export type ExampleSource = Pick<ModelVersion, 'input_example'> & { signature?: { inputs: TensorSpecJson[] } | undefined };

/** Most values an example built from a signature holds (~400 KB of JSON): a [1, 3, 224, 224] image (150,528) fits. */
export const MAX_EXAMPLE_VALUES = 200_000;

/** A ready-to-send request body, or why none was built. */
export type ExampleRequest = { body: unknown } | { tooLarge: string };

/**
 * The version's input example (stored as a scoring body), or else a request of zeros in the
 * signature's shape (dynamic dimensions as 1): for `x: float32 [-1, 4]`, `{"inputs": [[0, 0, 0, 0]]}`;
 * several inputs go by name. A signature whose fixed shapes hold more than `MAX_EXAMPLE_VALUES`
 * values in all (e.g. `[1, 100000000]`) gets `tooLarge`, a message naming the input, counted
 * before anything is built.
 */
export function exampleRequest(v: ExampleSource): ExampleRequest {
  if (v.input_example !== undefined) return { body: v.input_example };
  const inputs = v.signature?.inputs ?? [];
  const dimsOf = (i: TensorSpecJson): number[] => (i.shape ?? [-1]).map((d) => (d < 0 ? 1 : d));
  let total = 0;
  for (const i of inputs) {
    const count = dimsOf(i).reduce((a, d) => a * d, 1);
    total += count;
    if (total > MAX_EXAMPLE_VALUES) {
      return { tooLarge: `No example request: input '${i.name}' has shape [${(i.shape ?? []).join(', ')}] (${count.toLocaleString('en-US')} values per request), more than the ${MAX_EXAMPLE_VALUES.toLocaleString('en-US')} an example is built with; send your own data.` };
    }
  }
  const sample = (i: TensorSpecJson): unknown => {
    const dims = dimsOf(i);
    const leaf = i.dtype === 'string' ? '' : i.dtype === 'bool' ? false : 0;
    const build = (k: number): unknown => (k === dims.length ? leaf : Array.from({ length: dims[k] ?? 1 }, () => build(k + 1)));
    return build(0);
  };
  if (inputs.length === 1 && inputs[0]) return { body: { inputs: sample(inputs[0]) } };
  return { body: { inputs: Object.fromEntries(inputs.map((i) => [i.name, sample(i)])) } };
}
