/** Models: the registered models, one model's versions (signature, input example, aliases), Serve, register by upload. */
import { useState } from 'preact/hooks';
import { exampleRequest, type ExampleRequest } from '../../../src/client/example.js';
import { api, qs, shown, upload } from '../api.js';
import { Badge, Empty, ErrorBox, Section, Spinner, usePoll } from '../components.js';
import { configWithEntity, serveRequest } from '../lib/config.js';
import type { ShownError } from '../lib/errors.js';
import { formatAgo, formatBytes, formatTime, prettyJson } from '../lib/format.js';
import { href } from '../lib/route.js';
import type {
  CreateModelVersionRequest, Endpoint, KeyValue, ModelVersion, ModelVersionResponse, RegisteredModelResponse, RunResponse,
  SearchModelVersionsResponse, SearchRegisteredModelsResponse, TensorSpec, VersionEnvironment,
} from '../lib/types.js';

/** Registered model names, as the registry checks them. */
const MODEL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function ModelsPage() {
  const models = usePoll(() => api<SearchRegisteredModelsResponse>('GET', `/api/2.0/mlflow/registered-models/search${qs({ max_results: 1000 })}`), 5000, 'models');
  const list = models.data?.registered_models ?? [];
  return (
    <>
      <h1>Models</h1>
      <RegisterForm />
      <Section title="Registered models">
        <ErrorBox error={models.error} />
        {models.loading && <Spinner label="Loading models…" />}
        {!models.loading && list.length === 0 && <Empty>No models yet: register one above.</Empty>}
        {list.length > 0 && (
          <table>
            <thead><tr><th>Name</th><th>Latest version</th><th>Aliases</th><th>Description</th><th>Updated</th></tr></thead>
            <tbody>
              {list.map((m) => {
                const latest = m.latest_versions?.[0];
                return (
                  <tr key={m.name}>
                    <td><a href={href({ page: 'model', name: m.name })}>{m.name}</a></td>
                    <td>{latest ? <>v{latest.version} <Badge state={latest.status} /></> : '–'}</td>
                    <td>{(m.aliases ?? []).map((a) => <code key={a.alias}>@{a.alias}→v{a.version} </code>)}</td>
                    <td>{m.description}</td>
                    <td>{formatAgo(m.last_updated_timestamp, Date.now())}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
      </Section>
    </>
  );
}

/** Upload a file and register it as a new version: artifact proxy, then model-versions/create. */
function RegisterForm() {
  const [name, setName] = useState('');
  const [file, setFile] = useState<File | undefined>(undefined);
  const [progress, setProgress] = useState<string | undefined>(undefined);
  const [error, setError] = useState<ShownError | undefined>(undefined);
  const nameError = name !== '' && !MODEL_NAME_RE.test(name)
    ? `Invalid value ${JSON.stringify(name)} for 'name': expected a model name of 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit.`
    : undefined;

  const submit = async (ev: Event): Promise<void> => {
    ev.preventDefault();
    if (file === undefined || name === '' || nameError !== undefined) {
      setError({ status: 0, code: 'INVALID_PARAMETER_VALUE', message: nameError ?? (name === '' ? "Enter a model name." : 'Choose a model file.') });
      return;
    }
    setError(undefined);
    // Each upload gets its own folder in the caller's upload area; the version keeps a copy.
    const folder = `console/${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
    const key = `${folder}/${file.name.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_')}`;
    try {
      setProgress('Uploading 0%');
      await upload(key, file, (f) => setProgress(`Uploading ${Math.round(f * 100)}%`));
      setProgress('Registering…');
      await api('POST', '/api/2.0/mlflow/registered-models/create', { name }).catch((err: unknown) => {
        if (shown(err).code !== 'RESOURCE_ALREADY_EXISTS') throw err;
      });
      const { model_version: v } = await api<ModelVersionResponse>('POST', '/api/2.0/mlflow/model-versions/create', { name, source: `mlflow-artifacts:/${key}` } satisfies CreateModelVersionRequest);
      await api('DELETE', `/api/2.0/mlflow-artifacts/artifacts/${folder}`).catch(() => undefined);
      location.hash = `${href({ page: 'model', name: v.name })}`;
    } catch (err) {
      setError(shown(err));
    } finally {
      setProgress(undefined);
    }
  };

  return (
    <Section title="Register a model">
      <form class="row" onSubmit={(e) => void submit(e)} aria-label="Register a model">
        <div class="field">
          <label for="model-name">Model name</label>
          <input id="model-name" value={name} onInput={(e) => setName(e.currentTarget.value.trim())} aria-invalid={nameError !== undefined} placeholder="iris" />
        </div>
        <div class="field">
          <label for="model-file">Model file (.onnx)</label>
          <input id="model-file" type="file" onChange={(e) => setFile(e.currentTarget.files?.[0])} />
        </div>
        <button type="submit" disabled={progress !== undefined}>Register</button>
        {progress !== undefined && <Spinner label={progress} />}
      </form>
      {nameError !== undefined && <p class="hint bad">{nameError}</p>}
      <ErrorBox error={error} />
    </Section>
  );
}

export function ModelPage({ name }: { name: string }) {
  const model = usePoll(() => api<RegisteredModelResponse>('GET', `/api/2.0/mlflow/registered-models/get${qs({ name })}`), 0, name);
  const versions = usePoll(
    () => api<SearchModelVersionsResponse>('GET', `/api/2.0/mlflow/model-versions/search${qs({ filter: `name = '${name}'`, max_results: 1000 })}`),
    5000, name,
  );
  const endpoints = usePoll(() => api<{ endpoints?: Endpoint[] }>('GET', '/api/2.0/serving-endpoints'), 5000, name);
  const list = [...(versions.data?.model_versions ?? [])].sort((a, b) => Number(b.version) - Number(a.version));
  const serving = (endpoints.data?.endpoints ?? []).filter((e) => (e.config?.served_entities ?? []).some((s) => s.entity_name === name));
  return (
    <>
      <p class="crumbs"><a href={href({ page: 'models' })}>Models</a> / {name}</p>
      <h1>{name}</h1>
      <ErrorBox error={model.error ?? versions.error} />
      {model.data && (
        <p>
          {model.data.registered_model.description || 'No description.'}{' '}
          {(model.data.registered_model.aliases ?? []).map((a) => <code key={a.alias}>@{a.alias} → v{a.version} </code>)}
        </p>
      )}
      {serving.length > 0 && <p>Served by {serving.map((e) => <a key={e.name} href={href({ page: 'endpoint', name: e.name })}>{e.name} </a>)}</p>}
      {versions.loading && <Spinner label="Loading versions…" />}
      {!versions.loading && list.length === 0 && <Empty>No versions.</Empty>}
      {list.map((v) => <VersionCard key={v.version} v={v} endpoints={endpoints.data?.endpoints ?? []} serving={serving} />)}
    </>
  );
}

function VersionCard({ v, endpoints, serving }: { v: ModelVersion; endpoints: Endpoint[]; serving: Endpoint[] }) {
  const [busy, setBusy] = useState<string | undefined>(undefined);
  const [error, setError] = useState<ShownError | undefined>(undefined);
  // Endpoints serving another version of this model, which this one could join.
  const joinable = serving.filter((e) => !(e.config?.served_entities ?? []).some((s) => s.entity_name === v.name && s.entity_version === v.version));
  const [picked, setPicked] = useState<string | undefined>(undefined);
  const target = joinable.find((e) => e.name === picked) ?? joinable[0];

  const serve = async (): Promise<void> => {
    setBusy('Creating endpoint…');
    setError(undefined);
    try {
      const all = await api<{ endpoints?: Endpoint[] }>('GET', '/api/2.0/serving-endpoints');
      const req = serveRequest(v.name, v.version, new Set((all.endpoints ?? endpoints).map((e) => e.name)));
      await api('POST', '/api/2.0/serving-endpoints', req);
      location.hash = href({ page: 'endpoint', name: req.name });
    } catch (err) {
      setError(shown(err));
      setBusy(undefined);
    }
  };
  const addTo = async (): Promise<void> => {
    const ep = target;
    if (ep?.config === undefined) return;
    setBusy(`Adding to ${ep.name}…`);
    setError(undefined);
    try {
      await api('PUT', `/api/2.0/serving-endpoints/${encodeURIComponent(ep.name)}/config`, configWithEntity(ep.config, v.name, v.version));
      location.hash = href({ page: 'endpoint', name: ep.name });
    } catch (err) {
      setError(shown(err));
      setBusy(undefined);
    }
  };

  return (
    <section class="panel version" aria-label={`Version ${v.version}`} data-version={v.version}>
      <header>
        <h2>Version {v.version} <Badge state={v.status} /> {v.aliases.map((a) => <code key={a}>@{a} </code>)}</h2>
        {v.status === 'READY' && (
          <div class="actions">
            <button type="button" onClick={() => void serve()} disabled={busy !== undefined}>Serve</button>
            {target !== undefined && joinable.length > 1 && (
              <>
                <label class="sr-only" for={`target-${v.version}`}>Endpoint to add this version to</label>
                <select id={`target-${v.version}`} value={target.name} onChange={(e) => setPicked(e.currentTarget.value)}>
                  {joinable.map((e) => <option key={e.name} value={e.name}>{e.name}</option>)}
                </select>
              </>
            )}
            {target !== undefined && (
              <button type="button" class="secondary" onClick={() => void addTo()} disabled={busy !== undefined}
                title="Adds this version to the endpoint at 0% traffic; then move traffic with its traffic split editor">
                Add to endpoint{joinable.length === 1 ? ` ${target.name}` : ''}
              </button>
            )}
          </div>
        )}
      </header>
      {busy !== undefined && <Spinner label={busy} />}
      <ErrorBox error={error} />
      {v.status === 'FAILED_REGISTRATION' && <div class="error" role="alert"><strong>Registration failed</strong> {v.status_message}</div>}
      <p class="meta">
        Registered {formatTime(v.creation_timestamp)} · {v.flavor ?? 'unknown flavor'} · {formatBytes(v.artifact_size_bytes)} · <code>{v.source}</code>
        {v.description ? ` · ${v.description}` : ''}
      </p>
      {v.run_id ? <RunDetails runId={v.run_id} /> : null}
      {v.signature && (
        <div class="cols">
          <SignatureTable title="Inputs" specs={v.signature.inputs} />
          <SignatureTable title="Outputs" specs={v.signature.outputs} />
        </div>
      )}
      {v.status === 'READY' && v.flavor === 'python' && <EnvironmentDetails v={v} />}
      {v.status === 'READY' && (
        <details>
          <summary>{v.input_example === undefined ? 'Example request (from the signature)' : 'Input example'}</summary>
          <ExampleBody example={exampleRequest(v)} />
        </details>
      )}
    </section>
  );
}

/** The MLflow run a version was logged by: its params, latest metrics and tags, loaded when opened. */
function RunDetails({ runId }: { runId: string }) {
  const [open, setOpen] = useState(false);
  return (
    <details class="run" onToggle={(e) => setOpen(e.currentTarget.open)}>
      <summary>Run <code>{runId}</code></summary>
      {open && <RunTables runId={runId} />}
    </details>
  );
}

/** A python version's environment files (python_env.yaml, requirements.txt), loaded when opened. */
function EnvironmentDetails({ v }: { v: ModelVersion }) {
  const [env, setEnv] = useState<VersionEnvironment | undefined>(undefined);
  const [error, setError] = useState<ShownError | undefined>(undefined);
  const open = (ev: Event): void => {
    if (!(ev.currentTarget as HTMLDetailsElement).open || env !== undefined) return;
    api<VersionEnvironment>('GET', `/api/2.0/mlflow/model-versions/get-environment${qs({ name: v.name, version: v.version })}`)
      .then(setEnv, (err: unknown) => setError(shown(err)));
  };
  return (
    <details onToggle={open} data-environment={v.version}>
      <summary>Python environment</summary>
      <ErrorBox error={error} />
      {env === undefined && error === undefined && <Spinner label="Loading the environment…" />}
      {env !== undefined && (
        <>
          {env.python_env === undefined && env.requirements === undefined && <Empty>No python_env.yaml or requirements.txt: the model runs in the server's Python as it is.</Empty>}
          {env.python_env !== undefined && <><h3>python_env.yaml</h3><pre>{env.python_env}</pre></>}
          {env.requirements !== undefined && <><h3>requirements.txt</h3><pre>{env.requirements}</pre></>}
          {env.conda && <p class="meta">conda.yaml is there too; Ferry does not use conda environments (python_env.yaml and requirements.txt only).</p>}
        </>
      )}
    </details>
  );
}

function RunTables({ runId }: { runId: string }) {
  const run = usePoll(() => api<RunResponse>('GET', `/api/2.0/mlflow/runs/get${qs({ run_id: runId })}`), 0, runId);
  if (run.loading) return <Spinner label="Loading the run…" />;
  if (run.data === undefined) return <ErrorBox error={run.error} />;
  const { info, data } = run.data.run;
  // MLflow's own tags (mlflow.*) are bookkeeping: source, user, logged-model history.
  const tags = data.tags.filter((t) => !t.key.startsWith('mlflow.'));
  return (
    <>
      <p class="meta">{info.run_name} · {info.status} · started {formatTime(info.start_time)} by {info.user_id} · experiment {info.experiment_id}</p>
      <div class="cols">
        <KeyValueTable title="Params" rows={data.params} />
        <KeyValueTable title="Metrics" rows={data.metrics.map((m) => ({ key: m.key, value: `${m.value} (step ${m.step})` }))} />
        <KeyValueTable title="Tags" rows={tags} />
      </div>
    </>
  );
}

function KeyValueTable({ title, rows }: { title: string; rows: KeyValue[] }) {
  return (
    <table class="signature">
      <caption>{title}</caption>
      <tbody>
        {rows.length === 0 && <tr><td>none</td></tr>}
        {rows.map((r) => <tr key={r.key}><th scope="row">{r.key}</th><td>{r.value}</td></tr>)}
      </tbody>
    </table>
  );
}

function SignatureTable({ title, specs }: { title: string; specs: TensorSpec[] }) {
  return (
    <table class="signature">
      <caption>{title}</caption>
      <thead><tr><th>Name</th><th>Type</th><th>Shape</th></tr></thead>
      <tbody>
        {specs.map((s) => <tr key={s.name}><td><code>{s.name}</code></td><td>{s.dtype}</td><td>{s.shape ? `[${s.shape.map((d) => (d < 0 ? '-1' : d)).join(', ')}]` : '–'}</td></tr>)}
      </tbody>
    </table>
  );
}

/** The example request, or why none is shown (a signature too large to build one from). */
function ExampleBody({ example }: { example: ExampleRequest }) {
  return 'body' in example ? <pre>{prettyJson(example.body)}</pre> : <p class="meta">{example.tooLarge}</p>;
}
