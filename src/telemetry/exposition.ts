/**
 * The Prometheus text exposition format, version 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/): per metric family one `# HELP`
 * and one `# TYPE` line, then its samples. Histograms print cumulative `_bucket{le=...}` lines
 * (ending with `le="+Inf"`, equal to `_count`), then `_sum` and `_count`.
 */
import type { HistogramSnapshot } from './histogram.js';

export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Labels = Readonly<Record<string, string>>;

export type MetricFamily =
  | { name: string; help: string; type: 'counter' | 'gauge'; samples: Array<{ labels: Labels; value: number }> }
  | { name: string; help: string; type: 'histogram'; bounds: readonly number[]; samples: Array<{ labels: Labels; histogram: HistogramSnapshot }> };

/** Help text: backslash and line feed escaped. */
function escapeHelp(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A label value: backslash, double quote and line feed escaped. */
export function escapeLabelValue(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** A sample value as Go's ParseFloat reads it: `+Inf`, `-Inf`, `NaN`, else JS number text (`1e-7` included). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function labelText(labels: Labels, extra?: [string, string]): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

/** Writes the families in order; a family without samples still says what it is. */
export function writeExposition(families: readonly MetricFamily[]): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    if (f.type !== 'histogram') {
      for (const s of f.samples) out.push(`${f.name}${labelText(s.labels)} ${formatValue(s.value)}`);
      continue;
    }
    for (const { labels, histogram: h } of f.samples) {
      let cumulative = 0;
      for (const [i, bound] of [...f.bounds, Infinity].entries()) {
        cumulative += h.counts[i] ?? 0;
        out.push(`${f.name}_bucket${labelText(labels, ['le', formatValue(bound)])} ${formatValue(cumulative)}`);
      }
      out.push(`${f.name}_sum${labelText(labels)} ${formatValue(h.sum)}`, `${f.name}_count${labelText(labels)} ${formatValue(h.count)}`);
    }
  }
  return out.length === 0 ? '' : `${out.join('\n')}\n`;
}
