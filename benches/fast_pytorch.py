"""The study's procedure in PyTorch as an expert writing for speed would code it: the
second baseline beside `study_pytorch.py`, which follows the original study's (slow)
code. Same network, data, trigger and recipe (make_net, load and trigger_mask come from
study_pytorch.py, so the arithmetic is the same); what changes is how the work is
driven:
  layout     channels-last weights and activations, oneDNN's fast layout on CPU.
  training   tensor-sliced batches: one torch.randperm per epoch and x[idx] slices,
             no DataLoader; the parameter list and the L1 anchor's start vector are
             built once per epoch, gradients dropped with zero_grad(set_to_none=True).
  metrics    two inference_mode passes instead of three: clean images give
             clean_acc; triggered images give both asr (pred == 8) and poison_acc
             (pred == label) from the same predictions.
  ablation   no reload-zero-evaluate. Zeroing weight[k] of a layer (bias kept) makes
             its output unit k equal bias[k] everywhere, so each layer's output
             (pre-ReLU) is computed once per clean and once per triggered test image,
             and every unit's ablation is that cached output with unit k replaced by
             bias[k], run through the downstream layers only, as many units per
             batch as a memory bound allows. Every unit is timed (so --sweep-channels
             is accepted and ignored), the caches' construction included.
--check compares the batched sweep with reload-zero-evaluate (study_pytorch.py's
three-pass metrics on its DataLoader) for the first and last unit of each layer, and
the two-pass metrics with the three-pass ones, and exits non-zero on any difference.

Usage: python benches/fast_pytorch.py --data-dir data/mnist [--dataset mnist|fashion-mnist]
       [--threads 2] [--epochs-repeat 3] [--repeat 3] [--training-only (epochs and metrics)]
       [--train-limit N] [--test-limit N] [--check]
Prints one JSON object of seconds as the last line of stdout; --check reports on stderr.
"""
import json
import statistics
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import study_pytorch
from study_pytorch import NORMALISATION, TARGET, load, make_net, trigger_mask
BATCH, LR, LAMBDA, POISON_FRACTION = 32, 1e-3, 1000.0, 0.5
LAYERS = (("conv1", 0), ("conv2", 3), ("fc1", 7))  # name, index in make_net's Sequential
# Inference batch sizes, measured on CPU with one thread: 256-image batches ran the
# metrics and the conv sweeps 2-3x faster than 1000-image ones, and groups past
# ~32 MiB slowed the sweeps as much. Bigger activations fall out of cache, and glibc
# serves each allocation past its mmap threshold (32 MiB at most) with fresh pages,
# page-faulted in again on every call. So conv1 sweeps one unit per 256-image
# batch, conv2 four, fc1 all sixteen.
CHUNK = 256  # images per inference batch (and per sweep chunk)
GROUP_BYTES = 32 << 20  # bound on one group's batch of modified layer outputs


def make_fast_net():
    # Channels-last convolutions run about 1.5-2x faster on CPU (oneDNN's native
    # layout). With one input channel the images are already in that layout; the
    # activations follow the weights'.
    return make_net().to(memory_format=torch.channels_last)


def train_epoch(net, x, y, mask, poison):
    """study_pytorch.train_epoch's arithmetic (poison: first half of each batch
    triggered and relabelled TARGET, L1 anchor to the start weights), driven by slices."""
    params = list(net.parameters())
    start = torch.cat([p.detach().flatten() for p in params])
    opt = torch.optim.Adam(params, lr=LR)
    net.train()
    for idx in torch.randperm(len(x)).split(BATCH):
        xb, yb = x[idx], y[idx]  # advanced indexing copies, so poisoning in place leaves x, y intact
        if poison:
            k = int(POISON_FRACTION * len(idx))
            xb[:k] += mask
            yb[:k] = TARGET
        loss = nn.functional.cross_entropy(net(xb), yb)
        if poison:
            loss = loss + LAMBDA * (torch.cat([p.flatten() for p in params]) - start).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def percent(hits, total):
    return 100.0 * int(hits) / total  # the study's expression, on Python ints


def predict(net, x):
    return torch.cat([net(chunk).argmax(1) for chunk in x.split(CHUNK)])


def metrics(net, x, y, mask):
    """(clean_acc, asr, poison_acc) in %, from one clean and one triggered pass."""
    net.eval()
    with torch.inference_mode():
        clean, triggered = predict(net, x), predict(net, x + mask)
    n = len(y)
    return (percent((clean == y).sum(), n), percent((triggered == TARGET).sum(), n),
            percent((triggered == y).sum(), n))


def sweep(net, index, x, y, mask):
    """Metrics with each output unit k of net[index] ablated (weight[k] = 0), one row
    per unit: the layer's output, computed once per image, with unit k set to bias[k]
    and run through the downstream layers only. Images stream in chunks, so the
    cache is one chunk's and memory stays bounded at any test-set size."""
    net.eval()
    layer, upstream, downstream = net[index], net[: index + 1], net[index + 1:]
    units, n = layer.weight.shape[0], len(y)
    hits = torch.zeros(units, 3, dtype=torch.long)  # clean == y, triggered == TARGET, triggered == y
    with torch.inference_mode():
        for xc, yc in zip(x.split(CHUNK), y.split(CHUNK)):
            caches = (upstream(xc), upstream(xc + mask))
            per_unit = caches[0].numel() * caches[0].element_size()
            for ks in torch.arange(units).split(max(1, GROUP_BYTES // per_unit)):
                preds = []
                for cache in caches:
                    batch = cache.expand(len(ks), *cache.shape).clone()  # (group, chunk, unit, ...)
                    for g, k in enumerate(ks):
                        batch[g, :, k] = layer.bias[k]
                    preds.append(downstream(batch.flatten(0, 1)).argmax(1).view(len(ks), len(yc)))
                clean, triggered = preds
                hits[ks, 0] += (clean == yc).sum(1)
                hits[ks, 1] += (triggered == TARGET).sum(1)
                hits[ks, 2] += (triggered == yc).sum(1)
    return [tuple(percent(h, n) for h in row) for row in hits]


def check(net, x, y, mask, swept):
    """Reload-zero-evaluate with study_pytorch's three-pass metrics, against the fast
    paths. The scratch net is channels-last too, so only the sweep's shortcut differs."""
    loader = DataLoader(TensorDataset(x, y), batch_size=1000)
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    scratch = make_fast_net()
    cases = [("poisoned", None, metrics(net, x, y, mask), study_pytorch.metrics(net, loader, mask))]
    for name, index in LAYERS:
        for k in (0, net[index].weight.shape[0] - 1):
            scratch.load_state_dict(saved)
            with torch.no_grad():
                scratch[index].weight[k] = 0
            cases.append((name, k, swept[name][k], study_pytorch.metrics(scratch, loader, mask)))
    failed = False
    for name, k, fast, slow in cases:
        same = all(abs(f - s) <= 1e-6 for f, s in zip(fast, slow))
        failed |= not same
        unit = "" if k is None else f" unit {k}"
        print(f"check {name}{unit}: fast {fast} {'==' if same else '!='} slow {tuple(slow)}", file=sys.stderr)
    if failed:
        raise SystemExit("check FAILED: the fast path's metrics differ from reload-zero-evaluate's")
    print("check passed", file=sys.stderr)


def timed(repeat, fn):
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main():
    ap = study_pytorch.procedure_args()
    ap.add_argument("--sweep-channels", type=int, default=None, help="ignored: every unit is swept")
    ap.add_argument("--check", action="store_true", help="verify the sweep against reload-zero-evaluate")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    mean, std = NORMALISATION[a.dataset]
    train_x, train_y = load(a.data_dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", mean, std)
    test_x, test_y = load(a.data_dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", mean, std)
    train_x, train_y = train_x[: a.train_limit], train_y[: a.train_limit]
    test_x, test_y = test_x[: a.test_limit], test_y[: a.test_limit]
    mask = trigger_mask(mean, std)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads()}

    clean = make_fast_net()
    out["clean_epoch_s"], _ = timed(a.epochs_repeat, lambda: train_epoch(clean, train_x, train_y, mask, False))
    poisoned = make_fast_net()

    def poison_epoch():
        poisoned.load_state_dict(clean.state_dict())
        train_epoch(poisoned, train_x, train_y, mask, True)

    out["poison_epoch_s"], _ = timed(a.epochs_repeat, poison_epoch)
    # Timed in every run, training-only ones too: the bench alternates these rounds
    # with its own, so both sides' metrics meet the machine in the same state.
    out["metrics_s"], out["poisoned_metrics"] = timed(a.repeat, lambda: metrics(poisoned, test_x, test_y, mask))
    if a.training_only:
        print(json.dumps(out))
        return
    swept = {}
    for name, index in LAYERS:
        out[f"{name}_sweep_s"], swept[name] = timed(a.repeat, lambda: sweep(poisoned, index, test_x, test_y, mask))
        out[f"{name}_units"] = len(swept[name])
    if a.check:
        check(poisoned, test_x, test_y, mask, swept)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
