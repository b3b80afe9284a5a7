#!/usr/bin/env bash
# gpu-check.sh [BIN_DIR]: camview's checks on a machine with an NVIDIA GPU, in one run, with
# nothing but this repository: the parity tests (logits and CAMs on the GPU against the golden
# reference), `bench` at batch 1 and 64, `eval` and `classify` throughput runs, and PyTorch eager on the
# same weights when torch is installed; then one table.
#
# BIN_DIR holds `camview` and `camview-tests` built elsewhere with CUDA (see below); without
# it, both are built here (needs Rust and a CUDA toolkit: scripts/cuda-toolkit.sh). To
# prepare them on a machine without a GPU:
#   scripts/cuda-toolkit.sh ~/cuda && . ~/cuda/env.sh
#   cargo build --release --locked --features cuda
#   cargo test --release --locked --features cuda --no-run --test camview   # prints the binary
#   mkdir -p gpu-bin && cp target/release/camview gpu-bin/ && cp <that binary> gpu-bin/camview-tests
# The GPU machine also needs models/resnet50.safetensors (it cannot download) and, at run
# time, the toolkit's libraries: LD_LIBRARY_PATH from env.sh, or CUDA_LIB=DIR.
#
# GPU_CHECK_DEVICE=cpu runs the same steps on the CPU (a dry run of this script).
set -euo pipefail
cd "$(dirname "$0")/.."
device=${GPU_CHECK_DEVICE:-cuda}
bin=${1:-}
weights=${CAMVIEW_WEIGHTS:-models/resnet50.safetensors}
[ -f "$weights" ] || { echo "gpu-check: no weights at $weights (carry models/ along)" >&2; exit 2; }
export CAMVIEW_WEIGHTS=$PWD/$weights
[ -n "${CUDA_LIB:-}" ] && export LD_LIBRARY_PATH="$CUDA_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

features=()
[ "$device" = cpu ] || features=(--features cuda)
if [ -z "$bin" ]; then
    bin=$out/bin && mkdir -p "$bin"
    cargo build --release --locked "${features[@]}" >&2
    cp target/release/camview "$bin/"
    tests=$(cargo test --release --locked "${features[@]}" --no-run --test camview 2>&1 |
        grep -o 'target/release/deps/camview-[0-9a-f]*' | head -1)
    cp "$tests" "$bin/camview-tests"
fi
camview=$bin/camview

echo "== parity (golden reference: logits within 1e-4, CAMs within 1e-4 of their maximum)"
# The GPU test is #[ignore]d (a plain `cargo test` has no GPU): run by name with --ignored.
if [ "$device" = cpu ]; then parity=golden::logits_and_cams_match_reference_for_every_photo_and_mode; ignored=()
else parity=golden::the_gpu_matches_reference_too; ignored=(--ignored); fi
parity_log=$out/parity.log
# A name that matches nothing runs no test and exits 0: ask for the one test passed.
if "$bin/camview-tests" --exact "$parity" "${ignored[@]}" --nocapture >"$parity_log" 2>&1 &&
    grep -q "test result: ok. 1 passed" "$parity_log"; then
    grep -q "skipping" "$parity_log" && parity_result="SKIPPED: $(grep -o 'skipping.*' "$parity_log" | head -1)" || parity_result=passed
else
    parity_result=FAILED
fi
tail -5 "$parity_log"

field() { grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }
bench() {
    "$camview" bench --device "$device" --batch "$1" --iters "$2" 2>&1 | tail -1
}
echo "== camview bench"
b1=$(bench 1 50); echo "$b1"
b64=$(bench 64 10); echo "$b64"
cam_b1_ms=$(echo "$b1" | field median_ms)
cam_b64_ms=$(echo "$b64" | field median_ms)

echo "== camview eval throughput (640 photos at 224 x 224)"
data=$out/eval
for class in n02124075 n07920052 n03240683 n04228054; do mkdir -p "$data/$class"; done
link() { ln "$1" "$2" 2>/dev/null || cp "$1" "$2"; }
for i in $(seq 160); do
    link images/chelsea.png "$data/n02124075/$i.png"
    link images/coffee.png "$data/n07920052/$i.png"
    link images/rocket.jpg "$data/n03240683/$i.jpg"
    link images/astronaut.png "$data/n04228054/$i.png"
done
"$camview" eval "$data" --device "$device" --resize squash --no-store >"$out/eval.txt" 2>"$out/eval.err" || true
eval_line=$(grep "images/s" "$out/eval.err" | tail -1)
echo "$eval_line"
eval_rate=$(echo "$eval_line" | grep -o '[0-9.]* images/s' | cut -d' ' -f1)

echo "== camview classify throughput (the same 640 photos)"
start=$(date +%s.%N)
"$camview" classify "$data" --device "$device" --resize squash >"$out/classify.txt" 2>"$out/classify.err" || true
end=$(date +%s.%N)
classified=$(grep -c "input 224×224" "$out/classify.txt" || true)
classify_rate=$(awk -v n="$classified" -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", n / (e - s) }')
echo "$classified photos classified, $classify_rate images/s (model load included)"

torch_b1=-; torch_b64=-
if python3 -c "import torch, safetensors" 2>/dev/null; then
    echo "== PyTorch eager (f32, no TF32) on the same weights"
    read -r torch_b1 torch_b64 < <(python3 - "$CAMVIEW_WEIGHTS" "$device" <<'PY'
import sys
import numpy as np
sys.path.insert(0, "scripts")
from bench_peers import load, torch_model, time_python
S, v1 = load(sys.argv[1])
run = torch_model(S, v1, 1, sys.argv[2])
rng = np.random.default_rng(0)
t1, _ = time_python(run, rng.standard_normal((1, 3, 224, 224), dtype=np.float32), 50, warmup=10)
t64, _ = time_python(run, rng.standard_normal((64, 3, 224, 224), dtype=np.float32), 10, warmup=3)
print(f"{t1:.2f} {t64:.2f}")
PY
    )
else
    echo "== PyTorch: not installed here (pip install torch safetensors for the comparison)"
fi

rate() { awk -v ms="$1" -v n="$2" 'BEGIN { if (ms == "-" || ms == "") print "-"; else printf "%.0f", n * 1000 / ms }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "") print "-"; else printf "%.2f", a / b }'; }
echo
echo "| $device | camview | PyTorch eager | camview / PyTorch |"
echo "|---|---|---|---|"
echo "| parity with the golden reference | $parity_result | | |"
echo "| batch 1 latency (ms) | $cam_b1_ms | $torch_b1 | $(ratio "$cam_b1_ms" "$torch_b1") |"
echo "| batch 64 (ms a batch) | $cam_b64_ms | $torch_b64 | $(ratio "$cam_b64_ms" "$torch_b64") |"
echo "| batch 64 throughput (images/s) | $(rate "$cam_b64_ms" 64) | $(rate "$torch_b64" 64) | |"
echo "| eval, 640 photos (images/s) | ${eval_rate:--} | | |"
echo "| classify, 640 photos (images/s, load included) | ${classify_rate:--} | | |"
