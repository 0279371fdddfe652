#!/usr/bin/env bash
# Dependencies stay lean: no crate declares a dependency it does not use (cargo-machete, installed
# once into ~/.cargo/bin and reused), and every entry of the workspace's dependency table is used
# by some crate.
set -euo pipefail
cd "$(dirname "$0")/.."

MACHETE_VERSION=0.9.2
if ! cargo machete --version 2>/dev/null | grep -q "$MACHETE_VERSION"; then
    cargo install cargo-machete --version "$MACHETE_VERSION" --locked --quiet
fi
cargo machete

python3 - <<'PY'
import pathlib, re, sys, tomllib

root = tomllib.loads(pathlib.Path("Cargo.toml").read_text())
declared = set(root["workspace"]["dependencies"])
used = set()
for manifest in list(pathlib.Path("crates").glob("*/Cargo.toml")) + [pathlib.Path("tests/Cargo.toml")]:
    crate = tomllib.loads(manifest.read_text())
    tables = [crate.get(k, {}) for k in ("dependencies", "dev-dependencies", "build-dependencies")]
    for table in tables:
        used.update(name for name, spec in table.items()
                    if isinstance(spec, dict) and spec.get("workspace"))
unused = sorted(declared - used)
if unused:
    sys.exit(f"Cargo.toml [workspace.dependencies] lists what no crate uses: {', '.join(unused)}")
print(f"workspace dependencies: all {len(declared)} used")
PY
