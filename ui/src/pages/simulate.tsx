/**
 * The autoscaling editor: change a served entity's scaling settings and see, before saving, what
 * they would have cost on the endpoint's recent traffic (or a bundled trace) next to the current
 * ones: replicas and p99 over time, and a table; with a p99 target, the cheapest setting that
 * meets it. The simulation runs on the server (`POST .../simulate`, CAN_MANAGE).
 */
import { useMemo, useState } from 'preact/hooks';
import { api, shown } from '../api.js';
import { Chart } from '../chart.js';
import { ErrorBox, Section, Spinner } from '../components.js';
import type { ShownError } from '../lib/errors.js';
import { checkForm, comparisonRows, configWithScaling, formOf, SIMULATION_CHARTS, simulationChart, TRACE_SOURCES, withSetting, type ScalingForm, type TraceChoice } from '../lib/simulate.js';
import type { EndpointConfigView, SimulateAnswer } from '../lib/types.js';

export function ScalingEditor({ config, path, busy, onSaved }: { config: EndpointConfigView; path: string; busy: boolean; onSaved: () => void }) {
  const first = config.served_entities[0];
  const [form, setForm] = useState<ScalingForm | undefined>(first && formOf(first));
  const [answer, setAnswer] = useState<{ a: SimulateAnswer; endMs: number } | undefined>(undefined);
  const [running, setRunning] = useState<string | undefined>(undefined);
  const [error, setError] = useState<ShownError | undefined>(undefined);
  if (form === undefined) return null;
  const checked = checkForm(form);
  const set = (patch: Partial<ScalingForm>): void => setForm({ ...form, ...patch });
  const simulate = (ev: Event): void => {
    ev.preventDefault();
    if (checked.body === undefined) return;
    setRunning('Simulating…');
    setError(undefined);
    api<SimulateAnswer>('POST', `${path}/simulate`, checked.body).then((a) => setAnswer({ a, endMs: Date.now() }), (err: unknown) => setError(shown(err))).finally(() => setRunning(undefined));
  };
  const save = (): void => {
    if (checked.fields === undefined) return;
    setRunning('Saving…');
    setError(undefined);
    api('PUT', `${path}/config`, configWithScaling(config, form.entity, checked.fields)).then(onSaved, (err: unknown) => setError(shown(err))).finally(() => setRunning(undefined));
  };
  const field = (id: string, label: string, value: string, key: keyof ScalingForm, hint?: string) => (
    <div class="field inline">
      <label for={id}>{label}</label>
      <input id={id} class="num" value={value} onInput={(ev) => set({ [key]: ev.currentTarget.value })} />
      {hint && <span class="meta"> {hint}</span>}
    </div>
  );
  return (
    <Section title="Autoscaling: what would it cost?">
      <form onSubmit={simulate} aria-label="Autoscaling">
        {config.served_entities.length > 1 && (
          <div class="field inline">
            <label for="sim-entity">Served entity</label>
            <select id="sim-entity" value={form.entity} onChange={(ev) => {
              const e = config.served_entities.find((x) => x.name === ev.currentTarget.value);
              if (e) setForm(formOf(e, form.source));
            }}>{config.served_entities.map((e) => <option key={e.name} value={e.name}>{e.name}</option>)}</select>
          </div>
        )}
        <div class="field inline">
          <label for="sim-source">Traffic</label>
          <select id="sim-source" value={form.source} onChange={(ev) => set({ source: ev.currentTarget.value as TraceChoice })}>
            {TRACE_SOURCES.map((s) => <option key={s.value} value={s.value}>{s.label}</option>)}
          </select>
        </div>
        {field('sim-target', 'Target concurrency', form.targetConcurrency, 'targetConcurrency', 'requests per replica')}
        <div class="field inline">
          <label for="sim-zero">Scale to zero</label>
          <input id="sim-zero" type="checkbox" checked={form.scaleToZero} onChange={(ev) => set({ scaleToZero: ev.currentTarget.checked })} />
        </div>
        {field('sim-min', 'Min provisioned concurrency', form.minProvisionedConcurrency, 'minProvisionedConcurrency', 'empty: the workload size\'s')}
        {field('sim-max', 'Max provisioned concurrency', form.maxProvisionedConcurrency, 'maxProvisionedConcurrency', 'empty: the workload size\'s')}
        {field('sim-stable', 'Stable window (s)', form.stableWindowS, 'stableWindowS')}
        {field('sim-delay', 'Scale-down delay (s)', form.scaleDownDelayS, 'scaleDownDelayS')}
        {field('sim-grace', 'Scale-to-zero grace (s)', form.scaleToZeroGraceS, 'scaleToZeroGraceS')}
        {field('sim-p99', 'Target p99 (ms)', form.targetP99Ms, 'targetP99Ms', 'optional: find the cheapest setting that meets it')}
        {field('sim-price', 'Price per replica-hour', form.pricePerReplicaHour, 'pricePerReplicaHour', 'optional: adds the cost')}
        {checked.errors.map((m) => <p key={m} class="hint bad">{m}</p>)}
        <ErrorBox error={error} />
        <div class="actions">
          <button type="submit" disabled={checked.body === undefined || running !== undefined}>Simulate</button>
          <button type="button" class="secondary" disabled={checked.fields === undefined || running !== undefined || busy} onClick={save}>Save candidate</button>
          <button type="button" class="secondary" onClick={() => { const e = config.served_entities.find((x) => x.name === form.entity); if (e) setForm(formOf(e, form.source)); setAnswer(undefined); }}>Reset</button>
          {running !== undefined && <Spinner label={running} />}
        </div>
      </form>
      {answer && <Comparison answer={answer.a} endMs={answer.endMs} onUse={(s) => set(withSetting(form, s))} />}
    </Section>
  );
}

function Comparison({ answer, endMs, onUse }: { answer: SimulateAnswer; endMs: number; onUse: (s: NonNullable<NonNullable<SimulateAnswer['recommendation']>['setting']>) => void }) {
  const charts = useMemo(() => SIMULATION_CHARTS.map((c) => {
    const { labels, data } = simulationChart(answer, c, endMs);
    return { spec: { id: c.id, title: c.title, unit: c.unit, lines: labels.map((label) => ({ label })) }, data };
  }), [answer, endMs]);
  const rec = answer.recommendation;
  const ms = (v: number | null): string => (v === null ? '–' : `${+v.toFixed(1)}`);
  return (
    <div class="simulation" aria-live="polite">
      <p class="meta">
        {answer.trace.requests} requests over {answer.trace.duration_s} s ({answer.trace.source}); model time {answer.replica_model.service_time_source},
        cold start {answer.replica_model.cold_start_ms.join('/')} ms ({answer.replica_model.cold_start_source}), {answer.replica_model.max_concurrency_per_replica} requests per replica.
      </p>
      <table class="simulation">
        <thead><tr><th>Config</th><th>Replica-seconds</th><th>Cost</th><th>p50 ms</th><th>p99 ms</th><th>Waited</th><th>Refused</th><th>Cold starts</th><th>Max replicas</th></tr></thead>
        <tbody>
          {comparisonRows(answer).map(({ label, result: r }) => (
            <tr key={label} data-config={label}>
              <td>{label}</td><td>{r.replica_seconds.toFixed(0)}</td><td>{r.cost === null ? '–' : r.cost.toFixed(2)}</td><td>{ms(r.p50_ms)}</td><td>{ms(r.p99_ms)}</td>
              <td>{r.waited}</td><td>{r.refused_buffer_full + r.refused_deadline}</td><td>{r.cold_starts}</td><td>{r.max_replicas}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {rec && (rec.setting === null
        ? <p class="note">No setting tried meets p99 ≤ {rec.goal.target_p99_ms} ms on this traffic.</p>
        : <p class="note">
          Cheapest for p99 ≤ {rec.goal.target_p99_ms} ms: target {rec.setting.target_concurrency}, scale to zero {rec.setting.scale_to_zero_enabled ? 'on' : 'off'},
          stable window {rec.setting.stable_window_ms / 1000} s, scale-down delay {rec.setting.scale_down_delay_ms / 1000} s
          {rec.savings_vs_static_peak === null ? '' : ` (${Math.round(rec.savings_vs_static_peak * 100)}% fewer replica-seconds than static provisioning for the peak)`}.
          {' '}<button type="button" class="secondary" onClick={() => rec.setting && onUse(rec.setting)}>Use it</button>
        </p>)}
      <div class="charts">{charts.map((c) => <Chart key={c.spec.id} spec={c.spec} data={c.data} />)}</div>
    </div>
  );
}
