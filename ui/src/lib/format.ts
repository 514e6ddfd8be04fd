/** How the console writes numbers, times and states. */
import type { Endpoint } from './types.js';

/** Milliseconds for people: 0.42 → "0.42 ms", 12.3 → "12 ms", 1530 → "1.53 s". */
export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** Bytes with a binary unit: 1536 → "1.5 KiB". */
export function formatBytes(n: number | undefined): string {
  if (n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u] ?? ''}`;
}

/** A timestamp as local date and time, "2025-11-26 07:36:05" (sortable, locale-free). */
export function formatTime(ms: number, tzOffsetMin: number = new Date(ms).getTimezoneOffset()): string {
  const d = new Date(ms - tzOffsetMin * 60_000);
  return d.toISOString().slice(0, 19).replace('T', ' ');
}

/** Seconds or more as "3 s ago", "5 min ago", "2 h ago", "4 d ago". */
export function formatAgo(ms: number, nowMs: number): string {
  const s = Math.max(0, Math.round((nowMs - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86_400)} d ago`;
}

export type EndpointStatus = 'ready' | 'updating' | 'failed' | 'not ready';

/**
 * An endpoint's state in one word, for lists: an update in progress is "updating", a failed one
 * "failed" (even while the previous config still serves; the page says so), else ready or not.
 */
export function endpointStatus(e: Pick<Endpoint, 'state' | 'config' | 'pending_config'>): EndpointStatus {
  if (e.state.config_update === 'IN_PROGRESS') return 'updating';
  if (e.state.config_update === 'UPDATE_FAILED') return 'failed';
  if (e.state.ready === 'READY') return 'ready';
  const entities = [...(e.config?.served_entities ?? []), ...(e.pending_config?.served_entities ?? [])];
  if (entities.some((x) => x.state.deployment === 'DEPLOYMENT_FAILED')) return 'failed';
  if (entities.some((x) => x.state.deployment === 'DEPLOYMENT_CREATING' || x.state.deployment === 'DEPLOYMENT_RECOVERING')) return 'updating';
  return 'not ready';
}

/**
 * A JSON value pretty-printed for a <pre>, with arrays of plain values kept on one line
 * (`{"inputs": [[0, 0, 0, 0]]}` stays four numbers wide, not four lines); strings that hold JSON
 * are shown parsed.
 */
export function prettyJson(v: unknown): string {
  if (typeof v === 'string') {
    try {
      return prettyJson(JSON.parse(v));
    } catch {
      return v;
    }
  }
  const text = JSON.stringify(v, null, 2) ?? String(v);
  // An array whose items hold no brackets or braces (strings may: JSON escapes none of them, so
  // such an array is left as printed).
  return text.replace(/\[\n\s*([^[\]{}"]*|(?:"[^"\n]*"[,\s]*)*)\n\s*\]/g, (all, items: string) => (/[[\]{}]/.test(items) ? all : `[${items.split(/,\n\s*/).join(', ')}]`));
}

/** Where a served entity's Python environment build is, from its build log (the build-logs route). */
export type BuildState = 'none' | 'building' | 'ready' | 'failed';

/**
 * The build state its log shows: empty (no virtualenv: the model runs in the server's python as it
 * is, or the flavor needs none) → none; the runtime's last line "environment ready" → ready,
 * "environment build failed: …" → failed; anything else is a build still running.
 */
export function buildState(log: string): BuildState {
  if (log.trim() === '') return 'none';
  const last = log.trimEnd().split('\n').reverse().find((l) => /^environment (ready|build failed)/.test(l));
  if (last === undefined) return 'building';
  return last.startsWith('environment ready') ? 'ready' : 'failed';
}
