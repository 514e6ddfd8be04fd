/** The console's pages, addressed by the URL hash (`#/endpoints/iris`), so reload and back work. */

export type Page =
  | { page: 'models' }
  | { page: 'model'; name: string }
  | { page: 'endpoints' }
  | { page: 'endpoint'; name: string };

/** The page a hash names; anything unknown is the models list. `#/endpoints/a%2Fb` → endpoint "a/b". */
export function parseRoute(hash: string): Page {
  const parts = hash.replace(/^#\/?/, '').split('/').filter((p) => p !== '').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  const [first, name] = parts;
  if (first === 'endpoints') return name === undefined ? { page: 'endpoints' } : { page: 'endpoint', name };
  if (first === 'models' && name !== undefined) return { page: 'model', name };
  return { page: 'models' };
}

/** The hash of a page; inverse of parseRoute. */
export function href(p: Page): string {
  switch (p.page) {
    case 'models': return '#/models';
    case 'endpoints': return '#/endpoints';
    case 'model': return `#/models/${encodeURIComponent(p.name)}`;
    case 'endpoint': return `#/endpoints/${encodeURIComponent(p.name)}`;
  }
}
