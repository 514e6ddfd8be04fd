/** The console's shell: sign-in, navigation, and the page the URL hash names. */
import { useEffect, useState } from 'preact/hooks';
import { api, session, setUnauthenticatedHandler, shown } from './api.js';
import { ErrorBox, Spinner } from './components.js';
import type { ShownError } from './lib/errors.js';
import type { Principal } from './lib/types.js';
import { href, parseRoute, type Page } from './lib/route.js';
import { EndpointPage } from './pages/endpoint.js';
import { EndpointsPage } from './pages/endpoints.js';
import { ModelPage, ModelsPage } from './pages/models.js';

export function App() {
  const [me, setMe] = useState<Principal | undefined>(undefined);
  const [checking, setChecking] = useState(session.token() !== null);
  const [notice, setNotice] = useState<ShownError | undefined>(undefined);
  const [route, setRoute] = useState<Page>(parseRoute(location.hash));

  useEffect(() => {
    const onHash = (): void => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', onHash);
    setUnauthenticatedHandler((e) => {
      session.signOut();
      setMe(undefined);
      setNotice({ ...e, message: `Signed out: ${e.message}` });
    });
    const token = session.token();
    if (token !== null) {
      api<Principal>('GET', '/api/2.0/me').then(setMe, (err: unknown) => {
        session.signOut();
        setNotice(shown(err));
      }).finally(() => setChecking(false));
    }
    return () => removeEventListener('hashchange', onHash);
  }, []);

  if (checking) return <main class="signin"><Spinner label="Checking your token…" /></main>;
  if (me === undefined) return <SignIn notice={notice} onSignedIn={(m) => { setNotice(undefined); setMe(m); }} />;

  const signOut = (): void => {
    session.signOut();
    setMe(undefined);
  };
  const current = route.page === 'model' ? 'models' : route.page === 'endpoint' ? 'endpoints' : route.page;
  return (
    <>
      <header class="top">
        <a class="brand" href="#/models">Ferry</a>
        <nav aria-label="Main">
          <a href={href({ page: 'models' })} aria-current={current === 'models' ? 'page' : undefined}>Models</a>
          <a href={href({ page: 'endpoints' })} aria-current={current === 'endpoints' ? 'page' : undefined}>Endpoints</a>
        </nav>
        <span class="who">Signed in as <strong>{me.name}</strong>{me.admin ? ' (admin)' : ''}</span>
        <button type="button" class="secondary" onClick={signOut}>Sign out</button>
      </header>
      <main>
        {route.page === 'models' && <ModelsPage />}
        {route.page === 'model' && <ModelPage key={route.name} name={route.name} />}
        {route.page === 'endpoints' && <EndpointsPage />}
        {route.page === 'endpoint' && <EndpointPage key={route.name} name={route.name} />}
      </main>
    </>
  );
}

function SignIn({ notice, onSignedIn }: { notice: ShownError | undefined; onSignedIn: (me: Principal) => void }) {
  const [token, setToken] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ShownError | undefined>(undefined);
  const submit = (ev: Event): void => {
    ev.preventDefault();
    const t = token.trim();
    if (t === '') return setError({ status: 0, code: 'INVALID_PARAMETER_VALUE', message: 'Enter a token.' });
    setBusy(true);
    setError(undefined);
    api<Principal>('GET', '/api/2.0/me', undefined, t).then((me) => {
      session.signIn(t);
      onSignedIn(me);
    }, (err: unknown) => setError(shown(err))).finally(() => setBusy(false));
  };
  return (
    <main class="signin">
      <form class="panel" onSubmit={submit} aria-label="Sign in">
        <h1>Ferry</h1>
        <p>Sign in with a Ferry token (the admin token is in <code>&lt;data-dir&gt;/admin-token</code>; others come from <code>ferry tokens create</code>).</p>
        <ErrorBox error={error ?? notice} />
        <label for="token">Token</label>
        <input id="token" name="token" type="password" autocomplete="current-password" value={token}
          onInput={(e) => setToken(e.currentTarget.value)} autoFocus />
        <button type="submit" disabled={busy}>{busy ? 'Signing in…' : 'Sign in'}</button>
      </form>
    </main>
  );
}
