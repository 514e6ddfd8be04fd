/** Small pieces shared by the pages: polling, error and status display, progress. */
import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { shown } from './api.js';
import type { ShownError } from './lib/errors.js';

export interface Polled<T> {
  data: T | undefined;
  error: ShownError | undefined;
  loading: boolean;
  reload: () => void;
}

/**
 * Calls `load` now and every `intervalMs` (0: once) while the component is shown, keeping the
 * last good answer on screen when a later call fails. `key` restarts it (another endpoint).
 */
export function usePoll<T>(load: () => Promise<T>, intervalMs: number, key: string): Polled<T> {
  const [state, setState] = useState<{ data: T | undefined; error: ShownError | undefined; loading: boolean }>({ data: undefined, error: undefined, loading: true });
  const loadRef = useRef(load);
  loadRef.current = load;
  const tick = useRef<() => void>(() => undefined);
  useEffect(() => {
    let alive = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    setState({ data: undefined, error: undefined, loading: true });
    const run = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      loadRef.current().then(
        (data) => alive && setState({ data, error: undefined, loading: false }),
        (err: unknown) => alive && setState((s) => ({ data: s.data, error: shown(err), loading: false })),
      ).finally(() => {
        if (alive && intervalMs > 0) timer = setTimeout(run, intervalMs);
      });
    };
    tick.current = run;
    run();
    return () => {
      alive = false;
      if (timer !== undefined) clearTimeout(timer);
    };
  }, [key, intervalMs]);
  const reload = useCallback(() => tick.current(), []);
  return { ...state, reload };
}

/** An API error as the API wrote it: its code and message. */
export function ErrorBox({ error }: { error: ShownError | undefined }) {
  if (error === undefined) return null;
  return (
    <div class="error" role="alert">
      <strong>{error.code}</strong> {error.message}
    </div>
  );
}

export function Spinner({ label }: { label: string }) {
  return <span class="busy" role="status"><span class="spinner" aria-hidden="true" />{label}</span>;
}

const TONES: Record<string, string> = {
  ready: 'ok', READY: 'ok', DEPLOYMENT_READY: 'ok', NOT_UPDATING: 'ok',
  updating: 'busy', IN_PROGRESS: 'busy', DEPLOYMENT_CREATING: 'busy', DEPLOYMENT_RECOVERING: 'busy', PENDING_REGISTRATION: 'busy',
  failed: 'bad', UPDATE_FAILED: 'bad', DEPLOYMENT_FAILED: 'bad', FAILED_REGISTRATION: 'bad', DEPLOYMENT_ABORTED: 'bad',
};

/** A state word in a coloured pill (the word itself carries the meaning, not only the colour). */
export function Badge({ state }: { state: string }) {
  return <span class={`badge ${TONES[state] ?? 'idle'}`} data-state={state}>{state.replace(/^DEPLOYMENT_/, '').replace(/_/g, ' ').toLowerCase()}</span>;
}

export function Section({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section class="panel" aria-label={title}>
      <header><h2>{title}</h2>{actions}</header>
      {children}
    </section>
  );
}

/** A muted line for empty states ("no data yet"). */
export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}
