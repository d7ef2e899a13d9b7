"""Neural Cleanse trigger recovery in plain PyTorch, timed: the reference that
`trojanscope` Neural Cleanse is checked and benchmarked against.

It follows bolunwang/backdoor's visualizer.py (Wang et al., S&P 2019): for each
label L in turn, optimise a mask m and pattern p (both 28×28, tanh-parametrised)
so that stamping x' = (1−m)·x + m·p sends the frozen network to L, with an L1
penalty on m whose weight `cost` the reference's schedule adapts per epoch. The
L1 norms of the labels' kept masks then go through the one-sided MAD outlier test.

Usage: python benches/neural_cleanse.py --checkpoint PATH --data-dir data/mnist
       [--threads N] [--images 2000] [--epochs 10] [--batch-size 32] [--seed 0]
       [--test-images 2000] [--labels 0,1,...,9]
Prints one JSON object on stdout; progress goes to stderr.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import torch
from torch import nn

from study_pytorch import NORMALISATION, add_dataset_arg, make_net, read_idx

EPS = 1e-7  # keeps atanh finite at the ends of [0, 1]
INIT_COST, PATIENCE, THRESHOLD = 1e-3, 5, 0.99
COST_UP, COST_DOWN = 2.0, 2.0 ** 1.5
EARLY_STOP_THRESHOLD, EARLY_STOP_PATIENCE = 0.99, 2 * PATIENCE


def read_safetensors(path):
    """A minimal safetensors reader (F32 only), so that only torch is needed."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8: 8 + n])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{name}: dtype {info['dtype']} is not supported")
        start, end = info["data_offsets"]
        data = bytearray(raw[8 + n + start: 8 + n + end])
        tensors[name] = torch.frombuffer(data, dtype=torch.float32).reshape(info["shape"])
    return tensors


def load_net(path):
    net = make_net()
    state = {k[len("net."):]: v for k, v in read_safetensors(path).items() if k.startswith("net.")}
    net.load_state_dict(state)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def to_tanh(v):
    return torch.atanh((v - 0.5) * (2 - EPS))


def from_tanh(t):
    return torch.tanh(t) / (2 - EPS) + 0.5


# The dataset's (mean, std), set from --dataset in main().
NORM = NORMALISATION["mnist"]


def stamp(x_raw, mask, pattern):
    """Stamp in raw [0, 1] space, then normalise for the network."""
    mean, std = NORM
    return ((1 - mask) * x_raw + mask * pattern - mean) / std


def reverse_engineer(net, x, label, epochs, batch_size):
    """One label's optimisation, with the reference's cost schedule and early stop."""
    a = to_tanh(torch.rand(28, 28)).requires_grad_(True)
    b = to_tanh(torch.rand(28, 28)).requires_grad_(True)
    opt = torch.optim.Adam([a, b], lr=0.1, betas=(0.5, 0.9))
    cost, best_l1, best, best_success = 0.0, math.inf, None, None
    early_stop_best, early_stop_counter = math.inf, 0
    cost_set_counter = cost_up_counter = cost_down_counter = 0
    cost_up_flag = cost_down_flag = False
    epochs_run = 0
    for epoch in range(epochs):
        epochs_run += 1
        order = torch.randperm(len(x))
        hits, l1_sum, steps = 0, 0.0, 0
        for i in range(0, len(x), batch_size):
            xb = x[order[i: i + batch_size]]
            m, p = from_tanh(a), from_tanh(b)
            logits = net(stamp(xb, m, p))
            l1 = m.abs().sum()
            loss = nn.functional.cross_entropy(logits, torch.full((len(xb),), label)) + cost * l1
            opt.zero_grad()
            loss.backward()
            opt.step()
            # Both metrics come from this step's forward, i.e. before its update.
            hits += (logits.argmax(1) == label).sum().item()
            l1_sum += l1.item()
            steps += 1
        success, mean_l1 = hits / len(x), l1_sum / steps

        # The end-of-epoch bookkeeping, in the reference's order.
        if success >= THRESHOLD and mean_l1 < best_l1:
            best_l1, best_success = mean_l1, success
            with torch.no_grad():
                best = (from_tanh(a).clone(), from_tanh(b).clone())
        if best_l1 < math.inf:
            early_stop_counter = early_stop_counter + 1 if best_l1 >= EARLY_STOP_THRESHOLD * early_stop_best else 0
        early_stop_best = min(best_l1, early_stop_best)
        print(f"label {label} epoch {epoch}: cost {cost:.2e} success {success:.4f} l1 {mean_l1:.2f} "
              f"best {best_l1:.2f}", file=sys.stderr)
        if cost_down_flag and cost_up_flag and early_stop_counter >= EARLY_STOP_PATIENCE:
            break
        if cost == 0 and success >= THRESHOLD:
            cost_set_counter += 1
            if cost_set_counter >= PATIENCE:
                cost, cost_up_counter, cost_down_counter = INIT_COST, 0, 0
                cost_up_flag = cost_down_flag = False
        else:
            cost_set_counter = 0
        if success >= THRESHOLD:
            cost_up_counter, cost_down_counter = cost_up_counter + 1, 0
        else:
            cost_up_counter, cost_down_counter = 0, cost_down_counter + 1
        if cost_up_counter >= PATIENCE:
            cost_up_counter, cost, cost_up_flag = 0, cost * COST_UP, True
        elif cost_down_counter >= PATIENCE:
            cost_down_counter, cost, cost_down_flag = 0, cost / COST_DOWN, True

    if best is None:  # never reached the threshold: fall back to the final mask/pattern
        with torch.no_grad():
            best = (from_tanh(a).clone(), from_tanh(b).clone())
        best_success = success  # best_l1 stays inf: reported as null
    return best, best_l1, best_success, epochs_run


def median(values):
    """numpy.median: the mean of the two middle values for an even count."""
    s, n = sorted(values), len(values)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-dir", default="data/mnist")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--images", type=int, default=2000, help="optimise on the first N training images")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-images", type=int, default=2000, help="held-out success on the first N test images")
    ap.add_argument("--labels", default=",".join(str(i) for i in range(10)))
    add_dataset_arg(ap)
    a = ap.parse_args()
    global NORM
    NORM = NORMALISATION[a.dataset]
    t_total = time.perf_counter()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    labels = [int(s) for s in a.labels.split(",")]
    net = load_net(a.checkpoint)
    x = (read_idx(a.data_dir, "train-images-idx3-ubyte")[: a.images].float() / 255.0).unsqueeze(1)
    test_x = (read_idx(a.data_dir, "t10k-images-idx3-ubyte")[: a.test_images].float() / 255.0).unsqueeze(1)
    test_y = read_idx(a.data_dir, "t10k-labels-idx1-ubyte")[: a.test_images].long()

    optimise_s, results = 0.0, []
    for label in labels:
        t = time.perf_counter()
        (mask, pattern), best_mean_l1, train_success, epochs_run = reverse_engineer(
            net, x, label, a.epochs, a.batch_size)
        optimise_s += time.perf_counter() - t
        # As the reference's mad_outlier_detection.py does, the norm tested is the
        # kept mask's own sum, not the schedule's epoch mean (best_mean_l1).
        l1 = mask.abs().sum().item()
        others = test_x[test_y != label]
        with torch.no_grad():
            held_out = (net(stamp(others, mask, pattern)).argmax(1) == label).float().mean().item()
        print(f"label {label}: l1 {l1:.2f} held-out success {100 * held_out:.2f}%", file=sys.stderr)
        results.append({"label": label, "l1": l1,
                        "best_mean_l1": best_mean_l1 if math.isfinite(best_mean_l1) else None,
                        "success": 100.0 * held_out, "train_success": 100.0 * train_success,
                        "epochs_run": epochs_run})

    # One-sided MAD outlier test (the reference's mad_outlier_detection.py).
    l1s = [r["l1"] for r in results]
    med = median(l1s)
    mad = 1.4826 * median([abs(v - med) for v in l1s])
    for r in results:
        r["anomaly_index"] = (med - r["l1"]) / mad if r["l1"] < med and mad > 0 else 0.0
        r["flagged"] = r["anomaly_index"] > 2
    print(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "optimise_s": optimise_s, "total_s": time.perf_counter() - t_total,
        "labels": results,
        "flagged": [r["label"] for r in results if r["flagged"]],
        "smallest_l1_label": min(results, key=lambda r: r["l1"])["label"],
    }))


if __name__ == "__main__":
    main()
