/**
 * Builds the web console into ui/dist: index.html plus hashed files under assets/, which is all
 * `ferry server` serves (src/console). No public/ folder, so nothing lands outside assets/.
 */
import preact from '@preact/preset-vite';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  publicDir: false,
  plugins: [preact({ devtoolsInProd: false, prefreshEnabled: false })],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    target: 'es2022',
    // The strict CSP allows no inline script, and data: URLs only for images.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: true,
  },
  server: {
    // `npx vite ui` for development: the API calls go to a running `ferry server`.
    proxy: { '/api': 'http://127.0.0.1:8080', '/serving-endpoints': 'http://127.0.0.1:8080' },
  },
});
