"""Plain PyTorch reference for the attacks' image functions (docs/attacks.md),
written from BackdoorBench's formulas, on raw pixels in [0, 1]:

    python benches/attacks_pytorch.py --data-dir DIR --test-limit N --out FILE ATTACK [options]

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


def wanet(x, a):
    h = x.shape[2]
    torch.manual_seed(a.seed)
    ins = torch.rand(1, 2, a.k, a.k) * 2 - 1
    ins = ins / torch.mean(torch.abs(ins))
    noise_grid = F.interpolate(ins, size=h, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    array1d = torch.linspace(-1, 1, steps=h)
    rows, cols = torch.meshgrid(array1d, array1d, indexing="ij")
    identity_grid = torch.stack((cols, rows), 2)[None, ...]
    grid = torch.clamp(identity_grid + a.s * noise_grid / h, -1, 1)
    return F.grid_sample(x, grid.repeat(x.shape[0], 1, 1, 1), align_corners=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--out", required=True)
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
    a = p.parse_args()
    x, _ = read_mnist(a.data_dir, limit=a.test_limit)
    start = time.perf_counter()
    y = {"badnets": badnets, "blended": blended, "sig": sig, "wanet": wanet}[a.attack](x, a)
    seconds = time.perf_counter() - start
    with open(a.out, "wb") as f:
        f.write(bytes(y.contiguous().to(torch.float32).untyped_storage()))
    print(json.dumps({"images": int(y.shape[0]), "seconds": seconds}))


if __name__ == "__main__":
    run_main(main)
