/**
 * ModelCache: the models one family replica holds, bounded by bytes (not by count), least recently
 * used evicted first. A miss loads without blocking hits (loads are asynchronous and each request
 * awaits only its own model); concurrent misses for one model share one load; a failed load is
 * not remembered: its waiters get the error and the next request loads again.
 *
 * Accounting: an entry's bytes are charged when its load finishes and released when it is
 * evicted. A model still running a request when evicted is closed when that request ends, so
 * memory may exceed the budget by the models in use at that moment (at most the replica's
 * concurrency limit × the largest model); `bytes` never does.
 * Example (budget 1000 B): load a (400), b (400), use a, load c (400) → b is evicted (a was used
 * more recently), bytes = 800.
 */
import { FerryError } from '../errors.js';

/** What a loader returns: the model and the bytes it holds. */
export interface Loaded<M> {
  model: M;
  sizeBytes: number;
}

export interface ModelCacheOptions<M, H = undefined> {
  /** Most bytes the cached models may hold together. */
  budgetBytes: number;
  /**
   * Loads one model; rejects with a FerryError saying why it cannot. `hint` is what the request
   * that missed passed to `use` (e.g. where a family pod fetches the member from).
   */
  load: (key: string, hint: H | undefined) => Promise<Loaded<M>>;
  /** Frees an evicted model (e.g. releases its onnxruntime session). */
  close: (model: M) => Promise<void>;
}

/** Counters since the replica started, and the cache's current size. */
export interface ModelCacheStats {
  models: number;
  bytes: number;
  budgetBytes: number;
  hits: number;
  misses: number;
  /** Loads that finished (misses that shared a load count once). */
  loads: number;
  loadFailures: number;
  evictions: number;
  /** Sum and maximum of load durations, seconds. */
  loadSecondsSum: number;
  loadSecondsMax: number;
}

interface Entry<M> {
  model: M;
  sizeBytes: number;
  /** Requests running on it now. */
  refs: number;
  /** Evicted while in use: close it when `refs` reaches 0. */
  evicted: boolean;
}

/**
 * A model that could never fit this cache: a 400 (retrying cannot help) naming the model, its
 * size and the budget.
 */
export function tooLarge(model: string, sizeBytes: number, budgetBytes: number): FerryError {
  return new FerryError('INVALID_PARAMETER_VALUE', `Model '${model}' needs ${sizeBytes} bytes, more than a replica's whole model cache (model_family.cache_size ${budgetBytes} bytes).`);
}

export class ModelCache<M, H = undefined> {
  /** Insertion order is recency order: a hit moves its entry to the end; the first entry is evicted first. */
  private readonly entries = new Map<string, Entry<M>>();
  private readonly loading = new Map<string, { promise: Promise<Entry<M>>; state: { waiters: number } }>();
  private readonly counters = { hits: 0, misses: 0, loads: 0, loadFailures: 0, evictions: 0, loadSecondsSum: 0, loadSecondsMax: 0 };
  private bytes = 0;

  constructor(private readonly opts: ModelCacheOptions<M, H>) {
    if (!(opts.budgetBytes > 0)) throw new Error(`ModelCache budgetBytes must be > 0 (got ${opts.budgetBytes})`);
  }

  /**
   * Runs `fn` on model `key`, loading it first on a miss (`hint` goes to the loader; concurrent
   * misses share the first one's load); the model is not closed while `fn` runs.
   */
  async use<T>(key: string, fn: (model: M) => Promise<T>, hint?: H): Promise<T> {
    let entry = this.entries.get(key);
    if (entry !== undefined) {
      this.counters.hits++;
      this.entries.delete(key);
      this.entries.set(key, entry);
      entry.refs++;
    } else {
      this.counters.misses++;
      // Counted in `refs` by the load itself, so a load finishing for someone else cannot evict
      // and close it before this request's turn.
      entry = await this.loadOnce(key, hint);
    }
    try {
      return await fn(entry.model);
    } finally {
      if (--entry.refs === 0 && entry.evicted) await this.opts.close(entry.model);
    }
  }

  /** Keys of the cached models, least recently used first. */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  stats(): ModelCacheStats {
    return { models: this.entries.size, bytes: this.bytes, budgetBytes: this.opts.budgetBytes, ...this.counters };
  }

  /** Evicts (and closes once idle) every model. */
  async clear(): Promise<void> {
    await Promise.all([...this.entries.keys()].map((k) => this.evict(k)));
  }

  private loadOnce(key: string, hint: H | undefined): Promise<Entry<M>> {
    let pending = this.loading.get(key);
    if (pending === undefined) {
      const state = { waiters: 0 };
      pending = { promise: this.load(key, state, hint).finally(() => this.loading.delete(key)), state };
      this.loading.set(key, pending);
    }
    pending.state.waiters++;
    return pending.promise;
  }

  private async load(key: string, pending: { waiters: number }, hint: H | undefined): Promise<Entry<M>> {
    const t0 = performance.now();
    let loaded: Loaded<M>;
    try {
      loaded = await this.opts.load(key, hint);
    } catch (err) {
      this.counters.loadFailures++;
      throw err;
    }
    const seconds = (performance.now() - t0) / 1000;
    this.counters.loads++;
    this.counters.loadSecondsSum += seconds;
    this.counters.loadSecondsMax = Math.max(this.counters.loadSecondsMax, seconds);
    if (loaded.sizeBytes > this.opts.budgetBytes) {
      await this.opts.close(loaded.model);
      throw tooLarge(key, loaded.sizeBytes, this.opts.budgetBytes);
    }
    const entry: Entry<M> = { model: loaded.model, sizeBytes: loaded.sizeBytes, refs: pending.waiters, evicted: false };
    this.entries.set(key, entry);
    this.bytes += entry.sizeBytes;
    // Oldest first, never the entry just loaded (it fits on its own: checked above).
    for (const k of this.entries.keys()) {
      if (this.bytes <= this.opts.budgetBytes) break;
      if (k !== key) await this.evict(k);
    }
    return entry;
  }

  private async evict(key: string): Promise<void> {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    this.bytes -= entry.sizeBytes;
    this.counters.evictions++;
    entry.evicted = true;
    if (entry.refs === 0) await this.opts.close(entry.model);
  }
}
