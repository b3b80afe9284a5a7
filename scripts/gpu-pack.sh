#!/usr/bin/env bash
# gpu-pack.sh: on a machine without a GPU, builds camview with CUDA and packs what
# scripts/gpu-check.sh needs on a GPU machine that has no Rust and cannot download, into the
# git-ignored folder gpu-pack/ (carry it along with the repository):
#
#   gpu-pack/camview.xz             the CUDA binary, stripped and xz-compressed
#   gpu-pack/nodriver/libcuda.so.1  a stand-in for the driver library, only for the dry run on
#                                   a machine without a driver (GPU_CHECK_DEVICE=cpu)
#   gpu-pack/MANIFEST               what was built, from which commit, and the binary's sha256
#
# It prints the pack's size beside the repository's: what travels must stay under 64 MiB.
#
# Environment: CUDA_COMPUTE_CAP (default 90: H100 / H200), CUDA_TOOLKIT_DIR (where
# scripts/cuda-toolkit.sh installs CUDA 13.0 from PyPI; default ~/.cache/camview/cuda),
# CARGO_TARGET_DIR (default target/cuda, apart from the CPU build's).
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
toolkit=${CUDA_TOOLKIT_DIR:-$HOME/.cache/camview/cuda}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
pack=gpu-pack
limit=$((64 * 1024 * 1024))

# env.sh keeps the CUDA_COMPUTE_CAP it is written with.
scripts/cuda-toolkit.sh "$toolkit"
# shellcheck disable=SC1091
. "$toolkit/env.sh"
start=$(date +%s)
cargo build --release --locked --features cuda
built=$CARGO_TARGET_DIR/release/camview
echo "gpu-pack: built in $(($(date +%s) - start)) s (compute capability $CUDA_COMPUTE_CAP)" >&2

rm -rf "$pack"
mkdir -p "$pack/nodriver"
strip -o "$pack/camview" "$built"
sha=$(sha256sum "$pack/camview" | cut -d' ' -f1)
stripped=$(stat -c %s "$pack/camview")
xz -9e --threads=0 "$pack/camview"
cp "$toolkit/stubs/libcuda.so" "$pack/nodriver/libcuda.so.1"
{
    echo "camview $(git describe --always --dirty) built $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "features cuda; compute capability $CUDA_COMPUTE_CAP; $(nvcc --version | tail -1)"
    echo "sha256 $sha camview ($stripped bytes stripped)"
    echo "needs $(readelf -d "$built" | grep -o 'NEEDED.*\[.*\]' | grep -o '\[.*\]' | tr -d '[]' | tr '\n' ' ')"
} >"$pack/MANIFEST"
cat "$pack/MANIFEST"

# What travels: the tracked and untracked-but-not-ignored files, and the pack.
repo=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null || true) |
    awk '{ s += $1 } END { print s + 0 }')
packed=$(find "$pack" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "gpu-pack: camview $(mib "$(stat -c %s "$built")") built, $(mib "$stripped") stripped," \
    "$(mib "$(stat -c %s "$pack/camview.xz")") compressed"
echo "gpu-pack: $pack/ $(mib "$packed") + repository $(mib "$repo") = $(mib $((packed + repo)))" \
    "of the 64 MiB that may travel"
if [ $((packed + repo)) -gt "$limit" ]; then
    echo "gpu-pack: too big to travel" >&2
    exit 1
fi
