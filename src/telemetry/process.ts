/**
 * The server process's own metrics (admins only): memory, CPU, start time, event-loop lag, heap.
 * Read at scrape time; the event-loop monitor is a libuv timer every `LAG_RESOLUTION_MS`.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { MetricFamily } from './exposition.js';

const LAG_RESOLUTION_MS = 10;

export class ProcessMetrics {
  private readonly delay: IntervalHistogram = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });

  constructor() {
    this.delay.enable();
  }

  close(): void {
    this.delay.disable();
  }

  /**
   * The families; reading resets the event-loop delay histogram, so `nodejs_eventloop_lag_seconds`
   * is the mean lag since the previous scrape (the monitor's samples include its own resolution,
   * which is subtracted).
   */
  families(): MetricFamily[] {
    const mem = process.memoryUsage();
    const cpu = process.cpuUsage();
    const lagS = this.delay.count > 0 ? Math.max(0, this.delay.mean / 1e6 - LAG_RESOLUTION_MS) / 1000 : 0;
    this.delay.reset();
    const one = (name: string, type: 'counter' | 'gauge', help: string, value: number): MetricFamily => ({ name, type, help, samples: [{ labels: {}, value }] });
    return [
      one('process_resident_memory_bytes', 'gauge', 'Resident memory of the server process.', mem.rss),
      one('process_cpu_seconds_total', 'counter', 'CPU time (user and system) of the server process.', (cpu.user + cpu.system) / 1e6),
      one('process_start_time_seconds', 'gauge', 'Start of the server process, seconds since the Unix epoch.', Math.round(performance.timeOrigin) / 1000),
      one('nodejs_eventloop_lag_seconds', 'gauge', 'Mean event-loop delay of the server since the previous scrape.', lagS),
      one('nodejs_heap_used_bytes', 'gauge', 'V8 heap in use by the server process.', mem.heapUsed),
    ];
  }
}
