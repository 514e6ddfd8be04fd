/** Endpoints: every endpoint the caller can see, with its state, served entities and traffic. */
import { api } from '../api.js';
import { Badge, Empty, ErrorBox, Section, Spinner, usePoll } from '../components.js';
import { endpointStatus, formatAgo } from '../lib/format.js';
import { href } from '../lib/route.js';
import type { Endpoint } from '../lib/types.js';

export function EndpointsPage() {
  const eps = usePoll(() => api<{ endpoints?: Endpoint[] }>('GET', '/api/2.0/serving-endpoints'), 3000, 'endpoints');
  const list = eps.data?.endpoints ?? [];
  return (
    <>
      <h1>Endpoints</h1>
      <Section title="Serving endpoints">
        <ErrorBox error={eps.error} />
        {eps.loading && <Spinner label="Loading endpoints…" />}
        {!eps.loading && list.length === 0 && <Empty>No endpoints yet: open a model and press Serve on a version.</Empty>}
        {list.length > 0 && (
          <table>
            <thead><tr><th>Name</th><th>State</th><th>Served entities</th><th>Traffic</th><th>Updated</th></tr></thead>
            <tbody>
              {list.map((e) => {
                const c = e.config ?? e.pending_config;
                return (
                  <tr key={e.name}>
                    <td><a href={href({ page: 'endpoint', name: e.name })}>{e.name}</a></td>
                    <td><Badge state={endpointStatus(e)} /></td>
                    <td>
                      {(c?.served_entities ?? []).map((s) => (
                        <div key={s.name}>
                          {s.model_family === undefined
                            ? <><a href={href({ page: 'model', name: s.entity_name ?? '' })}>{s.entity_name}</a> v{s.entity_version}</>
                            : <>family <code>{s.model_family.name_prefix ?? ''}*{s.model_family.tag === undefined ? '' : ` tag ${s.model_family.tag}`}</code></>}{' '}
                          <span class="meta">({s.state.replicas.ready}/{s.state.replicas.desired} ready)</span>
                        </div>
                      ))}
                    </td>
                    <td>{(c?.traffic_config.routes ?? []).map((r) => <div key={r.served_entity_name}>{r.served_entity_name}: {r.traffic_percentage}%</div>)}</td>
                    <td>{formatAgo(e.last_updated_timestamp, Date.now())}</td>
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
