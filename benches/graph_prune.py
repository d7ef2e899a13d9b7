"""Plain PyTorch reference for `trojanscope prune` on a graph (docs/graph.md): the
Fine-Pruning curve of one module of a PyTorch model on MNIST's test split.

    python benches/graph_prune.py --source FILE.py:NAME --weights W [--state-key K] \
        [--norm MEAN/STD|none] --data-dir DIR [--test-limit N] --module MODULE \
        --trigger SIZE,ROW,COL,AMPLITUDE,TARGET --std STD [--mode zero|mean]

Written the obvious way, with forward hooks: the order is the module's output
channels by their mean activation over the clean test images (the spatial mean
per image, then the mean over images), lowest first, ties by channel; then for k
from 0 to every channel, a hook replaces the first k channels of the order (by 0,
or by their mean output over the clean images at each position) and the model
runs over the clean and the triggered images. The triggered images are the raw
pixels with AMPLITUDE·STD added at the lit pixels of the study's SIZE×SIZE
checkerboard at ROW, COL (graph_pytorch.py's mask). Prints one JSON object:
    {"order": [...], "points": [{"pruned": k, "clean_acc": pct, "poison_acc": pct}, ...]}
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
sys.path.insert(0, HERE)

from graph_python import load_model, model_arguments, normalise, parse_norm, read_mnist, run_main  # noqa: E402
from graph_pytorch import trigger_mask  # noqa: E402

import torch  # noqa: E402

BATCH = 500


def outputs(model, module, x, norm):
    """The module's output over `x`, batch by batch, concatenated."""
    seen = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().to(torch.float64)))
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], BATCH):
                model(normalise(x[i:i + BATCH], norm))
    finally:
        handle.remove()
    return torch.cat(seen)


def predictions(model, module, x, norm, units, replacement):
    def hook(_m, _i, out):
        out = out.clone()
        if units:
            out[:, units] = replacement[units].unsqueeze(0).expand_as(out[:, units]).to(out.dtype)
        return out

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return torch.cat([model(normalise(x[i:i + BATCH], norm)).argmax(1) for i in range(0, x.shape[0], BATCH)])
    finally:
        handle.remove()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model_arguments(p)
    p.add_argument("--module", required=True)
    p.add_argument("--trigger", required=True)
    p.add_argument("--std", type=float, required=True)
    p.add_argument("--mode", choices=["zero", "mean"], default="zero")
    args = p.parse_args()

    torch.set_num_threads(1)
    norm = parse_norm(args.norm)
    model = load_model(args.source, args.weights, args.state_key)[0].eval()
    module = model.get_submodule(args.module)
    size, row, col, amplitude, target = args.trigger.split(",")
    clean, labels = read_mnist(args.data_dir, "t10k", args.test_limit)
    triggered = clean + trigger_mask(int(size), int(row), int(col), float(amplitude)) * args.std
    n, target = len(labels), int(target)

    activation = outputs(model, module, clean, norm)
    per_image = activation.flatten(2).mean(2) if activation.dim() > 2 else activation
    score = per_image.mean(0).tolist()
    order = sorted(range(len(score)), key=lambda u: (score[u], u))
    mean = activation.mean(0).to(torch.float32)
    replacement = torch.zeros_like(mean) if args.mode == "zero" else mean

    points = []
    for k in range(len(order) + 1):
        units = order[:k]
        clean_pred = predictions(model, module, clean, norm, units, replacement)
        trig_pred = predictions(model, module, triggered, norm, units, replacement)
        points.append({
            "pruned": k,
            "clean_acc": 100.0 * (clean_pred == labels).sum().item() / n,
            "poison_acc": 100.0 * (trig_pred == target).sum().item() / n,
        })
    print(json.dumps({"order": order, "points": points}))


if __name__ == "__main__":
    run_main(main)
