"""Neural Cleanse on a graph in plain PyTorch, every label batched as trojanscope
does it: the reference its graph recovery is checked against
(tests/graph_cleanse.rs), and a timer.

    python benches/graph_cleanse.py (--source FILE.py:NAME | --preactresnet18 WIDTH) --weights W \
        [--state-key K] [--norm MEAN/STD|none] [--threads T] \
        (--step IN.safetensors OUT.safetensors | --time --data-dir DIR [--images 2000] [--epochs 1])

- step: IN holds `mask` [L, 1, H, W] and `pattern` [L, C, H, W] in [0, 1], raw
  `images` [B, C, H, W], `labels` and `costs` [L]. The masks and patterns are
  tanh-parametrised as the reference does; one Adam step (lr 0.1, betas 0.5, 0.9)
  of the summed loss (each label's cross-entropy on the batch stamped with its
  trigger, plus its cost times its mask's L1) writes the new masks and patterns
  and the loss to OUT.
- time: that step over the first N training images in batches of 32, for every
  label at once (costs 0), for E epochs; prints the seconds as JSON.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))

from graph_pytorch import add_model_args, model_of  # noqa: E402
from graph_python import normalise, parse_norm, read_mnist, read_safetensors, run_main, write_safetensors  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

EPS = 1e-7  # keeps atanh finite at the ends of [0, 1]


def to_tanh(v):
    return torch.atanh((v - 0.5) * (2 - EPS))


def from_tanh(t):
    return torch.tanh(t) / (2 - EPS) + 0.5


class Cleanse:
    """Every label's mask and pattern, one Adam over both."""

    def __init__(self, model, norm, labels, mask, pattern):
        self.model, self.norm, self.labels = model, norm, labels
        self.a = to_tanh(mask).requires_grad_(True)
        self.b = to_tanh(pattern).requires_grad_(True)
        self.opt = torch.optim.Adam([self.a, self.b], lr=0.1, betas=(0.5, 0.9))

    def step(self, x, costs):
        m, p = from_tanh(self.a), from_tanh(self.b)
        stamped = ((1 - m).unsqueeze(1) * x.unsqueeze(0) + (m * p).unsqueeze(1)).flatten(0, 1)
        if self.norm is not None:
            stamped = normalise(stamped, self.norm)
        targets = self.labels.repeat_interleave(len(x))
        ce = nn.functional.cross_entropy(self.model(stamped), targets, reduction="none").view(len(self.labels), -1)
        loss = (ce.mean(1) + costs * m.sum((1, 2, 3))).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--step", nargs=2, metavar=("IN", "OUT"))
    ap.add_argument("--time", action="store_true")
    ap.add_argument("--data-dir")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    model = model_of(args)
    for w in model.parameters():
        w.requires_grad_(False)
    norm = parse_norm(args.norm)
    if args.step:
        given = read_safetensors(args.step[0])
        labels = given["labels"].to(torch.int64)
        cleanse = Cleanse(model, norm, labels, given["mask"], given["pattern"])
        loss = cleanse.step(given["images"], given["costs"])
        with torch.no_grad():
            out = {"mask": from_tanh(cleanse.a), "pattern": from_tanh(cleanse.b), "loss": torch.tensor([loss])}
        write_safetensors(out, args.step[1])
        return
    x, _ = read_mnist(args.data_dir, "train", args.images)
    labels = torch.arange(10)
    h, w = x.shape[2], x.shape[3]
    cleanse = Cleanse(model, norm, labels, torch.rand(10, 1, h, w), torch.rand(10, x.shape[1], h, w))
    costs = torch.zeros(10)
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            cleanse.step(x[order[i: i + 32]], costs)
    print(json.dumps({"seconds": time.perf_counter() - start, "images": len(x), "epochs": args.epochs,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    run_main(main)
