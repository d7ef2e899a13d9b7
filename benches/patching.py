"""Activation patching in plain PyTorch, timed: the reference that `trojanscope`'s
fast patching path is checked and benchmarked against.

One unit u of one layer at a time, a forward hook on the layer's block output (the
value the next layer reads: module 2 for conv1, 5 for conv2, 8 for fc1, 9 for fc2)
replaces channel/neuron u, per image, with a donor's value:
  --direction denoise  (necessity)   receivers: triggered images; donor: the clean twin.
  --direction noise    (sufficiency) receivers: clean images; donor: the triggered twin.
  --donor PATH         (model↔model) receivers: clean and triggered images; donor:
                       the donor model's block output on the same image.
The half that is not a receiver runs unpatched. Per unit: clean_acc (% clean images
right), poison_acc (% triggered images predicted TARGET), rehab_acc (% triggered
images right), and over the receivers whose label != TARGET, logit_diff (mean of
logit[TARGET] - logit[label]) and target_rate (% predicted TARGET).

Two plain loops (--method): `downstream` (default, what `trojanscope bench` times)
caches the layer's output on the receivers once and runs only the modules after it
per unit; `hooks` runs the whole network per unit with a forward hook. Both give the
same numbers; the donor's outputs are cached once per layer inside the timing.

Usage: python benches/patching.py --checkpoint PATH --data-dir data/mnist
       [--donor PATH] [--direction denoise|noise] [--layers conv1,conv2,fc1,fc2]
       [--units K] [--threads N] [--test-limit N] [--method downstream|hooks]
Prints one JSON object as the last line of stdout; progress goes to stderr.
"""
import argparse
import json
import os
import sys
import time

import torch

from study_pytorch import NORMALISATION, TARGET, add_dataset_arg, make_net, read_idx, load, trigger_mask  # noqa: F401
from neural_cleanse import load_net

BLOCK = {"conv1": 2, "conv2": 5, "fc1": 8, "fc2": 9}  # layer -> module whose output is patched
BATCH = 1000


def run(net, x, at=None, unit=None, donor=None):
    """Logits of x in batches; with `at`, unit `unit` of module `at`'s output comes from donor."""
    cur, logits, handle = {}, [], None
    if at is not None:
        def hook(module, inputs, out):
            out = out.clone()
            out[:, unit] = cur["donor"][:, unit]
            return out
        handle = net[at].register_forward_hook(hook)
    try:
        with torch.no_grad():
            for i in range(0, len(x), BATCH):
                if donor is not None:
                    cur["donor"] = donor[i: i + BATCH]
                logits.append(net(x[i: i + BATCH]))
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(logits)


def downstream(net, at, h, unit, donor):
    """Logits from module `at`'s output `h` with channel `unit` taken from `donor`:
    only the modules after `at` run (the layers before it do not change)."""
    rest, logits = net[at + 1:], []
    with torch.no_grad():
        for i in range(0, len(h), BATCH):
            hb = h[i: i + BATCH].clone()
            hb[:, unit] = donor[i: i + BATCH, unit]
            logits.append(rest(hb))
    return torch.cat(logits)


def block_output(net, at, x):
    """Module `at`'s output on every image of x."""
    acts = []
    handle = net[at].register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        run(net, x)
    finally:
        handle.remove()
    return torch.cat(acts)


def scores(clean_logits, trig_logits, receivers, y):
    cp, tp = clean_logits.argmax(1), trig_logits.argmax(1)
    keep = y != TARGET
    diffs = torch.cat([r[keep, TARGET] - r[keep].gather(1, y[keep, None])[:, 0] for r in receivers])
    hits = torch.cat([r[keep].argmax(1) == TARGET for r in receivers])
    return {
        "clean_acc": 100.0 * (cp == y).float().mean().item(),
        "poison_acc": 100.0 * (tp == TARGET).float().mean().item(),
        "rehab_acc": 100.0 * (tp == y).float().mean().item(),
        "logit_diff": diffs.mean().item() if len(diffs) else 0.0,
        "target_rate": 100.0 * hits.float().mean().item() if len(hits) else 0.0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-dir", default="data/mnist")
    ap.add_argument("--donor", default=None, help="donor model checkpoint (model↔model patching)")
    ap.add_argument("--direction", choices=["denoise", "noise"], default="denoise")
    ap.add_argument("--layers", default="conv1,conv2,fc1,fc2")
    ap.add_argument("--units", type=int, default=None, help="time only the first K units of each layer")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    ap.add_argument("--method", choices=["downstream", "hooks"], default="downstream",
                    help="downstream: cache the layer's output once and run only the layers after it "
                         "per unit (the faster plain loop); hooks: a full forward with a hook per unit")
    add_dataset_arg(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    net = load_net(a.checkpoint)
    donor_net = load_net(a.donor) if a.donor else None
    mean, std = NORMALISATION[a.dataset]
    x, y = load(a.data_dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", mean, std)
    x, y = x[: a.test_limit], y[: a.test_limit]
    xt = x + trigger_mask(mean, std)
    direction = "model" if donor_net is not None else a.direction

    # Unpatched logits: the baseline, and the half that is not patched (outside the timing).
    clean, trig = run(net, x), run(net, xt)
    base_receivers = {"denoise": [trig], "noise": [clean], "model": [clean, trig]}[direction]
    out = {
        "direction": direction,
        "receivers": {"denoise": "triggered images", "noise": "clean images",
                      "model": "clean and triggered images"}[direction],
        "donor": {"denoise": "clean twin", "noise": "triggered twin", "model": a.donor}[direction],
        "baseline": scores(clean, trig, base_receivers, y),
        "layers": {},
    }
    print(f"{direction}: baseline {out['baseline']}", file=sys.stderr)

    for layer in a.layers.split(","):
        at = BLOCK[layer]
        t = time.perf_counter()
        # Donor block outputs are cached once per layer, INSIDE the timing.
        if direction == "denoise":
            donors = [(xt, block_output(net, at, x))]
        elif direction == "noise":
            donors = [(x, block_output(net, at, xt))]
        else:
            donors = [(x, block_output(donor_net, at, x)), (xt, block_output(donor_net, at, xt))]
        if a.method == "downstream":
            receivers = [(block_output(net, at, rx), d) for rx, d in donors]
        cache_s = time.perf_counter() - t
        units = donors[0][1].shape[1]
        timed = units if a.units is None else min(a.units, units)
        rows = []
        for u in range(timed):
            if a.method == "downstream":
                patched = [downstream(net, at, h, u, d) for h, d in receivers]
            else:
                patched = [run(net, rx, at, u, d) for rx, d in donors]
            if direction == "denoise":
                row = scores(clean, patched[0], patched, y)
            elif direction == "noise":
                row = scores(patched[0], trig, patched, y)
            else:
                row = scores(patched[0], patched[1], patched, y)
            rows.append({"unit": u, **row})
            print(f"{layer} unit {u}: {row}", file=sys.stderr)
        seconds = time.perf_counter() - t
        out["layers"][layer] = {
            "method": a.method, "units": units, "units_timed": timed, "seconds": seconds,
            # The one-off donor cache is counted once; only the per-unit loop is scaled up.
            "seconds_layer": cache_s + (seconds - cache_s) / timed * units,
            "cache_seconds": cache_s, "rows": rows,
        }
        print(f"{layer}: {seconds:.2f}s for {timed}/{units} units", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
