#!/usr/bin/env bash
# Builds blaze-worker with candle's CUDA backend (`--features cuda`) on a Linux x86-64 machine
# that has no CUDA install and needs no GPU: the CUDA 13.0 toolkit comes from NVIDIA's PyPI
# wheels, unpacked under .cuda/ (git-ignored). Running it again reuses what is there.
#
#   scripts/build-cuda.sh                 # toolkit, then cargo build (long: ~40 min on 2 cores)
#   scripts/build-cuda.sh --toolkit-only  # toolkit and its checks only
#   CUDA_COMPUTE_CAP=89 scripts/build-cuda.sh
#
# CUDA_COMPUTE_CAP is the GPU generation candle's kernels are compiled for: 90 (default,
# H100/H200), 89 (L4/L40S), 80 (A100). Build one binary per generation: candle's quantized
# kernels are compiled ahead to machine code for that capability alone.
#
# Needs: python3 with pip, a C and C++ compiler (nvcc uses g++ for host code), cargo.
#
# How the build links, as read from candle 0.11 and cudarc 0.19 (the versions in Cargo.lock):
# candle-core turns on cudarc's `dynamic-linking` feature, not `dynamic-loading`, so nothing
# is dlopen'ed: the binary is linked with -lcuda -lnvrtc -lcurand -lcublas -lcublasLt (cudarc's
# build script, which finds them under CUDA_ROOT/CUDA_PATH/CUDA_HOME in lib, lib/stubs, lib64,
# lib64/stubs) and -lcudart (candle-kernels, for the kernels it compiles with nvcc into
# libmoe.a). cudarc's build script also runs `nvcc --version` to pick its CUDA bindings, and
# candle-kernels' build script (cudaforge) runs nvcc from PATH for CUDA_COMPUTE_CAP.
#
# libcuda is the driver: it comes from the GPU node at run time and is not in any wheel. The
# link gets a stub, lib/stubs/libcuda.so, built here with the C compiler: it exports every
# driver function cudarc can call (read from cudarc's own source, so it follows Cargo.lock),
# each returning CUDA_ERROR_STUB_LIBRARY, with the soname libcuda.so.1, so the binary asks for
# libcuda.so.1 and gets the node's driver. The stub is used even where a driver is installed:
# a driver's libcuda exports only the functions of its own CUDA version, so linking against it
# would make the build depend on the machine. lib/stubs is never on LD_LIBRARY_PATH, so the
# stub cannot shadow a real driver at run time. The binary is linked with full RELRO (every
# symbol bound at start), so the node's driver must be one for CUDA 13.0 or later (R580+).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CUDA_DIR=$ROOT/.cuda
TOOLKIT=$CUDA_DIR/toolkit
COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
TOOLKIT_ONLY=0

# CUDA 13.0 Update 2 (the versions PyPI's cuda-toolkit==13.0.2 pins): compiler, headers,
# and the libraries the worker links.
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.0.35
  nvidia-cuda-cccl==13.0.85
)

die() { echo "build-cuda: $*" >&2; exit 1; }
say() { echo "build-cuda: $*" >&2; }

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}

for arg in "$@"; do
  case $arg in
    --toolkit-only) TOOLKIT_ONLY=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$arg' (known: --toolkit-only, --help)" ;;
  esac
done

check_prerequisites() {
  [[ $(uname -s)/$(uname -m) == Linux/x86_64 ]] ||
    die "the toolkit wheels are for Linux x86-64; this is $(uname -s) $(uname -m)"
  [[ $COMPUTE_CAP =~ ^[0-9]{2,3}[af]?$ ]] ||
    die "CUDA_COMPUTE_CAP='$COMPUTE_CAP' is not a compute capability such as 90, 89 or 80"
  command -v python3 >/dev/null || die "python3 is missing (apt-get install python3)"
  python3 -m pip --version >/dev/null 2>&1 ||
    die "pip for python3 is missing (apt-get install python3-pip)"
  command -v cc >/dev/null || die "a C compiler 'cc' is missing, for the libcuda stub (apt-get install gcc)"
  command -v g++ >/dev/null || die "g++ is missing; nvcc compiles host code with it (apt-get install g++)"
  command -v cargo >/dev/null || die "cargo is missing (install Rust with rustup)"
}

# Downloads the wheels into .cuda/wheels and installs them, all in one pip call (pip's
# --target skips a top-level folder that is already there, and every wheel fills nvidia/cu13),
# into .cuda/site; skipped when .cuda/site holds this exact list already.
install_wheels() {
  local stamp=$CUDA_DIR/site/wheels.txt
  if [[ -f $stamp ]] && [[ $(cat "$stamp") == "$(printf '%s\n' "${WHEELS[@]}")" ]]; then
    say "wheels already installed in .cuda/site"
    return
  fi
  mkdir -p "$CUDA_DIR/wheels"
  say "downloading ${#WHEELS[@]} wheels into .cuda/wheels (about 650 MB)"
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip download --quiet --no-deps \
    --only-binary=:all: -d "$CUDA_DIR/wheels" "${WHEELS[@]}" ||
    die "pip could not download the CUDA wheels (is PyPI reachable?)"
  rm -rf "$CUDA_DIR/site.tmp"
  say "installing them into .cuda/site"
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --no-deps --no-index \
    --find-links "$CUDA_DIR/wheels" --target "$CUDA_DIR/site.tmp" "${WHEELS[@]}" ||
    die "pip could not install the CUDA wheels from .cuda/wheels"
  printf '%s\n' "${WHEELS[@]}" >"$CUDA_DIR/site.tmp/wheels.txt"
  rm -rf "$CUDA_DIR/site"
  mv "$CUDA_DIR/site.tmp" "$CUDA_DIR/site"
}

# Gives the wheels' nvidia/cu13 the shape of a toolkit install: .cuda/toolkit/{bin,include,
# lib,lib64}, with the unversioned library names the linker looks for.
assemble_toolkit() {
  local cu13=$CUDA_DIR/site/nvidia/cu13
  [[ -x $cu13/bin/nvcc ]] || die "no nvcc in $cu13/bin after installing the wheels"
  ln -sfn site/nvidia/cu13 "$TOOLKIT"
  ln -sfn lib "$TOOLKIT/lib64"
  local lib name
  for lib in "$TOOLKIT"/lib/lib*.so.*; do
    name=$(basename "$lib")
    [[ $name == *.alt.* ]] && continue
    ln -sfn "$name" "$TOOLKIT/lib/${name%%.so.*}.so"
  done
  local need
  for need in bin/nvcc nvvm/bin/cicc include/cuda.h include/cuda_runtime.h include/cccl \
    lib/libcudart.so lib/libcublas.so lib/libcublasLt.so lib/libcurand.so lib/libnvrtc.so; do
    [[ -e $TOOLKIT/$need ]] || die "the assembled toolkit lacks $need"
  done
}

# The driver functions cudarc declares (the `extern "C"` block of each binding in its
# driver/sys/mod.rs), from the cudarc version Cargo.lock pins.
cudarc_driver_symbols() {
  local version srcs
  version=$(awk '/^name = "cudarc"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
  [[ -n $version ]] || die "Cargo.lock has no cudarc; candle's CUDA backend no longer uses it?"
  cargo fetch --locked --target x86_64-unknown-linux-gnu --quiet ||
    die "cargo fetch failed (is crates.io reachable?)"
  srcs=("${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$version"/src/driver/sys/mod.rs)
  [[ -f ${srcs[0]} ]] || die "cudarc $version's source is not in the cargo registry after cargo fetch"
  grep -oE '^[[:space:]]+fn cu[A-Za-z0-9_]+\(' "${srcs[0]}" | sed -E 's/^[[:space:]]+fn //; s/\($//' |
    sort -u
}

build_libcuda_stub() {
  local stubs=$TOOLKIT/lib/stubs c
  mkdir -p "$stubs"
  c=$(
    echo "/* Link-time stand-in for the driver's libcuda.so.1, made by scripts/build-cuda.sh. */"
    echo "#define STUB(f) int f(void) { return 34; /* CUDA_ERROR_STUB_LIBRARY */ }"
    cudarc_driver_symbols | sed 's/.*/STUB(&)/'
  )
  if [[ -f $stubs/libcuda.so.1 && -f $stubs/libcuda.c && $(cat "$stubs/libcuda.c") == "$c" ]]; then
    say "libcuda stub up to date"
  else
    printf '%s\n' "$c" >"$stubs/libcuda.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so.1" "$stubs/libcuda.c" ||
      die "the C compiler could not build the libcuda stub"
    say "built the libcuda stub: $(grep -c '^STUB' "$stubs/libcuda.c") driver functions"
  fi
  ln -sfn libcuda.so.1 "$stubs/libcuda.so"
  if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
    say "this machine has a driver (libcuda.so.1): the built worker uses it at run time"
  fi
}

export_environment() {
  export CUDA_ROOT=$TOOLKIT CUDA_PATH=$TOOLKIT CUDA_HOME=$TOOLKIT CUDA_TOOLKIT_ROOT_DIR=$TOOLKIT
  export PATH=$TOOLKIT/bin:$PATH
  # The toolkit's libraries for the link (libcublas's own dependencies) and for running; not
  # lib/stubs.
  export LD_LIBRARY_PATH=$TOOLKIT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export CUDA_COMPUTE_CAP=$COMPUTE_CAP
}

# Fails in seconds what would otherwise fail deep in the cargo build: nvcc runs, knows the
# requested GPU, and compiles a kernel using the headers candle's kernels use.
check_nvcc() {
  local version probe=$CUDA_DIR/probe
  version=$(nvcc --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
  [[ -n $version ]] || die "nvcc --version does not run: $(nvcc --version 2>&1 | tail -1)"
  nvcc --list-gpu-code | grep -qx "sm_${COMPUTE_CAP%[af]}" ||
    die "CUDA $version's nvcc cannot compile for CUDA_COMPUTE_CAP=$COMPUTE_CAP; it knows: $(nvcc --list-gpu-code | tr '\n' ' ')"
  mkdir -p "$probe"
  cat >"$probe/probe.cu" <<'EOF'
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda/std/limits>
extern "C" __global__ void probe(const __half *x, __nv_bfloat16 *y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16(__half2float(x[i]) * cuda::std::numeric_limits<float>::epsilon());
}
EOF
  nvcc -std=c++17 -O3 -arch="sm_${COMPUTE_CAP}" -cubin -o "$probe/probe.cubin" "$probe/probe.cu" ||
    die "nvcc could not compile a test kernel for sm_${COMPUTE_CAP} (see above)"
  say "nvcc $version compiles for sm_${COMPUTE_CAP}"
}

check_prerequisites
mkdir -p "$CUDA_DIR"
install_wheels
assemble_toolkit
build_libcuda_stub
export_environment
check_nvcc

if ((TOOLKIT_ONLY)); then
  say "toolkit ready: $TOOLKIT ($(du -sh "$CUDA_DIR/site" | cut -f1))"
  exit 0
fi

say "cargo build --release --features cuda for CUDA_COMPUTE_CAP=$COMPUTE_CAP (long)"
cargo build --release --locked -p blaze-worker --bin blaze-worker --features cuda
BIN=$ROOT/target/release/blaze-worker
readelf -d "$BIN" | grep -q 'NEEDED.*\[libcuda\.so\.1\]' ||
  die "$BIN does not ask for libcuda.so.1; it would not find the node's driver"
say "built $BIN (CUDA 13.0, sm_${COMPUTE_CAP})"
say "run it where it can find the CUDA libraries, e.g. LD_LIBRARY_PATH=$TOOLKIT/lib"
