/**
 * The import graph of src/ has no cycles: every relative import of every source file counts,
 * `import type` and dynamic `import('…')` included (a type-only cycle still ties two folders
 * together, and a lazy import is still a dependency). The lint rules in eslint.config.js keep
 * imports out of other folders' internals; this test sees the whole graph at once.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from './support/index.js';

const SRC = path.join(ROOT, 'src');
/** `from './x.js'` (import, import type, export … from) and `import('./x.js')`, relative specifiers only. */
const IMPORT = /\bfrom\s+'(\.{1,2}\/[^']+)'|\bimport\(\s*'(\.{1,2}\/[^']+)'\s*\)/g;

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sourceFiles(p) : /\.tsx?$/.test(e.name) && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** file → the files it imports (relative to src/). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles(SRC)) {
    const text = fs.readFileSync(file, 'utf8');
    const deps = [...text.matchAll(IMPORT)].map((m) => {
      const target = path.resolve(path.dirname(file), (m[1] ?? m[2] ?? '').replace(/\.js$/, '.ts'));
      return path.relative(SRC, fs.existsSync(target) ? target : `${target}x`);
    });
    graph.set(path.relative(SRC, file), [...new Set(deps)]);
  }
  return graph;
}

/** The strongly connected components with more than one file, or a file importing itself (Tarjan). */
function cycles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) !== index.get(v)) return;
    const component: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1 || graph.get(v)?.includes(v)) found.push(component.sort());
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

test('the import graph finds the imports (a known edge of each kind)', () => {
  const graph = importGraph();
  assert.ok(graph.size > 100);
  assert.ok(graph.get('cli/replica.ts')?.includes('replica/options.ts'), 'static import');
  assert.ok(graph.get('runtime/index.ts')?.includes('runtime/kubernetes/index.ts'), 'import type and dynamic import');
  assert.deepEqual(cycles(new Map([['a.ts', ['b.ts']], ['b.ts', ['c.ts']], ['c.ts', ['a.ts']], ['d.ts', ['a.ts']]])), [['a.ts', 'b.ts', 'c.ts']]);
});

test('src/ has no import cycle', () => {
  assert.deepEqual(cycles(importGraph()), []);
});
