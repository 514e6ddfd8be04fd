/**
 * What every `ferry` command shares: option parsing (a usage error is exit code 2, see main.ts),
 * and output as text or, with --json, as JSON.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

export class UsageError extends Error {}

export type Values = Record<string, string | boolean | undefined>;

export function parse(args: string[], options: ParseArgsConfig['options']): { values: Values; positionals: string[] } {
  try {
    const r = parseArgs({ args, options: { ...options, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
    return { values: r.values, positionals: r.positionals };
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export function str(v: Values, key: string): string | undefined {
  const x = v[key];
  return typeof x === 'string' ? x : undefined;
}

export function out(values: Values, json: unknown, text: string): void {
  process.stdout.write(values.json ? JSON.stringify(json, null, 2) + '\n' : text + '\n');
}

/** Rows under a header, columns padded to their widest cell. */
export function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}
