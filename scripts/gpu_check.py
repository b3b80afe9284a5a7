#!/usr/bin/env python3
"""The Python side of scripts/gpu-check.sh, for a GPU machine that has PyTorch but no Rust and
no network: it makes the weights, checks camview's outputs against PyTorch's, and times
PyTorch eager. Needs torch, torchvision, safetensors, numpy and Pillow.

  gpu_check.py weights OUT.safetensors [--seed 0] PHOTO...
  gpu_check.py parity --camview BIN --weights W --device cuda|cpu --out DIR PHOTO...
  gpu_check.py torch-bench --weights W --device cuda|cpu --batch N --iters K --warmup K

`weights`: a torchvision ResNet-50 (v1.5, torchvision's layout) with seeded random weights and
non-trivial batch-norm statistics, saved as safetensors with torchvision's names, the layout
recorded in the metadata as camview writes it.

`parity`: camview `classify --json --top 1000 --cam-grid` on DEVICE in each resize mode against
torchvision's ResNet-50 with the same weights on the same DEVICE (strict f32: no TF32), fed the
same pixels (Pillow's bilinear resize and torchvision's centre crop, which camview reproduces
byte for byte; photos other than PNG decoded once by Pillow and given to both as PNG), and
camview on DEVICE against camview on the CPU. Prints one line per input
and a verdict; writes DIR/parity-ARCH.json. Exit status 1 when a check fails.

`torch-bench`: PyTorch eager on the weights, f32 (no TF32) and channels-last bf16 autocast;
one JSON line of median milliseconds a batch.
"""
import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = ("full", "squash", "center")
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
# camview's preprocessing constants (src/model/preprocess.rs).
TRAIN_SIDE, CENTER_RESIZE, FULL_MAX_SIDE = 224, 256, 1344
# Largest difference allowed, relative to the largest magnitude compared (logits, or a CAM):
# f32 against f32 with other summation orders (cuDNN's or MKL's convolutions against im2col +
# cuBLAS, or camview's Winograd) differ by about 1e-6 of that on the CPU; a wrong layer, stride
# or pixel moves them by far more than 1e-3.
TOLERANCE = 1e-3


def strict_f32(torch):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


# ---------------------------------------------------------------- weights


def calibration_batches(photos, passes, batch, generator):
    """Seeded random 224 × 224 crops of the photos (random scale and flip), normalised: inputs
    with the statistics of photographs, for the batch-norm statistics."""
    import torch
    from PIL import Image

    images = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0)
              .permute(2, 0, 1) for p in photos]
    mean = torch.tensor(MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(STD, dtype=torch.float32)[:, None, None]
    for _ in range(passes):
        crops = []
        for _ in range(batch):
            img = images[int(torch.randint(len(images), (1,), generator=generator))]
            _, h, w = img.shape
            side = int(min(h, w) * (0.4 + 0.6 * torch.rand(1, generator=generator).item()))
            y = int(torch.randint(h - side + 1, (1,), generator=generator))
            x = int(torch.randint(w - side + 1, (1,), generator=generator))
            crop = img[None, :, y:y + side, x:x + side]
            crop = torch.nn.functional.interpolate(crop, size=(224, 224), mode="bilinear",
                                                   antialias=True, align_corners=False)[0]
            if torch.rand(1, generator=generator).item() < 0.5:
                crop = crop.flip(2)
            crops.append((crop - mean) / std)
        yield torch.stack(crops)


def make_weights(args):
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = getattr(torchvision.models, args.arch)(weights=None)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        # Batch-norm scales and shifts away from torchvision's 1 and 0 …
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
            bn.reset_running_stats()
            bn.momentum = None  # a plain average over the passes below
        # … and statistics measured on photographs, as training would leave them: the running
        # means and variances differ from 0 and 1 in every layer, and keep the activations of
        # the evaluation pass in range.
        model.train()
        for x in calibration_batches(args.photos, args.passes, args.batch, generator):
            model(x)
        model.eval()
        # Logits spread over a few units: probabilities far from uniform, none below f32's range.
        x = next(calibration_batches(args.photos, 1, args.batch, generator))
        model.fc.weight.mul_(3.0 / model(x).std().item())
        model.fc.bias.normal_(0.0, 0.5, generator=generator)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if "num_batches" not in k}
    save_file(state, args.out, metadata={"architecture": "resnet50-v1.5"})
    var = torch.cat([bn.running_var for bn in bns])
    mean = torch.cat([bn.running_mean for bn in bns])
    print(f"weights: torchvision {torchvision.__version__} {args.arch}, seed {args.seed}, "
          f"{len(state)} tensors -> {args.out}; BN running_var {var.min():.3g}..{var.max():.3g}, "
          f"running_mean {mean.min():.3g}..{mean.max():.3g}")


def load_model(weights, device, arch="resnet50"):
    import torch
    import torchvision
    from safetensors.torch import load_file

    model = getattr(torchvision.models, arch)(weights=None)
    keys = model.load_state_dict(load_file(weights), strict=False)
    missing = [k for k in keys.missing_keys if "num_batches" not in k]
    if missing or keys.unexpected_keys:
        sys.exit(f"gpu_check: {weights}: missing {missing[:3]}, unexpected {keys.unexpected_keys[:3]}")
    return model.eval().to(device)


# ---------------------------------------------------------------- parity


def camview_size(width, height, mode):
    """src/model/preprocess.rs `resized_size`: Rust's round() is half away from zero."""
    if mode == "squash":
        return TRAIN_SIDE, TRAIN_SIDE
    target = TRAIN_SIDE if mode == "full" else CENTER_RESIZE
    scale = target / min(width, height)
    scale = max(min(scale, FULL_MAX_SIDE / max(width, height, 1)), 0.0)
    side = lambda v: max(1, math.floor(v * scale + 0.5))  # noqa: E731
    return side(width), side(height)


def network_pixels(path, mode):
    """The uint8 RGB pixels the network sees: Pillow's bilinear resize (torchvision's Resize on a
    PIL image) and torchvision's CenterCrop offsets."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    rw, rh = camview_size(*img.size, mode)
    if (rw, rh) != img.size:
        img = img.resize((rw, rh), Image.BILINEAR)
    if mode == "center":
        side = min(TRAIN_SIDE, rw, rh)
        left, top = int(round((rw - side) / 2.0)), int(round((rh - side) / 2.0))
        img = img.crop((left, top, left + side, top + side))
    return np.asarray(img, dtype=np.uint8)


def as_png(photos, folder):
    """The photos, those that are not PNG decoded once by Pillow and written as PNG: camview's
    JPEG decoder is not libjpeg, and may differ by a grey level (tests/camview/golden.rs), which
    this random network amplifies far beyond the tolerance. The parity is of the network, so
    both sides get the same decoded pixels."""
    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for photo in map(Path, photos):
        if photo.suffix.lower() == ".png":
            out.append(str(photo))
        else:
            png = folder / (photo.stem + ".png")
            ImageOps.exif_transpose(Image.open(photo)).convert("RGB").save(png)
            out.append(str(png))
    return out


def golden_pixels(path, mode):
    """The committed reference pixels for this photo and mode, if there are any."""
    from PIL import Image

    golden = Path(__file__).resolve().parent.parent / "tests/fixtures/golden"
    file = golden / f"{Path(path).stem}.{mode}.input.png"
    return np.asarray(Image.open(file).convert("RGB")) if file.exists() else None


def torch_outputs(model, pixels, device):
    """Logits (1000,) and raw CAMs (1000, h, w) in float64, computed in f32 on `device`."""
    import torch

    x = (pixels / 255.0 - MEAN) / STD
    x = torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32)).to(device)
    m = model
    with torch.inference_mode():
        f = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        f = m.layer4(m.layer3(m.layer2(m.layer1(f))))
        logits = m.fc(torch.flatten(m.avgpool(f), 1))[0]
        cams = torch.einsum("ck,khw->chw", m.fc.weight, f[0])
    return logits.double().cpu().numpy(), cams.double().cpu().numpy()


def run_camview(camview, weights, device, mode, photos):
    """camview's probabilities (1000,) and raw CAMs (1000, h, w) for each photo, by path."""
    cmd = [camview, "classify", "--json", "--top", "1000", "--cam-grid", "--resize", mode,
           "--device", device, "--weights", weights, *photos]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(f"gpu_check: {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    results = {}
    for line in done.stdout.splitlines():
        record = json.loads(line)
        if "error" in record:
            sys.exit(f"gpu_check: camview: {record['path']}: {record['error']}")
        probs = np.zeros(1000)
        cams = [None] * 1000
        for entry in record["top"]:
            probs[entry["index"]] = entry["prob"]
            cams[entry["index"]] = entry["cam"]
        results[record["path"]] = (probs, np.array(cams, dtype=np.float64))
    return results


def centred_log(probs):
    """Logits up to a constant, from probabilities: log p − mean(log p)."""
    logp = np.log(np.maximum(probs, 1e-38))
    return logp - logp.mean()


def compare(probs, cams, ref_logits, ref_cams):
    """Differences of camview's outputs from a reference, each relative to the reference's
    largest magnitude; and whether the top class is the same (or a near tie)."""
    ref_probs = np.exp(ref_logits - ref_logits.max())
    ref_probs /= ref_probs.sum()
    ref = ref_logits - ref_logits.mean()
    logit = np.abs(centred_log(probs) - ref).max() / max(1.0, np.abs(ref).max())
    top5 = np.argsort(-ref_logits)[:5]
    cam_top5 = max(np.abs(cams[c] - ref_cams[c]).max() / np.abs(ref_cams[c]).max() for c in top5)
    cam_all = np.abs(cams - ref_cams).max() / np.abs(ref_cams).max()
    second = np.sort(ref)[-2]
    same_top1 = int(np.argmax(probs)) == int(top5[0]) or ref.max() - second < TOLERANCE * 10
    return {
        "logits": float(logit),
        "probs_abs": float(np.abs(probs - ref_probs).max()),
        "cam_top5": float(cam_top5),
        "cam_all": float(cam_all),
        "top1": int(top5[0]),
        "top1_prob": float(ref_probs[top5[0]]),
        "same_top1": bool(same_top1),
        "cam_shape": list(ref_cams.shape[1:]),
    }


def passes(c):
    return c["same_top1"] and max(c["logits"], c["cam_top5"], c["cam_all"]) <= TOLERANCE


def parity(args):
    import torch

    strict_f32(torch)
    model = load_model(args.weights, args.device, args.arch)
    rows, ok = [], True
    pixels_checked = pixels_equal = 0
    converted = tempfile.TemporaryDirectory()
    args.photos = as_png(args.photos, Path(converted.name))
    for mode in args.modes.split(","):
        here = run_camview(args.camview, args.weights, args.device, mode, args.photos)
        cpu = (here if args.device == "cpu"
               else run_camview(args.camview, args.weights, "cpu", mode, args.photos))
        for photo in args.photos:
            pixels = network_pixels(photo, mode)
            golden = golden_pixels(photo, mode)
            if golden is not None:
                pixels_checked += 1
                pixels_equal += int(golden.shape == pixels.shape and (golden == pixels).all())
            logits, cams = torch_outputs(model, pixels, args.device)
            key = next(k for k in here if Path(k).name == Path(photo).name)
            vs_torch = compare(*here[key], logits, cams)
            # camview on the CPU as the reference for camview on the device.
            cpu_probs, cpu_cams = cpu[key]
            vs_cpu = compare(*here[key], centred_log(cpu_probs), cpu_cams)
            good = passes(vs_torch) and passes(vs_cpu)
            ok &= good
            rows.append({"photo": Path(photo).name, "mode": mode, "input": list(pixels.shape[:2]),
                         "vs_torch": vs_torch, "vs_camview_cpu": vs_cpu, "passed": good})
            print(f"{Path(photo).name:>14} {mode:>6} {pixels.shape[1]}x{pixels.shape[0]} "
                  f"top1 {vs_torch['top1']} p={vs_torch['top1_prob']:.3f} | vs PyTorch: "
                  f"logits {vs_torch['logits']:.1e} cams {vs_torch['cam_top5']:.1e}/"
                  f"{vs_torch['cam_all']:.1e} | vs camview cpu: logits {vs_cpu['logits']:.1e} "
                  f"cams {vs_cpu['cam_all']:.1e} | {'ok' if good else 'FAILED'}")
    worst = {side: {k: max(r[side][k] for r in rows) for k in ("logits", "cam_top5", "cam_all")}
             for side in ("vs_torch", "vs_camview_cpu")}
    summary = {
        "device": args.device,
        "arch": args.arch,
        "torch": torch.__version__,
        "tolerance": TOLERANCE,
        "inputs": len(rows),
        "passed": sum(r["passed"] for r in rows),
        "pillow_pixels_equal_golden": f"{pixels_equal}/{pixels_checked}",
        "worst": worst,
        "rows": rows,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"parity-{args.arch}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"pixels fed to PyTorch equal to the golden inputs: {pixels_equal}/{pixels_checked}")
    print(f"parity: {summary['passed']}/{len(rows)} inputs within {TOLERANCE:g}; worst vs PyTorch "
          f"logits {worst['vs_torch']['logits']:.1e} cams {worst['vs_torch']['cam_all']:.1e}; "
          f"vs camview cpu logits {worst['vs_camview_cpu']['logits']:.1e} "
          f"cams {worst['vs_camview_cpu']['cam_all']:.1e}")
    return 0 if ok else 1


# ---------------------------------------------------------------- speed


def torch_bench(args):
    import torch

    strict_f32(torch)
    model = load_model(args.weights, args.device)
    x = torch.randn(args.batch, 3, 224, 224, device=args.device)

    def timed(net, inp, autocast):
        def once():
            with torch.inference_mode(), torch.autocast(args.device, torch.bfloat16, enabled=autocast):
                # Reading the logits back waits for the GPU, as camview's bench does.
                return net(inp).float().cpu()

        for _ in range(args.warmup):
            once()
        times = []
        for _ in range(args.iters):
            t = time.perf_counter()
            once()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)

    f32 = timed(model, x, False)
    cl = model.to(memory_format=torch.channels_last)
    bf16 = timed(cl, x.to(memory_format=torch.channels_last), True)
    print(json.dumps({"batch": args.batch, "iters": args.iters, "f32_ms": round(f32, 3),
                      "bf16_cl_ms": round(bf16, 3), "torch": torch.__version__,
                      "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"}))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    w = sub.add_parser("weights")
    w.add_argument("out")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--arch", default="resnet50",
                   help="a torchvision constructor: resnet50, resnet18, resnext50_32x4d, ...")
    w.add_argument("--passes", type=int, default=4)
    w.add_argument("--batch", type=int, default=8)
    w.add_argument("photos", nargs="+", help="photographs for the batch-norm statistics")
    p = sub.add_parser("parity")
    p.add_argument("--camview", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--device", required=True, choices=["cuda", "cpu"])
    p.add_argument("--out", required=True)
    p.add_argument("--arch", default="resnet50", help="the constructor the weights were made with")
    p.add_argument("--modes", default=",".join(MODES), help="resize modes, comma-separated")
    p.add_argument("photos", nargs="+")
    b = sub.add_parser("torch-bench")
    b.add_argument("--weights", required=True)
    b.add_argument("--device", required=True, choices=["cuda", "cpu"])
    b.add_argument("--batch", type=int, required=True)
    b.add_argument("--iters", type=int, required=True)
    b.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    if args.command == "weights":
        return make_weights(args)
    return {"parity": parity, "torch-bench": torch_bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
