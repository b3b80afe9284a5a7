#!/usr/bin/env bash
# gpu-check.sh: camview's checks on a machine with an NVIDIA GPU, in one run, with nothing but
# this repository and gpu-pack/ (made by scripts/gpu-pack.sh on a build machine). The GPU
# machine needs no Rust and no network: an NVIDIA driver (libcuda.so.1), CUDA 13's libcudart,
# libcublas, libcublasLt and libcurand (python3's nvidia-* packages or a system CUDA), and
# python3 with torch, torchvision, safetensors, numpy and Pillow. Steps:
#
#   1. unpack the CUDA binary; find the CUDA libraries, say where, check `ldd`;
#   2. make seeded random ResNet-50 weights with torchvision (scripts/gpu_check.py weights);
#   3. parity: camview's probabilities and CAMs on the GPU against PyTorch's on the same GPU
#      and weights (no TF32), for the photos of images/ in each resize mode, and against
#      camview on the CPU (scripts/gpu_check.py parity); then the same against PyTorch for a
#      ResNet-18 and a ResNeXt-50 (basic blocks, grouped convolutions), `squash` mode;
#   4. speed: `camview bench` at batch 1 and 64 beside PyTorch eager (f32, and channels-last
#      bf16 autocast), `eval` and `classify` throughput on a folder of copies of the photos,
#      Score-CAM's 2048 masked passes for one photo (`cam --method scorecam`);
#   5. one markdown table; with OUT set, the raw numbers and the table in $OUT.
#
# GPU_CHECK_DEVICE=cpu is the dry run: the same pack and steps on the CPU (PyTorch on the CPU
# as the reference). Without a driver it starts the binary with gpu-pack/nodriver's stand-in.
# Also: PYTHON (default python3), CUDA_LIB (a folder searched first for the CUDA libraries),
# GPU_CHECK_PHOTOS (copies timed by eval and classify: 640 on a GPU, 64 on the CPU).
set -euo pipefail
began=$(date +%s.%N)
cd "$(dirname "$0")/.."
device=${GPU_CHECK_DEVICE:-cuda}
case $device in cuda | cpu) ;; *)
    echo "gpu-check: GPU_CHECK_DEVICE is cuda or cpu, not '$device'" >&2
    exit 2
    ;;
esac
python=${PYTHON:-python3}
pack=gpu-pack
[ -f "$pack/camview.xz" ] || {
    echo "gpu-check: no $pack/camview.xz: run scripts/gpu-pack.sh on a build machine and carry $pack/ along" >&2
    exit 2
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
raw=${OUT:-$work/raw}
mkdir -p "$raw"
if [ "$device" = cuda ]; then
    photos=${GPU_CHECK_PHOTOS:-640} b1_iters=50 b64_iters=20 warmup=5
else
    photos=${GPU_CHECK_PHOTOS:-64} b1_iters=5 b64_iters=2 warmup=1
fi
elapsed() { awk -v s="$began" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }'; }
step() { echo && echo "== [$(elapsed) s] $*"; }
# Every command gets a bound, so that a hang cannot eat the machine's time.
bounded() { timeout "${BOUND:-300}" "$@"; }

step "unpack $(head -1 "$pack/MANIFEST")"
camview=$work/camview
if command -v xz >/dev/null; then
    xz -dc "$pack/camview.xz" >"$camview"
else
    "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$pack/camview.xz" "$camview"
fi
chmod +x "$camview"
want=$(grep -o 'sha256 [0-9a-f]*' "$pack/MANIFEST" | cut -d' ' -f2)
[ "$(sha256sum "$camview" | cut -d' ' -f1)" = "$want" ] || {
    echo "gpu-check: the unpacked binary's sha256 is not the MANIFEST's" >&2
    exit 1
}

step "CUDA libraries"
# Folders where each library may be, in order: CUDA_LIB, python3's nvidia-* packages, the
# system's CUDA and the loader's cache.
python_dirs=$("$python" -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null || true)
candidates=()
[ -n "${CUDA_LIB:-}" ] && candidates+=("$CUDA_LIB")
for d in $python_dirs; do candidates+=("$d"/*/lib); done
candidates+=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64)
where() {
    case $1 in
    "${CUDA_LIB:-/none}"*) echo CUDA_LIB ;;
    */site-packages/* | */dist-packages/*) echo "python3's nvidia packages" ;;
    *) echo "the system" ;;
    esac
}
# Where one library is: the driver's libcuda.so.1 only from the system.
find_lib() {
    local lib=$1 d
    if [ "$lib" != libcuda.so.1 ]; then
        for d in "${candidates[@]}"; do [ -e "$d/$lib" ] && echo "$d/$lib" && return; done
    fi
    ldconfig -p 2>/dev/null | awk -v l="$lib" '$1 == l { print $NF; exit }' | grep . && return
    ldd "$camview" | awk -v l="$lib" '$1 == l && $3 ~ /^\// { print $3 }'
}
libdirs=()
missing=0
seen=" "
given_path=${LD_LIBRARY_PATH:-}
# The binary's CUDA libraries as the loader names them, found in two rounds: a library found
# in the first shows the loader its own (libcublas: libcublasLt).
for round in 1 2; do
    for lib in $(ldd "$camview" | awk '$1 ~ /^lib(cuda|cudart|cublas|cublasLt|curand|nvrtc)\.so/ { print $1 }'); do
        case $seen in *" $lib "*) continue ;; esac
        seen="$seen$lib "
        found=$(find_lib "$lib")
        if [ -z "$found" ] && [ "$lib" = libcuda.so.1 ] && [ "$device" = cpu ]; then
            found=$PWD/$pack/nodriver/libcuda.so.1
            echo "  $lib: no NVIDIA driver here; the stand-in $found (the dry run only)"
        elif [ -z "$found" ] && [ "$lib" = libcuda.so.1 ]; then
            echo "  $lib: NOT FOUND: the NVIDIA driver's library is not in the loader's cache"
            missing=1
            continue
        elif [ -z "$found" ]; then
            echo "  $lib: NOT FOUND (searched ${candidates[*]} and the loader's cache)"
            missing=1
            continue
        else
            echo "  $lib: $found ($(where "$found"))"
        fi
        libdirs+=("$(dirname "$found")")
    done
    [ ${#libdirs[@]} = 0 ] && continue
    LD_LIBRARY_PATH=$(printf '%s\n' "${libdirs[@]}" | awk '!seen[$0]++' | paste -sd:)${given_path:+:$given_path}
    export LD_LIBRARY_PATH
done
[ "$missing" = 0 ] || {
    echo "gpu-check: CUDA libraries missing; CUDA_LIB=DIR names a folder that has them" >&2
    exit 1
}
ldd "$camview" >"$raw/ldd.txt"
if grep -q 'not found' "$raw/ldd.txt"; then
    grep 'not found' "$raw/ldd.txt"
    echo "gpu-check: ldd finds no library above" >&2
    exit 1
fi
echo "  ldd: every library found"
if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader >"$raw/gpu.txt" 2>&1 ||
        echo "(nvidia-smi: none here)" >"$raw/gpu.txt"
    sed 's/^/  /' "$raw/gpu.txt"
    # The kernels run only on the compute capability they were built for.
    built=$(grep -o 'compute capability [0-9]*' "$pack/MANIFEST" | grep -o '[0-9]*$' || true)
    here=$(head -1 "$raw/gpu.txt" | awk -F', ' '{ print $NF }' | tr -d .)
    [ "$built" = "$here" ] || echo "  WARNING: the pack was built for compute capability $built, this GPU has $here: rebuild with CUDA_COMPUTE_CAP=$here scripts/gpu-pack.sh"
fi
"$python" -c 'import torch, torchvision; print("  torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.version.cuda)'

step "weights: seeded random ResNet-50 from torchvision"
weights=$work/resnet50.safetensors
images=(images/*.png images/*.jpg)
bounded "$python" scripts/gpu_check.py weights "$weights" "${images[@]}"
export CAMVIEW_WEIGHTS=$weights

step "parity: camview on $device against PyTorch on $device and against camview on the CPU"
parity_status=0
BOUND=400 bounded "$python" scripts/gpu_check.py parity --camview "$camview" --weights "$weights" \
    --device "$device" --out "$raw" "${images[@]}" || parity_status=$?
worst=$("$python" - "$raw/parity-resnet50.json" <<'PY' 2>/dev/null || true
import json, sys
p = json.load(open(sys.argv[1]))
w = p["worst"]
print(p["inputs"], p["passed"], *(f"{w[s][k]:.1e}" for s in ("vs_torch", "vs_camview_cpu") for k in ("logits", "cam_all")))
PY
)
read -r parity_n parity_ok torch_logits torch_cams cpu_logits cpu_cams <<<"$worst" || true

# The rest of the family camview runs: a basic-block network and a grouped one, one resize
# mode each (the modes are the same code for every network).
family=()
for arch in resnet18 resnext50_32x4d; do
    step "parity: $arch (squash), seeded random weights"
    arch_weights=$work/$arch.safetensors
    arch_status=0
    bounded "$python" scripts/gpu_check.py weights --arch "$arch" "$arch_weights" "${images[@]}" &&
        BOUND=300 bounded "$python" scripts/gpu_check.py parity --arch "$arch" --modes squash \
            --camview "$camview" --weights "$arch_weights" --device "$device" --out "$raw" \
            "${images[@]}" || arch_status=$?
    result=$("$python" - "$raw/parity-$arch.json" <<'PY' 2>/dev/null || echo "-"
import json, sys
p = json.load(open(sys.argv[1]))
w = p["worst"]["vs_torch"]
print(f"{p['passed']}/{p['inputs']}: {w['logits']:.1e}, {w['cam_all']:.1e}")
PY
    )
    if [ "$arch_status" = 0 ]; then family+=("$arch passed, $result"); else family+=("$arch FAILED, $result"); parity_status=1; fi
done

step "speed: camview bench, PyTorch eager"
field() { grep -o " $1=[0-9.]*" | tail -1 | cut -d= -f2; }
cam_bench() {
    bounded "$camview" bench --device "$device" --batch "$1" --iters "$2" --warmup "$warmup" >"$raw/bench-b$1.txt" 2>&1 || true
    cat "$raw/bench-b$1.txt"
}
cam_bench 1 "$b1_iters"
cam_bench 64 "$b64_iters"
cam_b1=$(field median_ms <"$raw/bench-b1.txt")
cam_b64=$(field median_ms <"$raw/bench-b64.txt")
torch_bench() {
    bounded "$python" scripts/gpu_check.py torch-bench --weights "$weights" --device "$device" \
        --batch "$1" --iters "$2" --warmup "$warmup" | tee "$raw/torch-b$1.json" || true
}
torch_bench 1 "$b1_iters"
torch_bench 64 "$b64_iters"
json_field() { grep -o "\"$1\": [0-9.]*" "$2" 2>/dev/null | cut -d' ' -f2; }
torch_b1=$(json_field f32_ms "$raw/torch-b1.json")
torch_b64=$(json_field f32_ms "$raw/torch-b64.json")
bf16_b1=$(json_field bf16_cl_ms "$raw/torch-b1.json")
bf16_b64=$(json_field bf16_cl_ms "$raw/torch-b64.json")

step "speed: eval and classify of $photos photos (copies of images/, 4 classes)"
data=$work/photos
for class in n02124075 n07920052 n03240683 n04228054; do mkdir -p "$data/$class"; done
# Hard links where the file system allows them, else copies.
link() { ln "$1" "$2" 2>/dev/null || cp "$1" "$2"; }
for i in $(seq $((photos / 4))); do
    link images/chelsea.png "$data/n02124075/$i.png"
    link images/coffee.png "$data/n07920052/$i.png"
    link images/rocket.jpg "$data/n03240683/$i.jpg"
    link images/astronaut.png "$data/n04228054/$i.png"
done
bounded "$camview" eval "$data" --device "$device" --resize squash --no-store >"$raw/eval.txt" 2>"$raw/eval.err" || true
eval_line=$(grep "images/s" "$raw/eval.err" | tail -1 || true)
echo "${eval_line:-eval: no rate; $raw/eval.err:}" && [ -n "$eval_line" ] || tail -3 "$raw/eval.err"
eval_rate=$(echo "$eval_line" | grep -o '[0-9.]* images/s' | cut -d' ' -f1)
t0=$(date +%s.%N)
bounded "$camview" classify "$data" --device "$device" --resize squash >"$raw/classify.txt" 2>"$raw/classify.err" || true
t1=$(date +%s.%N)
classified=$(grep -c "input 224×224" "$raw/classify.txt" || true)
classify_rate=$(awk -v n="$classified" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.1f", n / (e - s) }')
echo "classify: $classified photos in $(awk -v s="$t0" -v e="$t1" 'BEGIN { printf "%.1f", e - s }') s," \
    "$classify_rate images/s (model load included)"

step "speed: Score-CAM of one photo (cam --method scorecam: 2048 masked passes)"
t0=$(date +%s.%N)
if bounded "$camview" cam images/chelsea.png --device "$device" --method scorecam -o "$raw/scorecam.png" >"$raw/scorecam.txt" 2>&1; then
    scorecam_s=$(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    echo "Score-CAM: $scorecam_s s (model load included)"
else
    echo "Score-CAM: failed or over the bound; $raw/scorecam.txt:" && tail -3 "$raw/scorecam.txt"
fi

# The table.
or_dash() { echo "${1:--}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "-"; else printf "%.2f", a / b }'; }
ms() { awk -v ms="$1" 'BEGIN { if (ms == "") print "-"; else printf "%.2f", ms }'; }
rate() { awk -v ms="$1" -v n="$2" 'BEGIN { if (ms == "") print "-"; else printf (n * 1000 / ms < 100 ? "%.1f" : "%.0f"), n * 1000 / ms }'; }
if [ "$parity_status" = 0 ] && [ -n "${parity_ok:-}" ]; then verdict="passed, $parity_ok/$parity_n"; else verdict="FAILED, $(or_dash "${parity_ok:-}")/$(or_dash "${parity_n:-}")"; fi
gpu=$([ "$device" = cuda ] && cut -d, -f1 "$raw/gpu.txt" | head -1 || echo "CPU dry run: $(nproc) cores")
wall=$(elapsed)
{
    echo "| $device ($gpu) | camview | PyTorch eager f32 | camview / PyTorch | PyTorch bf16 channels-last | goal |"
    echo "|---|---|---|---|---|---|"
    echo "| parity with PyTorch: logits, CAMs (largest difference / largest value) | $verdict: $(or_dash "${torch_logits:-}"), $(or_dash "${torch_cams:-}") | | | | ≤ 1e-3 |"
    echo "| parity of the family with PyTorch (squash) | $(printf '%s; ' "${family[@]}" | sed 's/; $//') | | | | ≤ 1e-3 |"
    echo "| parity with camview on the CPU | $(or_dash "${cpu_logits:-}"), $(or_dash "${cpu_cams:-}")$([ "$device" = cpu ] && echo ' (the same device)') | | | | ≤ 1e-3 |"
    echo "| batch 1 latency (ms) | $(ms "$cam_b1") | $(ms "$torch_b1") | $(ratio "$cam_b1" "$torch_b1") | $(ms "$bf16_b1") | ≤ 0.8 |"
    echo "| batch 64 (ms a batch) | $(ms "$cam_b64") | $(ms "$torch_b64") | $(ratio "$cam_b64" "$torch_b64") | $(ms "$bf16_b64") | ≤ 1.0 |"
    echo "| batch 64 throughput (images/s) | $(rate "$cam_b64" 64) | $(rate "$torch_b64" 64) | $(ratio "$torch_b64" "$cam_b64") | $(rate "$bf16_b64" 64) | ≥ 1.0 |"
    echo "| eval, $photos photos (images/s) | $(or_dash "$eval_rate") | | | | |"
    echo "| classify, $photos photos (images/s, load included) | $(or_dash "$classify_rate") | | | | |"
    echo "| Score-CAM of one photo, 2048 passes (s, load included) | $(or_dash "${scorecam_s:-}") | | | | |"
} >"$raw/table.md"
echo
cat "$raw/table.md"
echo
echo "gpu-check: $device, done in $wall s$([ -n "${OUT:-}" ] && echo "; raw numbers in $OUT")"
[ "$parity_status" = 0 ]
