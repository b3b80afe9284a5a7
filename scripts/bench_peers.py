#!/usr/bin/env python3
"""Side-by-side CPU forward latency: camview vs ONNX Runtime, OpenVINO and PyTorch eager.

Each peer is built from the same safetensors file camview uses (torchvision names, layout read
from its metadata): the ONNX graph with the `onnx` helper (no torch needed), given to ONNX
Runtime and to OpenVINO (f32, and bf16 where the CPU has it), the PyTorch model as plain
nn.Conv2d + nn.BatchNorm2d in eval mode (what torchvision runs). Rounds alternate
between the three so machine noise hits all of them alike; the script prints each median and
the ratios: of the medians, of each round's pair (paired), and of the best passes. Ratios, not
absolute times, are the result: these machines are shared and noisy.

usage: python3 scripts/bench_peers.py [--weights models/resnet50.safetensors] [--rounds 5]
         [--iters 10] [--size 224x224] [--batch 1] [--threads 2] [--camview target/release/camview]
         [--peers onnxruntime,openvino,openvino-bf16,pytorch] [--precision f32|bf16] [--avx2]
         [--arch resnet18|resnet101|resnext50_32x4d|wide_resnet50_2|...]

--arch names the torchvision constructor the weights were made for (for example by
`scripts/gpu_check.py weights --arch resnext50_32x4d OUT photos...`): the peers then run that
torchvision model itself, and the ONNX graph is exported from it with `torch.onnx.export`
(needs torch and onnxscript). Without it, the weights are an ImageNet ResNet-50 and the graph is
written directly (no torch needed).

--avx2 also times camview with CAMVIEW_NO_AVX512=1 (its AVX2 kernel) in the same rounds, so
both of its kernels are compared with the peers on one AVX-512 machine. The first lines say
which CPU ran it and which of its vector extensions the kernels use.
needs: pip install numpy safetensors onnx, and any of onnxruntime, openvino, torch (a peer whose
package is missing is left out, and the script says so)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
from safetensors import safe_open

LAYERS = [3, 4, 6, 3]


def load(path):
    with safe_open(path, "numpy") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k).astype(np.float32) for k in f.keys() if "num_batches" not in k}
    v1 = meta.get("architecture", "resnet50-v1.5").split()[0] == "resnet50-v1"
    return tensors, v1


def blocks(v1):
    """(prefix, stride of conv1, stride of conv2, has downsample) for every bottleneck."""
    for li, n in enumerate(LAYERS):
        for bi in range(n):
            s = (1 if li == 0 else 2) if bi == 0 else 1
            yield f"layer{li + 1}.{bi}", (s if v1 else 1), (1 if v1 else s), bi == 0


def fold(S, conv, bn, eps=1e-5):
    scale = S[bn + ".weight"] / np.sqrt(S[bn + ".running_var"] + eps)
    w = S[conv + ".weight"] * scale[:, None, None, None]
    b = S[bn + ".bias"] - S[bn + ".running_mean"] * scale
    return w.astype(np.float32), b.astype(np.float32)


def onnx_model(S, v1):
    """The network as an ONNX graph (batch norm folded), for ONNX Runtime and OpenVINO."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    counter = [0]

    def name(p):
        counter[0] += 1
        return f"{p}_{counter[0]}"

    def conv(x, c, b, stride, pad, relu, residual=None):
        w, bias = fold(S, c, b)
        wn, bn = name("w"), name("b")
        inits.extend([numpy_helper.from_array(w, wn), numpy_helper.from_array(bias, bn)])
        k = w.shape[2]
        y = name("conv")
        nodes.append(helper.make_node("Conv", [x, wn, bn], [y], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[pad] * 4))
        if residual is not None:
            z = name("add")
            nodes.append(helper.make_node("Add", [y, residual], [z]))
            y = z
        if relu:
            z = name("relu")
            nodes.append(helper.make_node("Relu", [y], [z]))
            y = z
        return y

    x = conv("input", "conv1", "bn1", 2, 3, True)
    p = name("pool")
    nodes.append(helper.make_node("MaxPool", [x], [p], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x = p
    for pre, s1, s2, down in blocks(v1):
        y = conv(x, pre + ".conv1", pre + ".bn1", s1, 0, True)
        y = conv(y, pre + ".conv2", pre + ".bn2", s2, 1, True)
        sc = conv(x, pre + ".downsample.0", pre + ".downsample.1", max(s1, s2), 0, False) if down else x
        x = conv(y, pre + ".conv3", pre + ".bn3", 1, 0, True, residual=sc)
    g, f = name("gap"), name("flat")
    nodes.append(helper.make_node("GlobalAveragePool", [x], [g]))
    nodes.append(helper.make_node("Flatten", [g], [f]))
    inits += [numpy_helper.from_array(S["fc.weight"], "fc_w"), numpy_helper.from_array(S["fc.bias"], "fc_b")]
    nodes.append(helper.make_node("Gemm", [f, "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "resnet50",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def torchvision_model(weights, arch):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from gpu_check import load_model

    return load_model(weights, "cpu", arch)


def exported_onnx(weights, arch, shape):
    """The torchvision model exported by torch.onnx at the benchmark's input shape."""
    import contextlib
    import io

    import onnx
    import torch

    net = torchvision_model(weights, arch)
    buf = io.BytesIO()
    # The exporter reports its steps on stdout, which --json keeps for the result.
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        torch.onnx.export(net, (torch.zeros(shape),), buf, input_names=["input"],
                          output_names=["logits"], opset_version=18, external_data=False)
    return onnx.load_from_string(buf.getvalue())


def onnx_session(model, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"input": x})[0]


def openvino_model(model, threads, precision):
    """OpenVINO on the CPU with the LATENCY hint, in `precision` ("f32" or "bf16"; bf16 runs
    only where the CPU has bf16 instructions, else OpenVINO quietly keeps f32: the precision it
    actually chose is returned beside the runner)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(model.SerializeToString(), b"")
    compiled = core.compile_model(model, "CPU", {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": precision,
    })
    request = compiled.create_infer_request()

    def run(x):
        return request.infer({0: x})[0].copy()

    # The property prints as "bf16" in some releases and as "<Type: 'bfloat16'>" in others.
    chosen = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return run, "bf16" if "bf16" in chosen or "bfloat16" in chosen else chosen


def torch_model(S, v1, threads, device="cpu"):
    """PyTorch eager on `device` ("cpu" or "cuda"; on CUDA in strict f32, no TF32, as camview)."""
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def conv_bn(c, b, stride, pad):
        w = torch.from_numpy(S[c + ".weight"])
        conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride, pad, bias=False)
        conv.weight.data.copy_(w)
        bn = nn.BatchNorm2d(w.shape[0])
        for k in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, k).data.copy_(torch.from_numpy(S[f"{b}.{k}"]))
        return nn.Sequential(conv, bn)

    class Block(nn.Module):
        def __init__(self, pre, s1, s2, down):
            super().__init__()
            self.c1 = conv_bn(pre + ".conv1", pre + ".bn1", s1, 0)
            self.c2 = conv_bn(pre + ".conv2", pre + ".bn2", s2, 1)
            self.c3 = conv_bn(pre + ".conv3", pre + ".bn3", 1, 0)
            self.down = conv_bn(pre + ".downsample.0", pre + ".downsample.1", max(s1, s2), 0) if down else None

        def forward(self, x):
            y = torch.relu(self.c1(x))
            y = torch.relu(self.c2(y))
            y = self.c3(y)
            return torch.relu(y + (self.down(x) if self.down is not None else x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv_bn("conv1", "bn1", 2, 3)
            self.pool = nn.MaxPool2d(3, 2, 1)
            self.blocks = nn.Sequential(*[Block(*b) for b in blocks(v1)])
            self.fc = nn.Linear(2048, 1000)
            self.fc.weight.data.copy_(torch.from_numpy(S["fc.weight"]))
            self.fc.bias.data.copy_(torch.from_numpy(S["fc.bias"]))

        def forward(self, x):
            x = self.blocks(self.pool(torch.relu(self.stem(x))))
            return self.fc(x.mean((2, 3)))

    net = Net().eval().to(device)

    def run(x):
        # Reading the logits back waits for the GPU to finish.
        with torch.inference_mode():
            return net(torch.from_numpy(x).to(device)).cpu().numpy()

    return run


def torchvision_runner(weights, arch, threads):
    import torch

    torch.set_num_threads(threads)
    net = torchvision_model(weights, arch)

    def run(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    return run


def time_python(fn, x, iters, warmup=3):
    """(median, min) of `iters` timed calls, in ms, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times)


def cpu_line():
    """The CPU's model name and the vector extensions camview's kernels care about."""
    flags, model = set(), "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"]
    return f"cpu: {model}, {os.cpu_count()} cpus; flags: " + " ".join(f for f in wanted if f in flags)


def time_camview(exe, weights, size, batch, iters, threads, precision, extra_env=None):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), CAMVIEW_WEIGHTS=weights,
               CAMVIEW_PRECISION=precision, **(extra_env or {}))
    out = subprocess.run([exe, "bench", "--iters", str(iters), "--size", size, "--batch", str(batch)],
                         env=env, check=True, capture_output=True, text=True).stdout
    header = out.splitlines()[0]
    if f" precision={precision} " not in header:
        sys.exit(f"camview did not run in {precision} here: {header}")
    last = out.strip().splitlines()[-1]
    fields = dict(kv.split("=") for kv in last.split()[1:])
    return float(fields["median_ms"]), float(fields["min_ms"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="models/resnet50.safetensors")
    ap.add_argument("--camview", default="target/release/camview")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--size", default="224x224")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peers", default="onnxruntime,openvino,openvino-bf16,pytorch",
                    help="comma-separated peers to time beside camview")
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                    help="camview's --precision (bf16 needs AVX512_BF16; compare with openvino-bf16)")
    ap.add_argument("--avx2", action="store_true",
                    help="also time camview's AVX2 kernel (CAMVIEW_NO_AVX512=1) in the same rounds")
    ap.add_argument("--arch", help="the torchvision constructor the weights were made for "
                    "(the peers then run that model, exported by torch.onnx)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    a = ap.parse_args()
    print(cpu_line(), file=sys.stderr)

    h, w = (int(v) for v in a.size.lower().split("x"))
    x = np.random.default_rng(0).standard_normal((a.batch, 3, h, w)).astype(np.float32)
    if a.arch:
        graph = exported_onnx(a.weights, a.arch, x.shape)
        pytorch = lambda: torchvision_runner(a.weights, a.arch, a.threads)
    else:
        S, v1 = load(a.weights)
        graph = onnx_model(S, v1)
        pytorch = lambda: torch_model(S, v1, a.threads)
    peers, tolerance = {}, {}
    for name, make in [("onnxruntime", lambda: onnx_session(graph, a.threads)),
                       ("openvino", lambda: openvino_model(graph, a.threads, "f32")),
                       ("openvino-bf16", lambda: openvino_model(graph, a.threads, "bf16")),
                       ("pytorch", pytorch)]:
        if name not in a.peers.split(","):
            continue
        try:
            peer = make()
        except ImportError as e:
            print(f"left out {name}: {e}", file=sys.stderr)
            continue
        if name.startswith("openvino"):
            peer, precision = peer
            if name.endswith("bf16") and precision != "bf16":
                print(f"left out {name}: this CPU has no bf16 (OpenVINO chose {precision})",
                      file=sys.stderr)
                continue
        peers[name] = peer
        # bf16 keeps 8 bits of mantissa: its logits move by up to ~0.1.
        tolerance[name] = 0.5 if name.endswith("bf16") else 1e-3
    if not peers:
        sys.exit("no peer to compare with: pip install onnxruntime openvino (or torch)")
    # The peers compute the same function: check before timing anything.
    first = next(iter(peers))
    ref = peers[first](x)
    for name, fn in peers.items():
        diff = float(np.abs(fn(x) - ref).max())
        if diff >= tolerance[name] and name.endswith("bf16"):
            # Deep models with random weights (--arch) amplify bf16's rounding: time them
            # anyway, and say so.
            print(f"{name} differs from {first} by {diff} (bf16): timed anyway", file=sys.stderr)
            continue
        assert diff < tolerance[name], f"{name} disagrees with {first} by {diff}"

    camviews = {"camview": {}}
    if a.avx2:
        camviews["camview-avx2"] = {"CAMVIEW_NO_AVX512": "1"}
    results = {**{k: [] for k in camviews}, **{k: [] for k in peers}}
    # PyTorch's and ONNX Runtime's worker threads spin for a while after each run; a pause
    # before every measurement keeps one peer's spinning off the next one's cores.
    settle = 1.0
    runners = {**{name: (lambda env=env: time_camview(a.camview, a.weights, a.size, a.batch, a.iters,
                                                      a.threads, a.precision, env))
                  for name, env in camviews.items()},
               **{name: (lambda fn=fn: time_python(fn, x, a.iters)) for name, fn in peers.items()}}
    order = list(runners)
    for r in range(a.rounds):
        # Rotate who goes first, so no one always runs right after the same neighbour.
        for name in order[r % len(order):] + order[:r % len(order)]:
            time.sleep(settle)
            results[name].append(runners[name]())
        print(f"round {r + 1}: " + "  ".join(f"{k}={v[-1][0]:.1f}" for k, v in results.items()), file=sys.stderr)

    # Median of the rounds' medians (typical), and the best single pass seen (least noise).
    med = {k: statistics.median(m for m, _ in v) for k, v in results.items()}
    best = {k: min(b for _, b in v) for k, v in results.items()}
    # Paired: each round's camview median over the same round's peer median. Rounds are
    # minutes apart, so this cancels the slow swings of a shared machine.
    pairs = [(c, p) for c in camviews for p in peers]
    paired = {(c, p): statistics.median(x[0] / y[0] for x, y in zip(results[c], results[p]))
              for c, p in pairs}
    summary = {
        "cpu": cpu_line(),
        "arch": a.arch or "resnet50 (ImageNet)",
        "input": f"{a.batch}x3x{h}x{w}", "precision": a.precision, "threads": a.threads, "rounds": a.rounds, "iters": a.iters,
        "median_ms": {k: round(v, 2) for k, v in med.items()},
        "min_ms": {k: round(v, 2) for k, v in best.items()},
        **{f"{c}_vs_{p}": round(med[c] / med[p], 3) for c, p in pairs},
        **{f"best_{c}_vs_{p}": round(best[c] / best[p], 3) for c, p in pairs},
        **{f"paired_{c}_vs_{p}": round(paired[c, p], 3) for c, p in pairs},
        # The spread of each engine's round medians, relative to its median: how steady it is.
        "spread": {k: round((max(m for m, _ in v) - min(m for m, _ in v)) / med[k], 3)
                   for k, v in results.items()},
        "images_per_s": {k: round(a.batch * 1e3 / v, 1) for k, v in med.items()},
    }
    if a.json:
        print(json.dumps(summary))
    else:
        print(summary["cpu"])
        print(f"model {summary['arch']}  input {summary['input']}  camview {a.precision}  threads {a.threads}  rounds {a.rounds} x iters {a.iters}")
        print(f"  {'':<14} {'median':>8}    {'best':>8}    {'images/s':>8}  spread")
        for k in med:
            print(f"  {k:<14} {med[k]:8.2f} ms {best[k]:8.2f} ms {summary['images_per_s'][k]:8.1f}"
                  f"  {summary['spread'][k]:.3f}")
        for c, p in pairs:
            print(f"  {c + ' / ' + p:<29} = {med[c] / med[p]:.3f} (median)"
                  f"  {paired[c, p]:.3f} (paired)  {best[c] / best[p]:.3f} (best)")


if __name__ == "__main__":
    main()
