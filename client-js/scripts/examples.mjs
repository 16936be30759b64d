// Bundles the React example (examples/react.js, which imports react and
// react-dom from node_modules) for the browser: examples/dist/react.js.
// The other examples need no build.
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** @param {string} [outdir] */
export async function buildExamples(outdir = join(root, 'examples', 'dist')) {
  await build({
    entryPoints: [join(root, 'examples', 'react.js')],
    outdir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome97', 'firefox114', 'safari16.4'],
    define: { 'process.env.NODE_ENV': '"production"' },
    minify: true,
    sourcemap: true,
    legalComments: 'none',
    logLevel: 'warning',
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildExamples();
