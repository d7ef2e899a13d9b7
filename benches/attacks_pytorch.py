"""Plain PyTorch reference for the attacks' image functions (docs/attacks.md),
written from BackdoorBench's formulas, on raw pixels in [0, 1]:

    python benches/attacks_pytorch.py --data-dir DIR --test-limit N --out FILE ATTACK [options]
    python benches/attacks_pytorch.py --data-dir DIR [--train-limit N] [--test-limit N] bench [--repeat R]

ATTACK and its options:
    badnets --size S [--pos ROW,COL] [--pattern solid|checkerboard] [--mode replace|add] [--value V]
    blended --alpha A --noise-seed SEED
    sig --delta D --freq F
    wanet --k K --s S --seed SEED
Writes the triggered images (float32, little-endian, [N, 1, 28, 28] row-major) to
FILE and prints {"images": N, "seconds": t}. The patch is bottom-right unless
--pos is given; the checkerboard is lit where row + column is even (image
coordinates); SIG is x + D·sin(2π·j·F/W) along columns, clipped to [0, 1];
WaNet's grid is BackdoorBench's imageWarp with grid_rescale 1.

`bench` times each attack at these defaults as BackdoorBench prepares its data
(median of R runs, in seconds): poisoning 10 % of the training set (drawn from
the images not of target 0, SIG: only target 0's, labels kept; WaNet: twice as
many other images in noise mode, the grid plus a random field of at most one
pixel) and triggering the whole test set; it prints
{"badnets": {"poison_s": t, "test_s": t}, ...}.
"""
import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))

from graph_python import read_mnist, run_main  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def badnets(x, a):
    n, c, h, w = x.shape
    s = a.size
    row, col = (int(v) for v in a.pos.split(",")) if a.pos else (h - s, w - s)
    pattern = torch.ones(s, s)
    if a.pattern == "checkerboard":
        pattern = torch.tensor([[float((row + r + col + q) % 2 == 0) for q in range(s)] for r in range(s)])
    y = x.clone()
    region = y[:, :, row:row + s, col:col + s]
    lit = pattern > 0
    if a.mode == "replace":
        region[:, :, lit] = a.value * pattern[lit]
    else:
        region += a.value * pattern
        y = y.clamp(0, 1)
    return y


def blended(x, a):
    torch.manual_seed(a.noise_seed)
    image = torch.rand(1, x.shape[1], x.shape[2], x.shape[3])
    return (1 - a.alpha) * x + a.alpha * image


def sig(x, a):
    w = x.shape[3]
    pattern = torch.tensor([a.delta * math.sin(2 * math.pi * j * a.freq / w) for j in range(w)])
    return (x + pattern.view(1, 1, 1, w)).clamp(0, 1)


def wanet_grid(h, a):
    torch.manual_seed(a.seed)
    ins = torch.rand(1, 2, a.k, a.k) * 2 - 1
    ins = ins / torch.mean(torch.abs(ins))
    noise_grid = F.interpolate(ins, size=h, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    array1d = torch.linspace(-1, 1, steps=h)
    rows, cols = torch.meshgrid(array1d, array1d, indexing="ij")
    identity_grid = torch.stack((cols, rows), 2)[None, ...]
    return torch.clamp(identity_grid + a.s * noise_grid / h, -1, 1)


def wanet(x, a):
    grid = wanet_grid(x.shape[2], a)
    return F.grid_sample(x, grid.repeat(x.shape[0], 1, 1, 1), align_corners=True)


def wanet_noise_mode(x, a):
    """WaNet's cross images: the grid plus a random field of at most one pixel."""
    n, h = x.shape[0], x.shape[2]
    grid = wanet_grid(h, a).repeat(n, 1, 1, 1)
    grid = torch.clamp(grid + (torch.rand(n, h, h, 2) * 2 - 1) / h, -1, 1)
    return F.grid_sample(x, grid, align_corners=True)


ATTACKS = {"badnets": badnets, "blended": blended, "sig": sig, "wanet": wanet}
RATIO, TARGET = 0.1, 0


def poison_training_set(x, y, attack, a):
    """10 % of the set triggered and relabelled to the target (SIG: clean-label)."""
    clean_label = attack == "sig"
    pool = ((y == TARGET) if clean_label else (y != TARGET)).nonzero().flatten()
    chosen = pool[torch.randperm(len(pool))[:round(RATIO * len(y))]]
    x, y = x.clone(), y.clone()
    x[chosen] = ATTACKS[attack](x[chosen], a)
    if not clean_label:
        y[chosen] = TARGET
    if attack == "wanet":
        rest = torch.ones(len(y), dtype=torch.bool)
        rest[chosen] = False
        rest = rest.nonzero().flatten()
        cross = rest[torch.randperm(len(rest))[:2 * len(chosen)]]
        x[cross] = wanet_noise_mode(x[cross], a)
    return x, y


def median_seconds(repeat, f):
    times = []
    for _ in range(max(repeat, 1)):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench(a, parser):
    train_x, train_y = read_mnist(a.data_dir, split="train", limit=a.train_limit)
    test_x, _ = read_mnist(a.data_dir, limit=a.test_limit)
    times = {}
    for attack in ATTACKS:
        defaults = parser.parse_args(["--data-dir", "-", attack])
        times[attack] = {
            "poison_s": median_seconds(a.repeat, lambda: poison_training_set(train_x, train_y, attack, defaults)),
            "test_s": median_seconds(a.repeat, lambda: ATTACKS[attack](test_x, defaults)),
        }
    print(json.dumps(times))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--out")
    # What `trojanscope bench` passes every script (the pixels are raw whatever the dataset).
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--threads", type=int, default=None)
    sub = p.add_subparsers(dest="attack", required=True)
    b = sub.add_parser("badnets")
    b.add_argument("--size", type=int, default=3)
    b.add_argument("--pos", default=None)
    b.add_argument("--pattern", default="solid", choices=["solid", "checkerboard"])
    b.add_argument("--mode", default="replace", choices=["replace", "add"])
    b.add_argument("--value", type=float, default=1.0)
    bl = sub.add_parser("blended")
    bl.add_argument("--alpha", type=float, default=0.2)
    bl.add_argument("--noise-seed", type=int, default=0)
    s = sub.add_parser("sig")
    s.add_argument("--delta", type=float, default=40 / 255)
    s.add_argument("--freq", type=float, default=6)
    wa = sub.add_parser("wanet")
    wa.add_argument("--k", type=int, default=4)
    wa.add_argument("--s", type=float, default=0.5)
    wa.add_argument("--seed", type=int, default=0)
    sub.add_parser("bench").add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.attack == "bench":
        return bench(a, p)
    if a.out is None:
        p.error("--out FILE is needed for one attack's images")
    x, _ = read_mnist(a.data_dir, limit=a.test_limit)
    start = time.perf_counter()
    y = ATTACKS[a.attack](x, a)
    seconds = time.perf_counter() - start
    with open(a.out, "wb") as f:
        f.write(bytes(y.contiguous().to(torch.float32).untyped_storage()))
    print(json.dumps({"images": int(y.shape[0]), "seconds": seconds}))


if __name__ == "__main__":
    run_main(main)
