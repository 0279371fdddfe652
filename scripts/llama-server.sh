#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` for CPU, the baseline `make bench-worker` compares the
# worker with, and prints its path. llama.cpp's source comes from PyPI: the source
# distribution of llama-cpp-python (pinned below, checksum verified) carries it under
# vendor/llama.cpp. Needs cmake and a C++ compiler (Debian: cmake g++); installs cmake when
# missing. The build takes about ten minutes on two cores and is kept in .dev/llama.cpp.
#
#   scripts/llama-server.sh            # build if needed, print the binary's path
#   LLAMA_SERVER=/path/to/llama-server # use this binary instead (the bench reads it)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
URL=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$VERSION.tar.gz
ROOT=.dev/llama.cpp
BIN=$ROOT/build/bin/llama-server

if [[ -n "${LLAMA_SERVER:-}" ]]; then
    echo "$LLAMA_SERVER"
    exit 0
fi
if [[ -x $BIN ]]; then
    echo "$BIN"
    exit 0
fi

command -v cmake >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    (apt-get install -y -qq cmake >/dev/null 2>&1 ||
        (apt-get update -qq && apt-get install -y -qq cmake >/dev/null))
}

mkdir -p "$ROOT"
archive=$ROOT/llama_cpp_python-$VERSION.tar.gz
if ! echo "$SHA256  $archive" | sha256sum --check --status 2>/dev/null; then
    echo "downloading llama-cpp-python $VERSION (llama.cpp's source) from PyPI" >&2
    curl -fsSL -o "$archive.part" "$URL"
    echo "$SHA256  $archive.part" | sha256sum --check --status || {
        echo "error: $URL does not have the expected checksum" >&2
        exit 1
    }
    mv "$archive.part" "$archive"
fi
rm -rf "$ROOT/src"
mkdir -p "$ROOT/src"
tar xzf "$archive" -C "$ROOT/src" --strip-components=3 "llama_cpp_python-$VERSION/vendor/llama.cpp"

echo "building llama-server (CPU, native instructions) in $ROOT/build" >&2
cmake -S "$ROOT/src" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON >"$ROOT/cmake.log" 2>&1 || {
    tail -20 "$ROOT/cmake.log" >&2
    exit 1
}
cmake --build "$ROOT/build" --target llama-server -j "$(nproc)" >"$ROOT/build.log" 2>&1 || {
    tail -30 "$ROOT/build.log" >&2
    exit 1
}
echo "$BIN"
