"""Plain PyTorch reference for an imported graph (docs/graph.md): clean accuracy of a
PyTorch module on MNIST's test split, and of ablations of its channels.

    python benches/graph_reference.py --source FILE.py:NAME --weights W [--state-key K] \
        [--norm MEAN/STD|none] [--trust-pickle] --data-dir DIR [--test-limit N] \
        [--ablate MODULE:UNITS:MODE]... [--json-logits-out FILE]

Loads the module as scripts/import_graph.py does, feeds it normalise(raw pixels in
[0, 1]) and prints one JSON object:
    {"clean_acc": pct, "predictions_sha": sha256 of the int64 predictions (little-endian),
     "ablations": [{"module": ..., "units": [...], "mode": ..., "clean_acc": pct}]}
Each --ablate is evaluated on its own: a forward hook on MODULE replaces the output
channels UNITS (dim 1) by 0 (zero) or by their mean over the test images at each
position (mean; a first pass averages the module's output over the batch dimension).
A module called more than once in a forward pass gets a mean per call.
"""
import argparse
import array
import hashlib
import json
import os
import struct
import sys
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))

from graph_python import fail, load_model, model_arguments, normalise, parse_norm, read_mnist, run_main  # noqa: E402

import torch  # noqa: E402

BATCH = 500


def parse_ablation(text, model):
    parts = text.rsplit(":", 2)
    if len(parts) != 3:
        fail(f"--ablate {text!r} must be MODULE:UNITS:MODE (e.g. layer2.0.conv2:1,2:zero)")
    module, units, mode = parts
    if mode not in ("zero", "mean"):
        fail(f"--ablate {text!r}: MODE must be zero or mean")
    try:
        units = [int(u) for u in units.split(",")]
    except ValueError:
        fail(f"--ablate {text!r}: UNITS must be channel numbers separated by commas")
    try:
        m = model.get_submodule(module)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        fail(f"--ablate {text!r}: the model has no module {module!r} "
             f"(modules: {', '.join(names[:30])}{' ...' if len(names) > 30 else ''})")
    return module, m, units, mode


class CallCounter:
    """Numbers the calls of a hooked module within one forward pass."""

    def __init__(self):
        self.k = 0


def evaluate(model, x, y, norm, hook_module=None, hook=None, pre=None):
    handles = []
    if hook_module is not None:
        handles.append(hook_module.register_forward_hook(hook))
    preds = []
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], BATCH):
                if pre is not None:
                    pre()
                out = model(normalise(x[i:i + BATCH], norm))
                preds.append(out.argmax(1))
    finally:
        for h in handles:
            h.remove()
    preds = torch.cat(preds).to(torch.int64)
    acc = 100.0 * float((preds == y).sum()) / y.shape[0]
    return acc, preds


def ablate(model, x, y, norm, module, m, units, mode):
    counter = CallCounter()

    def reset():
        counter.k = 0

    means = {}
    if mode == "mean":
        sums = {}

        def acc_hook(_m, _inp, out):
            k = counter.k
            counter.k += 1
            s = out.detach().to(torch.float64).sum(0)
            sums[k] = s if k not in sums else sums[k] + s

        evaluate(model, x, y, norm, m, acc_hook, reset)
        means = {k: (s / x.shape[0]).to(torch.float32) for k, s in sums.items()}

    def hook(_m, _inp, out):
        k = counter.k
        counter.k += 1
        if out.dim() < 2 or max(units) >= out.shape[1] or min(units) < 0:
            fail(f"--ablate {module}: units {units} are not channels of its output "
                 f"{list(out.shape)}")
        out = out.clone()
        if mode == "zero":
            out[:, units] = 0
        else:
            out[:, units] = means[k][units].unsqueeze(0).expand_as(out[:, units])
        return out

    acc, _ = evaluate(model, x, y, norm, m, hook, reset)
    return acc


def write_grey_png(path, pixels):
    """An 8-bit grey PNG of a [H, W] uint8 tensor (zlib and struct: no PIL here)."""
    height, width = pixels.shape
    rows = b"".join(b"\x00" + bytes(pixels[r].tolist()) for r in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                + chunk(b"IEND", b""))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model_arguments(p)
    p.add_argument("--trust-pickle", action="store_true")
    p.add_argument("--ablate", action="append", default=[], help="MODULE:UNITS:zero|mean")
    p.add_argument("--json-logits-out")
    p.add_argument("--blend", help="raw float32 [1, H, W] pixels in [0, 1]: also the ASR of a blended trigger")
    p.add_argument("--alpha", type=float, default=0.2)
    p.add_argument("--target", type=int, default=0)
    p.add_argument("--bd-test-out", help="with --blend: also write the triggered images whose label is not the "
                   "target as 8-bit PNGs in BackdoorBench's bd_test_dataset/<label>/<index>.png layout, and "
                   "their ASR as asr_files")
    args = p.parse_args()

    norm = parse_norm(args.norm)
    model, _info = load_model(args.source, args.weights, args.state_key, args.trust_pickle)
    model.eval()
    ablations = [parse_ablation(a, model) for a in args.ablate]
    x, y = read_mnist(args.data_dir, "t10k", args.test_limit)

    acc, preds = evaluate(model, x, y, norm)
    sha = hashlib.sha256(array.array("q", preds.tolist()).tobytes()).hexdigest()
    result = {"clean_acc": acc, "predictions_sha": sha, "ablations": []}
    for module, m, units, mode in ablations:
        result["ablations"].append({"module": module, "units": units, "mode": mode,
                                    "clean_acc": ablate(model, x, y, norm, module, m, units, mode)})
    if args.blend:
        # BackdoorBench's blended trigger on raw pixels, then its ASR: triggered
        # images whose label is not the target, classified as the target.
        with open(args.blend, "rb") as f:
            image = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).view(1, 1, x.shape[2], x.shape[3])
        _, triggered = evaluate(model, (1 - args.alpha) * x + args.alpha * image, y, norm)
        others = y != args.target
        result["asr"] = 100.0 * float((triggered[others] == args.target).sum()) / float(others.sum())
        if args.bd_test_out:
            # What a PNG keeps: 8 bits a pixel, rounded.
            quantised = ((1 - args.alpha) * x + args.alpha * image).mul(255).round().clamp(0, 255).to(torch.uint8)
            for index in torch.nonzero(others).flatten().tolist():
                write_grey_png(os.path.join(args.bd_test_out, str(int(y[index])), f"{index}.png"), quantised[index, 0])
            _, from_files = evaluate(model, quantised[others].float() / 255, y[others], norm)
            result["asr_files"] = 100.0 * float((from_files == args.target).sum()) / float(others.sum())
    if args.json_logits_out:
        with torch.no_grad():
            logits = model(normalise(x[:16], norm))
        with open(args.json_logits_out, "w") as f:
            json.dump({"logits": logits.tolist(), "labels": y[:16].tolist()}, f)
    print(json.dumps(result))


if __name__ == "__main__":
    run_main(main)
