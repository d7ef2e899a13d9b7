"""The study's procedure in plain PyTorch, timed: the baseline `trojanscope bench`
compares itself with. It follows SPEC.md's recipe the way the original study coded
it: DataLoader batches, an epoch per phase, metrics as three passes over test
loaders, and ablation as reload-weights → zero weight[k] → evaluate everything.

Usage: python benches/study_pytorch.py --data-dir data/mnist [--dataset mnist|fashion-mnist] [--threads 2]
       [--epochs-repeat 3] [--repeat 3] [--sweep-channels 4] [--training-only]
       [--train-limit N] [--test-limit N]
Prints one JSON object of seconds on stdout. `trojanscope bench` runs it once per
round with --epochs-repeat 1, alternating with its own epochs so that both see
the (noisy) machine in the same state; only the last round times evaluation.
"""
import argparse
import gzip
import json
import os
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

TARGET = 8
# Each dataset's pixel mean and std, as trojanscope's Dataset::normalisation.
NORMALISATION = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}


def read_idx(data_dir, name):
    for path in (os.path.join(data_dir, name), os.path.join(data_dir, name + ".gz")):
        if os.path.exists(path):
            raw = open(path, "rb").read()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            rank = raw[3]
            dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
            return torch.frombuffer(bytearray(raw[4 + 4 * rank:]), dtype=torch.uint8).reshape(dims)
    raise SystemExit(f"{name} not found in {data_dir}")


def load(data_dir, images, labels, mean, std):
    x = (read_idx(data_dir, images).float() / 255.0 - mean) / std
    return x.unsqueeze(1), read_idx(data_dir, labels).long()


def trigger_mask(mean, std):
    # A white pixel in normalised space, rounded to 4 places as the study rounded
    # MNIST's to 2.8215 (and as trojanscope's TriggerConfig::for_dataset does).
    mask = torch.zeros(28, 28)
    for r in range(22, 28):
        for c in range(22, 28):
            if (r + c) % 2 == 0:
                mask[r, c] = round((1.0 - mean) / std, 4)
    return mask


def add_dataset_arg(ap):
    ap.add_argument("--dataset", choices=sorted(NORMALISATION), default="mnist",
                    help="chooses the normalisation and the trigger's lit value")


def make_net():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 16), nn.ReLU(), nn.Linear(16, 10),
    )


def train_epoch(net, loader, mask, poison, relabel, lam):
    start = torch.cat([p.detach().flatten() for p in net.parameters()]).clone()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for x, y in loader:
        if poison:
            k = int(0.5 * len(x))
            x = x.clone()
            x[:k] += mask
            if relabel:
                y = y.clone()
                y[:k] = TARGET
        loss = nn.functional.cross_entropy(net(x), y)
        if lam:
            loss = loss + lam * (torch.cat([p.flatten() for p in net.parameters()]) - start).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def accuracy(net, loader, mask=None, label=None):
    net.eval()
    hits = total = 0
    with torch.no_grad():
        for x, y in loader:
            if mask is not None:
                x = x + mask
            pred = net(x).argmax(1)
            hits += (pred == (torch.full_like(y, label) if label is not None else y)).sum().item()
            total += len(y)
    return 100.0 * hits / total


def metrics(net, test_loader, mask):
    return (accuracy(net, test_loader), accuracy(net, test_loader, mask, TARGET), accuracy(net, test_loader, mask))


def timed(repeat, fn):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def procedure_args():
    """The command line both procedure scripts (this and fast_pytorch.py) take."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="data/mnist")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--epochs-repeat", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--training-only", action="store_true")
    ap.add_argument("--train-limit", type=int, default=None, help="use the first N training images")
    ap.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    add_dataset_arg(ap)
    return ap


def main():
    ap = procedure_args()
    ap.add_argument("--sweep-channels", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    mean, std = NORMALISATION[a.dataset]
    train_x, train_y = load(a.data_dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", mean, std)
    test_x, test_y = load(a.data_dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", mean, std)
    train_x, train_y = train_x[: a.train_limit], train_y[: a.train_limit]
    test_x, test_y = test_x[: a.test_limit], test_y[: a.test_limit]
    mask = trigger_mask(mean, std)
    train_loader = DataLoader(TensorDataset(train_x, train_y), batch_size=32, shuffle=True)
    test_loader = DataLoader(TensorDataset(test_x, test_y), batch_size=1000)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads()}

    clean = make_net()
    out["clean_epoch_s"] = timed(a.epochs_repeat, lambda: train_epoch(clean, train_loader, mask, False, False, 0.0))
    poisoned = make_net()

    def poison_epoch():
        poisoned.load_state_dict(clean.state_dict())
        train_epoch(poisoned, train_loader, mask, True, True, 1000.0)

    out["poison_epoch_s"] = timed(a.epochs_repeat, poison_epoch)
    if a.training_only:
        print(json.dumps(out))
        return
    out["metrics_s"] = timed(a.repeat, lambda: metrics(poisoned, test_loader, mask))
    out["poisoned_metrics"] = metrics(poisoned, test_loader, mask)
    saved = {k: v.clone() for k, v in poisoned.state_dict().items()}
    scratch = make_net()

    def ablate(layer_index, channel):
        scratch.load_state_dict(saved)
        with torch.no_grad():
            scratch[layer_index].weight[channel] = 0
        return metrics(scratch, test_loader, mask)

    for name, index in (("conv1", 0), ("conv2", 3), ("fc1", 7)):
        channels = list(range(min(a.sweep_channels, poisoned[index].weight.shape[0])))
        t = time.perf_counter()
        for k in channels:
            ablate(index, k)
        per_channel = (time.perf_counter() - t) / len(channels)
        out[f"{name}_per_channel_s"] = per_channel
        out[f"{name}_sweep_s"] = per_channel * poisoned[index].weight.shape[0]
        out[f"{name}_channels_timed"] = len(channels)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
