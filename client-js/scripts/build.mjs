// Bundles src/index.js for browsers: dist/lockstep.js (ESM, readable) and
// dist/lockstep.min.js (minified), each with a source map.
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const common = {
  entryPoints: [join(root, 'src', 'index.js')],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['chrome97', 'firefox114', 'safari16.4'],
  sourcemap: true,
  legalComments: 'none',
  logLevel: 'warning',
};
await build({ ...common, outfile: join(root, 'dist', 'lockstep.js') });
await build({ ...common, outfile: join(root, 'dist', 'lockstep.min.js'), minify: true });
