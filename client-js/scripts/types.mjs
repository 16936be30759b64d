// The package's type declarations, public API only.
//
//   node scripts/types.mjs                  tsc → types/, then drops the .d.ts of internal modules
//   node scripts/types.mjs --check          the same into a temp dir; fails if a .d.ts names anything
//                                           not in scripts/public-api.json, or lacks a name listed
//                                           there (the public API is a contract: extend, never rename)
//   node scripts/types.mjs --check --write  rewrites scripts/public-api.json (after a deliberate change)
//
// Internal modules (connection, commands, element, …) are not reachable from
// the package's entry points (package.json `exports`); their declarations
// are not shipped. Classes keep their internals in private `#fields`, which a
// .d.ts shows only as `#private`.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** A check that failed (reported without a stack). */
class Failed extends Error {}

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const ALLOW = join(ROOT, 'scripts', 'public-api.json');
const args = new Set(process.argv.slice(2));
const check = args.has('--check');
const write = args.has('--write');

const out = check ? mkdtempSync(join(tmpdir(), 'lockstep-types-')) : join(ROOT, 'types');
try {
  if (!check) rmSync(out, { recursive: true, force: true });
  tsc(['-p', join(ROOT, 'tsconfig.json'), '--outDir', out]);
  const kept = prune(out);
  if (check) {
    verify(out, kept);
    const names = publicNames(out, kept);
    if (write) {
      writeFileSync(ALLOW, `${JSON.stringify(names, null, 2)}\n`);
      console.log(`wrote ${relative(ROOT, ALLOW)}: ${Object.values(names).flat().length} names in ${kept.length} files`);
    } else {
      compare(names, JSON.parse(readFileSync(ALLOW, 'utf8')));
    }
  }
} catch (e) {
  if (!(e instanceof Failed)) throw e;
  console.error(e.message);
  process.exitCode = 1;
} finally {
  if (check) rmSync(out, { recursive: true, force: true });
}

/** @param {string[]} argv */
function tsc(argv) {
  const bin = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [bin, ...argv], { cwd: ROOT, stdio: 'inherit' });
  if (r.status !== 0) fail(`tsc failed (status ${r.status})`);
}

/** Every .d.ts below `dir`, relative to it, with '/' separators. @param {string} dir */
function listDts(dir, sub = '') {
  /** @type {string[]} */
  const files = [];
  for (const e of readdirSync(join(dir, sub), { withFileTypes: true })) {
    const rel = sub ? `${sub}/${e.name}` : e.name;
    if (e.isDirectory()) files.push(...listDts(dir, rel));
    else if (e.name.endsWith('.d.ts')) files.push(rel);
  }
  return files;
}

/** @param {string} file absolute */
function parse(file) {
  return ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
}

/** The relative modules a .d.ts refers to (imports, re-exports, `import("…")` types), as .d.ts paths. @param {string} file absolute */
function references(file) {
  /** @type {Set<string>} */
  const specs = new Set();
  /** @param {ts.Node} n */
  const visit = (n) => {
    if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) specs.add(n.moduleSpecifier.text);
    if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument) && ts.isStringLiteral(n.argument.literal)) specs.add(n.argument.literal.text);
    ts.forEachChild(n, visit);
  };
  visit(parse(file));
  return [...specs].filter((s) => s.startsWith('.')).map((s) => resolve(dirname(file), s.replace(/\.js$/, '.d.ts')));
}

/** Keeps the .d.ts reachable from the package's entry points, deletes the rest. @param {string} dir */
function prune(dir) {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  const entries = Object.values(pkg.exports)
    .map((e) => (typeof e === 'object' && e.types ? e.types : null))
    .filter(Boolean)
    .map((t) => join(dir, relative('types', t)));
  /** @type {Set<string>} */
  const reach = new Set();
  const todo = [...entries];
  while (todo.length) {
    const f = /** @type {string} */ (todo.pop());
    if (reach.has(f)) continue;
    if (!existsSync(f)) throw new Error(`${relative(dir, f)} is referenced but was not generated`);
    reach.add(f);
    todo.push(...references(f));
  }
  for (const rel of listDts(dir)) if (!reach.has(join(dir, rel))) rmSync(join(dir, rel));
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory() && listDts(join(dir, e.name)).length === 0) rmSync(join(dir, e.name), { recursive: true, force: true });
  }
  return listDts(dir).sort();
}

/** The kept declarations compile on their own (nothing points at a dropped file). @param {string} dir @param {string[]} files */
function verify(dir, files) {
  const program = ts.createProgram(
    files.map((f) => join(dir, f)),
    { noEmit: true, strict: true, lib: ['lib.es2022.d.ts', 'lib.dom.d.ts', 'lib.dom.iterable.d.ts'], types: [], module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext },
  );
  const diags = ts.getPreEmitDiagnostics(program);
  if (diags.length) {
    console.error(ts.formatDiagnostics(diags, { getCanonicalFileName: (f) => f, getCurrentDirectory: () => dir, getNewLine: () => '\n' }));
    fail('the public declarations do not compile on their own');
  }
}

/**
 * The names each kept .d.ts declares: its exports, the public members of its
 * classes (`Class.member`) and the properties of its object types (`Type.prop`).
 * @param {string} dir @param {string[]} files
 * @returns {Record<string, string[]>}
 */
function publicNames(dir, files) {
  /** @type {Record<string, string[]>} */
  const all = {};
  for (const rel of files) {
    /** @type {Set<string>} */
    const names = new Set();
    /** @param {string} owner @param {ts.NodeArray<ts.TypeElement | ts.ClassElement>} members */
    const addMembers = (owner, members) => {
      for (const m of members) {
        if (ts.isConstructorDeclaration(m)) names.add(`${owner}.constructor`);
        else if (m.name && !ts.isPrivateIdentifier(m.name)) names.add(`${owner}.${m.name.getText()}`);
      }
    };
    /** @param {string} owner @param {ts.TypeNode | undefined} t */
    const addType = (owner, t) => {
      if (!t) return;
      if (ts.isTypeLiteralNode(t)) addMembers(owner, t.members);
      else if (ts.isIntersectionTypeNode(t) || ts.isUnionTypeNode(t)) for (const x of t.types) addType(owner, x);
      else if (ts.isParenthesizedTypeNode(t)) addType(owner, t.type);
    };
    for (const st of parse(join(dir, rel)).statements) {
      if (ts.isExportDeclaration(st) && st.exportClause && ts.isNamedExports(st.exportClause)) {
        for (const e of st.exportClause.elements) names.add(e.name.text);
      } else if (ts.isClassDeclaration(st) && st.name) {
        names.add(st.name.text);
        addMembers(st.name.text, st.members);
      } else if (ts.isInterfaceDeclaration(st)) {
        names.add(st.name.text);
        addMembers(st.name.text, st.members);
      } else if (ts.isTypeAliasDeclaration(st)) {
        names.add(st.name.text);
        addType(st.name.text, st.type);
      } else if (ts.isFunctionDeclaration(st) && st.name) {
        names.add(st.name.text);
      } else if (ts.isVariableStatement(st)) {
        for (const d of st.declarationList.declarations) names.add(d.name.getText());
      } else if (ts.isEnumDeclaration(st) || ts.isModuleDeclaration(st)) {
        names.add(st.name.getText());
      }
    }
    all[rel] = [...names].sort();
  }
  return all;
}

/** @param {Record<string, string[]>} got @param {Record<string, string[]>} allowed */
function compare(got, allowed) {
  /** @type {string[]} */
  const problems = [];
  for (const [file, names] of Object.entries(got)) {
    const ok = new Set(allowed[file] ?? []);
    if (!allowed[file]) problems.push(`types/${file}: a declaration file that is not part of the public API`);
    const extra = names.filter((n) => !ok.has(n));
    if (extra.length) problems.push(`types/${file} declares names not in the public API (internals? use #private fields or an internal module): ${extra.join(', ')}`);
  }
  for (const [file, names] of Object.entries(allowed)) {
    const have = new Set(got[file] ?? []);
    const missing = names.filter((n) => !have.has(n));
    if (missing.length) problems.push(`types/${file} lost public names (the public API is extended, never renamed): ${missing.join(', ')}`);
  }
  if (problems.length) fail(`${problems.join('\n')}\n(after a deliberate change of the public API: node scripts/types.mjs --check --write, and review the diff)`);
  console.log(`public API ok: ${Object.values(got).flat().length} names in ${Object.keys(got).length} declaration files`);
}

/** @param {string} msg @returns {never} */
function fail(msg) {
  throw new Failed(msg);
}
