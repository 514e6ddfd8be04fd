/**
 * One endpoint: state and config, served entities with replicas, the traffic split editor, live
 * charts, the autoscaling editor with its simulation, autoscaling decisions, replica logs, the
 * Query panel and the inference table.
 */
import { useEffect, useMemo, useState } from 'preact/hooks';
import { exampleRequest } from '../../../src/client/example.js';
import { api, qs, raw, shown, type RawAnswer } from '../api.js';
import { Chart } from '../chart.js';
import { Badge, Empty, ErrorBox, Section, Spinner, usePoll } from '../components.js';
import { configWithRoutes, validateTraffic, type TrafficInput } from '../lib/config.js';
import { isMissingRoute, type ShownError } from '../lib/errors.js';
import { buildState, endpointStatus, formatMs, formatTime, prettyJson } from '../lib/format.js';
import { href } from '../lib/route.js';
import { CHARTS, chartData, hasTraffic } from '../lib/series.js';
import type { Endpoint, EndpointConfigView, InferenceTablePage, ModelVersionResponse, Series, ServedEntityView } from '../lib/types.js';
import { ScalingEditor } from './simulate.js';

/** How often the page refreshes the endpoint and its metrics: fresh enough to watch a rollout. */
const POLL_MS = 2000;

export function EndpointPage({ name }: { name: string }) {
  const path = `/api/2.0/serving-endpoints/${encodeURIComponent(name)}`;
  const ep = usePoll(() => api<Endpoint>('GET', path), POLL_MS, name);
  const e = ep.data;
  return (
    <>
      <p class="crumbs"><a href={href({ page: 'endpoints' })}>Endpoints</a> / {name}</p>
      <h1>{name} {e && <Badge state={endpointStatus(e)} />}</h1>
      <ErrorBox error={ep.error} />
      {ep.loading && <Spinner label="Loading endpoint…" />}
      {e && (
        <>
          <StateSection e={e} path={path} onChange={ep.reload} />
          <div class="cols">
            <QueryPanel e={e} />
            {e.config && <TrafficEditor key={e.config.config_version} config={e.config} path={path} busy={e.state.config_update === 'IN_PROGRESS'} onSaved={ep.reload} />}
          </div>
          {e.config && <ScalingEditor key={e.config.config_version} config={e.config} path={path} busy={e.state.config_update === 'IN_PROGRESS'} onSaved={ep.reload} />}
          <Charts name={name} />
          <Decisions e={e} />
          <Logs e={e} path={path} kind="replica" />
          <Logs e={e} path={path} kind="build" />
          <InferenceTable e={e} path={path} />
        </>
      )}
    </>
  );
}

function StateSection({ e, path, onChange }: { e: Endpoint; path: string; onChange: () => void }) {
  const [error, setError] = useState<ShownError | undefined>(undefined);
  const [busy, setBusy] = useState<string | undefined>(undefined);
  const act = (label: string, method: string, url: string, then: () => void): void => {
    setBusy(label);
    setError(undefined);
    api(method, url).then(then, (err: unknown) => setError(shown(err))).finally(() => setBusy(undefined));
  };
  const updating = e.state.config_update === 'IN_PROGRESS';
  return (
    <Section title="State" actions={
      <div class="actions">
        {updating && <button type="button" class="secondary" disabled={busy !== undefined} onClick={() => act('Canceling the update…', 'POST', `${path}/config/cancel`, onChange)}>Cancel update</button>}
        <button type="button" class="danger" disabled={busy !== undefined} onClick={() => {
          if (confirm(`Delete endpoint '${e.name}'? Its replicas stop.`)) act('Deleting…', 'DELETE', path, () => { location.hash = href({ page: 'endpoints' }); });
        }}>Delete</button>
      </div>
    }>
      <p>
        Serving: <strong>{e.state.ready === 'READY' ? 'ready' : 'not ready'}</strong> · config update: <Badge state={e.state.config_update} />
        {' '}· created by {e.creator} on {formatTime(e.creation_timestamp)}
      </p>
      {e.state.config_update_message && (
        <p class={e.state.config_update === 'UPDATE_FAILED' ? 'error' : 'note'} role={e.state.config_update === 'UPDATE_FAILED' ? 'alert' : undefined}>
          {updating && <Spinner label="" />}{e.state.config_update_message}
        </p>
      )}
      {busy !== undefined && <Spinner label={busy} />}
      <ErrorBox error={error} />
      {e.config && <EntitiesTable title={`Serving config (version ${e.config.config_version})`} c={e.config} />}
      {e.pending_config && <EntitiesTable title={`Pending config (version ${e.pending_config.config_version})`} c={e.pending_config} />}
    </Section>
  );
}

function EntitiesTable({ title, c }: { title: string; c: EndpointConfigView }) {
  const pct = new Map(c.traffic_config.routes.map((r) => [r.served_entity_name, r.traffic_percentage]));
  return (
    <table class="entities">
      <caption>{title}</caption>
      <thead><tr><th>Served entity</th><th>Model</th><th>Workload</th><th>Traffic</th><th>Replicas ready / total / desired</th><th>Deployment</th></tr></thead>
      <tbody>
        {c.served_entities.map((s) => (
          <tr key={s.name} data-entity={s.name}>
            <td><code>{s.name}</code></td>
            <td>{s.model_family === undefined
              ? <><a href={href({ page: 'model', name: s.entity_name ?? '' })}>{s.entity_name}</a> v{s.entity_version}{s.entity_alias ? ` (@${s.entity_alias})` : ''}</>
              : <FamilyCell family={s.model_family} state={s.state.family} />}</td>
            <td>{s.workload_size} {s.workload_type}{s.scale_to_zero_enabled ? ', scales to zero' : ''}</td>
            <td>{pct.get(s.name) ?? 0}%</td>
            <td>{s.state.replicas.ready} / {s.state.replicas.total} / {s.state.replicas.desired}</td>
            <td><Badge state={s.state.deployment} /> <span class="meta">{s.state.deployment_state_message}</span></td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function TrafficEditor({ config, path, busy, onSaved }: { config: EndpointConfigView; path: string; busy: boolean; onSaved: () => void }) {
  const initial = (): TrafficInput[] => config.served_entities.map((s) => ({
    name: s.name, value: String(config.traffic_config.routes.find((r) => r.served_entity_name === s.name)?.traffic_percentage ?? 0),
  }));
  const [rows, setRows] = useState<TrafficInput[]>(initial);
  const [saving, setSaving] = useState(false);
  const [error, setError] = useState<ShownError | undefined>(undefined);
  const check = validateTraffic(rows);
  const save = (ev: Event): void => {
    ev.preventDefault();
    if (check.routes === undefined) return;
    setSaving(true);
    setError(undefined);
    api('PUT', `${path}/config`, configWithRoutes(config, check.routes)).then(onSaved, (err: unknown) => setError(shown(err))).finally(() => setSaving(false));
  };
  return (
    <Section title="Traffic split">
      <form onSubmit={save} aria-label="Traffic split">
        {rows.map((r, i) => (
          <div class="field inline" key={r.name}>
            <label for={`traffic-${r.name}`}><code>{r.name}</code></label>
            <input id={`traffic-${r.name}`} class="pct" inputMode="numeric" value={r.value} aria-invalid={check.errors.some((m) => m.includes(`[${i}]`))}
              onInput={(ev) => {
                const value = ev.currentTarget.value;
                setRows((old) => old.map((o, j) => (j === i ? { ...o, value } : o)));
              }} /> %
          </div>
        ))}
        {check.errors.map((m) => <p key={m} class="hint bad">{m}</p>)}
        <ErrorBox error={error} />
        <div class="actions">
          <button type="submit" disabled={check.routes === undefined || saving || busy}>{saving ? 'Saving…' : 'Save traffic split'}</button>
          <button type="button" class="secondary" onClick={() => { setRows(initial()); setError(undefined); }}>Reset</button>
        </div>
        {busy && <p class="meta">An update is in progress; the split can change once it is done.</p>}
      </form>
    </Section>
  );
}

function QueryPanel({ e }: { e: Endpoint }) {
  const first = (e.config ?? e.pending_config)?.served_entities[0];
  const [body, setBody] = useState<string | undefined>(undefined);
  const [answer, setAnswer] = useState<RawAnswer | undefined>(undefined);
  const [error, setError] = useState<ShownError | undefined>(undefined);
  const [sending, setSending] = useState(false);
  // Prefill once with the served version's input example (or a request built from its signature).
  useEffect(() => {
    if (first === undefined || body !== undefined) return;
    api<ModelVersionResponse>('GET', `/api/2.0/mlflow/model-versions/get${qs({ name: first.entity_name, version: first.entity_version })}`)
      .then((r) => {
        const example = exampleRequest(r.model_version);
        setBody((b) => b ?? ('body' in example ? JSON.stringify(example.body, null, 2) : '{"inputs": []}'));
      }, () => setBody((b) => b ?? '{"inputs": []}'));
  }, [first?.entity_name, first?.entity_version]);
  const send = (): void => {
    if (body === undefined) return;
    try {
      JSON.parse(body);
    } catch (err) {
      setError({ status: 0, code: 'MALFORMED_REQUEST', message: `The request is not valid JSON: ${(err as Error).message}` });
      return;
    }
    setSending(true);
    setError(undefined);
    raw('POST', `/serving-endpoints/${encodeURIComponent(e.name)}/invocations`, body).then(setAnswer, (err: unknown) => setError(shown(err))).finally(() => setSending(false));
  };
  const ok = answer !== undefined && answer.status >= 200 && answer.status < 300;
  return (
    <Section title="Query">
      <form onSubmit={(ev) => { ev.preventDefault(); send(); }} aria-label="Query">
        <label for="query-body">Request (MLflow scoring JSON) — Ctrl+Enter sends</label>
        <textarea id="query-body" rows={8} spellcheck={false} value={body ?? ''} disabled={body === undefined}
          onInput={(ev) => setBody(ev.currentTarget.value)}
          onKeyDown={(ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); send(); } }} />
        <div class="actions">
          <button type="submit" disabled={sending || body === undefined}>{sending ? 'Sending…' : 'Send'}</button>
          {sending && <Spinner label="Waiting for the model…" />}
        </div>
      </form>
      <ErrorBox error={error} />
      {answer && (
        <div class="answer" aria-live="polite">
          <p>
            Status <strong class={ok ? 'ok-text' : 'bad-text'} data-status={answer.status}>{answer.status}</strong>
            {' '}· latency <strong data-latency>{formatMs(answer.elapsedMs)}</strong>
            {answer.headers.get('served-model-name') ? <> · answered by <code>{answer.headers.get('served-model-name')}</code></> : null}
          </p>
          <pre class="response">{prettyJson(answer.text)}</pre>
        </div>
      )}
    </Section>
  );
}

function Charts({ name }: { name: string }) {
  const series = usePoll(() => api<Series>('GET', `/api/2.0/serving-endpoints/${encodeURIComponent(name)}/metrics/series${qs({ window: '15m' })}`), POLL_MS, name);
  const points = series.data?.points;
  const datasets = useMemo(() => (points === undefined ? undefined : CHARTS.map((c) => chartData(points, c))), [points]);
  const missing = series.error !== undefined && isMissingRoute(series.error);
  return (
    <Section title="Metrics (last 15 min)">
      {missing || (points !== undefined && points.length === 0)
        ? <Empty>No data yet.</Empty>
        : <ErrorBox error={series.error} />}
      {series.loading && <Spinner label="Loading metrics…" />}
      {points !== undefined && points.length > 0 && !hasTraffic(points) && <p class="meta">No requests in this window yet.</p>}
      {datasets !== undefined && points !== undefined && points.length > 0 && (
        <div class="charts">{CHARTS.map((c, i) => <Chart key={c.id} spec={c} data={datasets[i] ?? [[]]} />)}</div>
      )}
    </Section>
  );
}

function Decisions({ e }: { e: Endpoint }) {
  const rows = (e.config?.served_entities ?? [])
    .flatMap((s) => (s.autoscaling?.last_decisions ?? []).map((d) => ({ entity: s.name, ...d })))
    .sort((a, b) => b.timestamp - a.timestamp)
    .slice(0, 20);
  const now = (e.config?.served_entities ?? []).map((s) => s.autoscaling && (
    <li key={s.name}><code>{s.name}</code>: {s.autoscaling.ready_replicas} ready, {s.autoscaling.starting_replicas} starting, {s.autoscaling.desired_replicas} desired
      (bounds {s.autoscaling.min_replicas}–{s.autoscaling.max_replicas}, target {s.autoscaling.target_concurrency} per replica); {s.autoscaling.in_flight_requests} in flight, {s.autoscaling.queued_requests} queued</li>
  ));
  return (
    <Section title="Autoscaling">
      <ul class="plain">{now}</ul>
      {rows.length === 0 ? <Empty>No scaling decisions yet.</Empty> : (
        <table>
          <thead><tr><th>Time</th><th>Entity</th><th>Desired</th><th>Reason</th><th>Stable / panic concurrency</th><th>Ready + starting</th></tr></thead>
          <tbody>
            {rows.map((d) => (
              <tr key={`${d.entity}-${d.timestamp}`}>
                <td>{formatTime(d.timestamp)}</td><td><code>{d.entity}</code></td><td>{d.desired_replicas}{d.panic ? ' (panic)' : ''}</td>
                <td>{d.reason}</td><td>{d.stable_concurrency.toFixed(2)} / {d.panic_concurrency.toFixed(2)}</td><td>{d.ready_replicas} + {d.starting_replicas}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}

/** What the log section shows: the replicas' output, or the Python environment's build log. */
const LOG_KINDS = {
  replica: { title: 'Replica logs', route: 'logs', button: 'Show logs', empty: 'No output yet.' },
  build: { title: 'Python environment build', route: 'build-logs', button: 'Show build log', empty: 'No environment build: the model runs in the server\'s Python as it is (or needs none).' },
} as const;

function Logs({ e, path, kind }: { e: Endpoint; path: string; kind: keyof typeof LOG_KINDS }) {
  const k = LOG_KINDS[kind];
  const entities = [...(e.config?.served_entities ?? []), ...(e.pending_config?.served_entities ?? [])].map((s) => s.name);
  const names = [...new Set(entities)];
  const [entity, setEntity] = useState(names[0] ?? '');
  const [logs, setLogs] = useState<string | undefined>(undefined);
  const [error, setError] = useState<ShownError | undefined>(undefined);
  const [loading, setLoading] = useState(false);
  const load = (ev: Event): void => {
    ev.preventDefault();
    const which = names.includes(entity) ? entity : names[0];
    if (which === undefined) return;
    setLoading(true);
    setError(undefined);
    api<{ logs: string }>('GET', `${path}/served-models/${encodeURIComponent(which)}/${k.route}`)
      .then((r) => setLogs(r.logs), (err: unknown) => setError(shown(err))).finally(() => setLoading(false));
  };
  const id = `${kind}-logs-entity`;
  return (
    <Section title={k.title}>
      <form class="row" onSubmit={load} aria-label={k.title}>
        <label for={id}>Served entity</label>
        <select id={id} value={entity} onChange={(ev) => setEntity(ev.currentTarget.value)}>
          {names.map((n) => <option key={n} value={n}>{n}</option>)}
        </select>
        <button type="submit" disabled={loading || names.length === 0}>{logs === undefined ? k.button : 'Refresh'}</button>
        {loading && <Spinner label="Loading logs…" />}
      </form>
      <ErrorBox error={error} />
      {kind === 'build' && logs !== undefined && <p class="meta" data-build-state={buildState(logs)}>Build state: <strong>{buildState(logs)}</strong></p>}
      {logs !== undefined && (logs === '' ? <Empty>{k.empty}</Empty> : <pre class="logs">{logs}</pre>)}
    </Section>
  );
}

function InferenceTable({ e, path }: { e: Endpoint; path: string }) {
  const enabled = e.ai_gateway?.inference_table_config?.enabled === true;
  const table = usePoll(
    () => (enabled ? api<InferenceTablePage>('GET', `${path}/inference-table${qs({ max_results: 50 })}`) : Promise.resolve<InferenceTablePage>({ rows: [] })),
    enabled ? 5000 : 0, `${path}:${String(enabled)}`,
  );
  const rows = table.data?.rows ?? [];
  const missing = table.error !== undefined && isMissingRoute(table.error);
  return (
    <Section title="Inference table">
      {!enabled && <Empty>Not enabled for this endpoint (<code>ai_gateway.inference_table_config.enabled</code>).</Empty>}
      {enabled && (missing ? <Empty>No data yet.</Empty> : <ErrorBox error={table.error} />)}
      {enabled && !missing && !table.loading && rows.length === 0 && <Empty>No data yet.</Empty>}
      {rows.length > 0 && (
        <table class="rows">
          <thead><tr><th>Time</th><th>Request id</th><th>Entity</th><th>Status</th><th>Time taken</th><th>Request</th><th>Response</th></tr></thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.request_id}>
                <td>{formatTime(r.timestamp_ms)}</td><td><code>{r.client_request_id ?? r.request_id}</code></td>
                <td>{r.served_entity} ({r.model_name} v{r.model_version})</td><td>{r.status_code}</td><td>{formatMs(r.execution_time_ms)}</td>
                <td><pre class="cell">{prettyJson(r.request)}</pre></td><td><pre class="cell">{prettyJson(r.response)}</pre></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}

/** A family entity's members and cache: "family ads-* · 40 models loaded · hit rate 0.93". */
function FamilyCell({ family, state }: { family: NonNullable<ServedEntityView['model_family']>; state: ServedEntityView['state']['family'] }) {
  const members = [family.name_prefix === undefined ? '' : `${family.name_prefix}*`, family.tag === undefined ? '' : `tag ${family.tag}`].filter((x) => x !== '').join(' ');
  const loaded = state?.replicas.reduce((a, r) => a + r.models_loaded, 0);
  return <span>family <code>{members}</code>{loaded === undefined ? '' : ` · ${loaded} models loaded · hit rate ${state?.hit_rate === null || state?.hit_rate === undefined ? '–' : state.hit_rate.toFixed(2)}`}</span>;
}
