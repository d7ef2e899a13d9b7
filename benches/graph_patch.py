"""Plain PyTorch activation patching, the reference `trojanscope patch` on an
imported graph is tested against (docs/graph.md):

    python benches/graph_patch.py --source FILE.py:NAME --weights W [--state-key K] \
        [--norm MEAN/STD|none] --data-dir DIR [--test-limit N] \
        --trigger SIZE,ROW,COL,AMPLITUDE,TARGET --std STD --module MODULE \
        --direction denoise|noise|model [--donor-weights W2]

The test set is the one trojanscope evaluates: raw pixels, then the same images with
the study's trigger. denoise runs the triggered images with one output channel of
MODULE taken from the clean twin; noise runs the clean images with it taken from the
triggered twin; model runs every image with it taken from the donor model
(--donor-weights, the same module) on the same image. A forward hook on the donor's
MODULE records its output once; a forward hook on the receiver's MODULE overwrites
one channel with it, for each channel in turn. Prints one JSON object:
    {"baseline": EFFECT, "units": [EFFECT with "unit", ...]}
where EFFECT = {"target_rate": % of the patched images whose label is not the target
predicted as the target, "logit_diff": their mean logit(target) - logit(label)}.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))

from graph_python import fail, load_model, normalise, parse_norm, read_mnist, run_main  # noqa: E402
from graph_pytorch import trigger_mask  # noqa: E402

import torch  # noqa: E402

BATCH = 500


def module_of(model, name):
    try:
        return model.get_submodule(name)
    except AttributeError:
        fail(f"--module {name!r}: the model has no such module")


def outputs(model, module, x):
    """MODULE's output for every image of x, recorded by a forward hook."""
    kept = []
    handle = module_of(model, module).register_forward_hook(lambda _m, _i, out: kept.append(out.detach().clone()))
    try:
        with torch.no_grad():
            for b in x.split(BATCH):
                model(b)
    finally:
        handle.remove()
    return torch.cat(kept)


def logits(model, x, module=None, unit=None, values=None):
    """The logits of x; with MODULE's channel `unit` replaced by `values` (one row per image)."""
    rows = {"start": 0}

    def hook(_m, _i, out):
        out = out.clone()
        out[:, unit] = values[rows["start"]:rows["start"] + out.shape[0], unit]
        return out

    handle = module_of(model, module).register_forward_hook(hook) if module else None
    parts = []
    try:
        with torch.no_grad():
            for b in x.split(BATCH):
                parts.append(model(b))
                rows["start"] += b.shape[0]
    finally:
        if handle:
            handle.remove()
    return torch.cat(parts)


def effect(out, labels, target):
    counted = labels != target
    n = max(int(counted.sum()), 1)
    diff = out[:, target] - out.gather(1, labels.unsqueeze(1)).squeeze(1)
    hits = (out.argmax(1) == target) & counted
    return {
        "target_rate": 100.0 * float(hits.sum()) / n,
        "logit_diff": float((diff.double() * counted.double()).sum()) / n,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help="FILE.py:NAME")
    p.add_argument("--weights", required=True)
    p.add_argument("--donor-weights")
    p.add_argument("--state-key")
    p.add_argument("--norm", default="none")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--test-limit", type=int)
    p.add_argument("--trigger", required=True)
    p.add_argument("--std", type=float, required=True)
    p.add_argument("--module", required=True)
    p.add_argument("--direction", choices=["denoise", "noise", "model"], required=True)
    args = p.parse_args()
    if (args.direction == "model") != (args.donor_weights is not None):
        fail("--donor-weights is needed with (and only with) --direction model")
    torch.set_num_threads(1)
    receiver = load_model(args.source, args.weights, args.state_key)[0].eval()
    donor = load_model(args.source, args.donor_weights, args.state_key)[0].eval() if args.donor_weights else receiver
    norm = parse_norm(args.norm)
    size, row, col, amplitude, target = args.trigger.split(",")
    mask = trigger_mask(int(size), int(row), int(col), float(amplitude)) * args.std
    raw, labels = read_mnist(args.data_dir, "t10k", args.test_limit)
    clean, triggered = normalise(raw, norm), normalise(raw + mask, norm)
    runs, donor_images = {
        "denoise": (triggered, clean),
        "noise": (clean, triggered),
        "model": (torch.cat([clean, triggered]), torch.cat([clean, triggered])),
    }[args.direction]
    run_labels = torch.cat([labels, labels]) if args.direction == "model" else labels
    target = int(target)
    values = outputs(donor, args.module, donor_images)
    units = []
    for unit in range(values.shape[1]):
        out = logits(receiver, runs, args.module, unit, values)
        units.append({"unit": unit, **effect(out, run_labels, target)})
    print(json.dumps({"baseline": effect(logits(receiver, runs), run_labels, target), "units": units}))


if __name__ == "__main__":
    run_main(main)
