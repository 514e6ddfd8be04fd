/**
 * Metrics series (`GET .../metrics/series`) → the column arrays uPlot draws: x in seconds, one
 * array per line, `null` where a value is missing (a gap, not a zero).
 */
import type { SeriesPoint } from './types.js';

/** A chart of the endpoint page: its title, unit and lines. */
export interface ChartSpec {
  id: string;
  title: string;
  unit: string;
  lines: Array<{ label: string; value: (p: SeriesPoint) => number | null }>;
}

/** The endpoint page's charts, in order. */
export const CHARTS: readonly ChartSpec[] = [
  { id: 'qps', title: 'Requests', unit: 'req/s', lines: [{ label: 'requests/s', value: (p) => p.qps }] },
  { id: 'latency', title: 'Latency', unit: 'ms', lines: [{ label: 'p50', value: (p) => p.p50_ms }, { label: 'p99', value: (p) => p.p99_ms }] },
  { id: 'errors', title: 'Errors', unit: '%', lines: [{ label: 'error rate', value: (p) => (p.error_rate === null ? null : p.error_rate * 100) }] },
  { id: 'replicas', title: 'Replicas', unit: '', lines: [{ label: 'ready', value: (p) => p.replicas_ready }, { label: 'desired', value: (p) => p.replicas_desired }] },
  { id: 'concurrency', title: 'Concurrency', unit: 'requests', lines: [{ label: 'in flight', value: (p) => p.in_flight }, { label: 'queued', value: (p) => p.queued }] },
];

/** uPlot's data: `[x seconds, ...one array per line]`. */
export type ChartData = [number[], ...Array<Array<number | null>>];

/**
 * The columns of one chart, in time order; non-finite values become gaps.
 * Example: points at 1000 and 2000 ms with qps 3 and NaN → `[[1, 2], [3, null]]`.
 */
export function chartData(points: readonly SeriesPoint[], spec: ChartSpec): ChartData {
  const sorted = [...points].sort((a, b) => a.timestamp_ms - b.timestamp_ms);
  const xs = sorted.map((p) => p.timestamp_ms / 1000);
  const ys = spec.lines.map((l) => sorted.map((p) => {
    const v = l.value(p);
    return v === null || !Number.isFinite(v) ? null : v;
  }));
  return [xs, ...ys];
}

/** The newest value of each line of a chart (for the figure next to its title); null when none. */
export function latest(data: ChartData): Array<number | null> {
  return data.slice(1).map((col) => {
    for (let i = col.length - 1; i >= 0; i--) {
      const v = col[i];
      if (v !== null && v !== undefined) return v;
    }
    return null;
  });
}

/** Whether the series saw any request at all (an all-zero window draws flat lines). */
export function hasTraffic(points: readonly SeriesPoint[]): boolean {
  return points.some((p) => p.qps > 0);
}
