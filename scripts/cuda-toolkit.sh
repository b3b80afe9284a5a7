#!/usr/bin/env bash
# cuda-toolkit.sh DIR: installs a CUDA 13.0 (update 2) toolkit into DIR from PyPI's NVIDIA
# wheels — enough to build `cargo build --release --features cuda` on a machine without a
# GPU or a system CUDA — and writes DIR/env.sh to source before building:
#
#   scripts/cuda-toolkit.sh ~/.cache/camview/cuda && . ~/.cache/camview/cuda/env.sh
#   cargo build --release --features cuda
#
# The wheels hold nvcc, the headers, cudart, cuBLAS, cuRAND and NVRTC (1.2 GB unpacked).
# The driver library (libcuda.so) only comes with an NVIDIA driver, so DIR/stubs gets a
# link-time stand-in exporting every `cu*` function of cuda.h; the binary loads the real
# libcuda.so.1 when it starts. CUDA_COMPUTE_CAP (default 90: H100/H200) chooses the GPUs the
# kernels are built for: 80 A100, 86 RTX 30xx, 89 RTX 40xx / L4 / L40, 90 H100 / H200,
# 100 B200, 120 RTX 50xx.
set -euo pipefail

dir=${1:?usage: cuda-toolkit.sh DIR}
cap=${CUDA_COMPUTE_CAP:-90}
python=${PYTHON:-python3}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# One release's versions (CUDA 13.0 update 2), so the pieces agree with each other.
wheels=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-runtime==13.0.96
    nvidia-cublas==13.0.2.14
    nvidia-curand==10.4.0.35
    nvidia-cuda-nvrtc==13.0.88
)
if [ ! -x "$dir/site/nvidia/cu13/bin/nvcc" ]; then
    echo "cuda-toolkit: installing ${#wheels[@]} wheels into $dir/site" >&2
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$dir/site" "${wheels[@]}"
fi
root=$dir/site/nvidia/cu13
[ -x "$root/bin/nvcc" ] || { echo "cuda-toolkit: no nvcc in $root/bin" >&2; exit 1; }

# The linker looks for unversioned names; the wheels ship only the versioned files.
for lib in "$root"/lib/lib{cublas,cublasLt,cudart,nvrtc,curand}.so.*; do
    case $lib in *builtins*|*.alt.*) continue ;; esac
    base=${lib%%.so.*}.so
    [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
done
# Some build scripts look in lib64.
[ -e "$root/lib64" ] || ln -s lib "$root/lib64"

# The link-time stand-in for the driver's libcuda.so.
stubs=$dir/stubs
mkdir -p "$stubs"
if [ ! -e "$stubs/libcuda.so" ]; then
    # The declared names, and the versioned ones they are #defined to (cuMemAlloc_v2 …).
    {
        grep -oE 'CUDAAPI cu[A-Za-z0-9_]+' "$root/include/cuda.h" | sed 's/CUDAAPI //'
        grep -oE '#define cu[A-Za-z0-9_]+ +cu[A-Za-z0-9_]+' "$root/include/cuda.h" |
            awk '{ print $3 }'
    } | sort -u | sed 's/.*/int &(void) { return 999; }/' >"$stubs/cuda_stub.c"
    ${CC:-cc} -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/cuda_stub.c"
fi

# A CUDA build cannot start without libcuda.so.1. On a machine with no NVIDIA driver at
# all, LD_LIBRARY_PATH=DIR/nodriver lets it start and run on the CPU (the stand-in answers
# every call with an error). Never put it on the path where a driver is installed.
mkdir -p "$dir/nodriver"
ln -sf ../stubs/libcuda.so "$dir/nodriver/libcuda.so.1"

cat >"$dir/env.sh" <<EOF
# Written by camview's scripts/cuda-toolkit.sh: source before \`cargo build --features cuda\`.
export CUDA_ROOT="$root"
export CUDA_PATH="$root"
export CUDA_TOOLKIT_ROOT_DIR="$root"
export PATH="$root/bin:\$PATH"
export CUDA_COMPUTE_CAP=$cap
# cudarc's bindings for this toolkit's version (its build script cannot ask a driver here).
export CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH="$root/lib:$stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
# At run time: the toolkit's libraries (the driver's libcuda.so.1 comes from the system).
export LD_LIBRARY_PATH="$root/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
echo "cuda-toolkit: ready; now: . $dir/env.sh && cargo build --release --features cuda" >&2
