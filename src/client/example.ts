/**
 * A ready-to-send scoring request for a model version. Pure (no Node APIs): the CLI and the web
 * console (ui/) both use it.
 */

/** The parts of a model version an example is made from. */
export interface ExampleSource {
  signature?: { inputs: Array<{ name: string; dtype: string; shape?: number[] }> };
  input_example?: unknown;
}

/**
 * The version's input example (stored as a scoring body), or else a request of zeros in the
 * signature's shape (dynamic dimensions as 1): for `x: float32 [-1, 4]`, `{"inputs": [[0, 0, 0, 0]]}`;
 * several inputs go by name.
 */
export function exampleRequest(v: ExampleSource): unknown {
  if (v.input_example !== undefined) return v.input_example;
  const inputs = v.signature?.inputs ?? [];
  const sample = (i: { dtype: string; shape?: number[] }): unknown => {
    const dims = (i.shape ?? [-1]).map((d) => (d < 0 ? 1 : d));
    const leaf = i.dtype === 'string' ? '' : i.dtype === 'bool' ? false : 0;
    const build = (k: number): unknown => (k === dims.length ? leaf : Array.from({ length: dims[k] ?? 1 }, () => build(k + 1)));
    return build(0);
  };
  if (inputs.length === 1 && inputs[0]) return { inputs: sample(inputs[0]) };
  return { inputs: Object.fromEntries(inputs.map((i) => [i.name, sample(i)])) };
}
