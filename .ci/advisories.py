#!/usr/bin/env python3
"""A cargo-audit style check that works offline: every package of the
Cargo.lock files against a local copy of the RustSec advisory database
(https://github.com/rustsec/advisory-db), and every package's licence from
the registry sources cargo has already downloaded.

    python3 .ci/advisories.py --db /path/to/advisory-db [Cargo.lock ...]

Prints the advisories that apply (vulnerabilities, and informational ones
such as "unmaintained"), then the licences in use; exits 1 if a
vulnerability (not an informational advisory) applies, unless its id is in
--allow.
"""

import argparse
import glob
import os
import re
import sys
import tomllib


def packages(lock):
    with open(lock, "rb") as f:
        data = tomllib.load(f)
    return [(p["name"], p["version"], p.get("source", "")) for p in data.get("package", [])]


def parse_version(v):
    core = re.split(r"[-+]", v.strip())[0]
    parts = [int(x) for x in core.split(".") if x.isdigit()]
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts[:3])


def caret_upper(v):
    major, minor, patch = v
    if major > 0:
        return (major + 1, 0, 0)
    if minor > 0:
        return (0, minor + 1, 0)
    return (0, 0, patch + 1)


def matches(version, req):
    """Whether `version` satisfies a semver requirement such as ">= 1.2.3, < 2"
    or "^0.4" (the forms RustSec uses)."""
    v = parse_version(version)
    for part in req.split(","):
        part = part.strip()
        m = re.match(r"^(>=|<=|>|<|=|\^|~)?\s*([0-9][0-9A-Za-z.+-]*)$", part)
        if not m:
            raise ValueError(f"requirement {req!r}")
        op, bound = m.group(1) or "^", parse_version(m.group(2))
        ok = {
            ">=": v >= bound,
            "<=": v <= bound,
            ">": v > bound,
            "<": v < bound,
            "=": v == bound,
            "^": bound <= v < caret_upper(bound),
            "~": bound <= v < (bound[0], bound[1] + 1, 0),
        }[op]
        if not ok:
            return False
    return True


def advisory(path):
    text = open(path, encoding="utf-8").read()
    m = re.search(r"```toml\n(.*?)```", text, re.S)
    meta = tomllib.loads(m.group(1))
    title = next((l[2:].strip() for l in text[m.end():].splitlines() if l.startswith("# ")), "")
    return meta, title


def affected(version, meta):
    versions = meta.get("versions", {})
    for req in versions.get("patched", []) + versions.get("unaffected", []):
        if matches(version, req):
            return False
    return True


def licence(name, version):
    pattern = os.path.expanduser(f"~/.cargo/registry/src/*/{name}-{version}/Cargo.toml")
    for path in glob.glob(pattern):
        with open(path, "rb") as f:
            pkg = tomllib.load(f).get("package", {})
        lic = pkg.get("license") or (f"file: {pkg['license-file']}" if "license-file" in pkg else None)
        if isinstance(lic, dict):
            lic = None
        return lic or "unknown"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--allow", action="append", default=[])
    ap.add_argument("locks", nargs="*", default=["Cargo.lock"])
    args = ap.parse_args()
    pkgs = sorted({p for lock in args.locks for p in packages(lock)})
    registry = [(n, v) for n, v, s in pkgs if s.startswith("registry+")]
    found = []
    for name, version in registry:
        for path in sorted(glob.glob(os.path.join(args.db, "crates", name, "*.md"))):
            meta, title = advisory(path)
            adv = meta["advisory"]
            if adv.get("withdrawn") or not affected(version, meta):
                continue
            found.append((adv["id"], name, version, adv.get("informational", "vulnerability"), title))
    print(f"{len(registry)} registry packages in {', '.join(args.locks)}; advisory database: {args.db}")
    for f in found:
        print("  %s %s %s (%s): %s" % f)
    print(f"{len(found)} advisories apply")
    licences = {}
    for name, version in registry:
        licences.setdefault(licence(name, version) or "not downloaded", []).append(f"{name} {version}")
    print("licences:")
    for lic, names in sorted(licences.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(names):4}  {lic}" + ("" if len(names) > 3 else f"  ({', '.join(names)})"))
    bad = [f for f in found if f[3] == "vulnerability" and f[0] not in args.allow]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
