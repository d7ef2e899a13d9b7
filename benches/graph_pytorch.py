"""An expert's PyTorch loops for an imported graph, timed beside trojanscope's by
`trojanscope bench` on a graph run (docs/speed.md):

    python benches/graph_pytorch.py (--source FILE.py:NAME | --preactresnet18 WIDTH) --weights W [--state-key K] \
        [--norm MEAN/STD|none] --data-dir DIR [--test-limit N] --node MODULE \
        --trigger SIZE,ROW,COL,AMPLITUDE,TARGET --std STD [--batch 1000] [--variants 4] \
        [--memory-format nchw|channels_last] [--threads T]

- eval: the module over the test set (clean, then triggered), in batches, under
  torch.inference_mode.
- sweep: each output channel of MODULE zeroed alone. As an expert writes it for
  speed: the module is traced with torch.fx and split at MODULE into a prefix
  (input → MODULE's output and every earlier value used later, e.g. a residual
  shortcut) and a suffix; the prefix runs once per batch, the suffix once per
  VARIANTS units with the values repeated along the batch (variants batched).
The test set is the one trojanscope evaluates: raw pixels, and the same images with
the study's trigger (AMPLITUDE·STD added at the lit pixels of a SIZE×SIZE
checkerboard at ROW, COL). Prints one JSON object with times (process CPU and wall)
and per-unit metrics, so the numbers can be checked equal to trojanscope's.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))

from graph_python import fail, load_model, normalise, parse_norm, read_mnist, read_safetensors, run_main  # noqa: E402

import torch  # noqa: E402
import torch.fx  # noqa: E402


def trigger_mask(size, row, col, amplitude, side=28):
    mask = torch.zeros(1, 1, side, side)
    for r in range(row, row + size):
        for c in range(col, col + size):
            if (r + c) % 2 == 0:
                mask[0, 0, r, c] = amplitude
    return mask


def preactresnet18(width, weights):
    """BackdoorBench's code (the test fixture's copy) at `width`, one input channel,
    with a safetensors state dict trojanscope wrote (no batch counters)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "graph"))
    from preact import PreActBlock, PreActResNet
    model = PreActResNet(PreActBlock, [2, 2, 2, 2], num_classes=10, in_channels=1, width=width)
    missing, unexpected = model.load_state_dict(read_safetensors(weights), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        fail(f"{weights} does not fit PreActResNet-18 at width {width}: missing {missing}, unexpected {unexpected}")
    return model.eval()


def add_model_args(ap):
    """The flags that say how to rebuild the model (shared with graph_cleanse.py)."""
    ap.add_argument("--source")
    ap.add_argument("--preactresnet18", type=int, metavar="WIDTH",
                    help="BackdoorBench's PreActResNet-18 at this width (a model trojanscope trained from its preset)")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--state-key")
    ap.add_argument("--norm", default="none")
    ap.add_argument("--threads", type=int)


def model_of(args):
    """The model the flags of `add_model_args` name, in eval mode, on `--threads` threads."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.preactresnet18:
        return preactresnet18(args.preactresnet18, args.weights)
    return load_model(args.source, args.weights, args.state_key)[0].eval()


def split_at(model, site):
    """Two GraphModules: input → the values live after `site`, and those → logits."""
    gm = torch.fx.symbolic_trace(model)
    nodes = list(gm.graph.nodes)
    at = next((i for i, n in enumerate(nodes) if n.op == "call_module" and n.target == site), None)
    if at is None:
        fail(f"no module {site!r} in the traced graph")
    position = {n: i for i, n in enumerate(nodes)}
    live = [n for n in nodes[: at + 1] if n is nodes[at] or any(position[u] > at for u in n.users)]
    head, env = torch.fx.Graph(), {}
    for n in nodes[: at + 1]:
        env[n] = head.node_copy(n, lambda a: env[a])
    head.output(tuple(env[n] for n in live))
    tail, env2 = torch.fx.Graph(), {}
    for n in live:
        env2[n] = tail.placeholder(n.name)
    for n in nodes[at + 1:]:
        if n.op == "output":
            tail.output(env2[n.args[0]])
        else:
            env2[n] = tail.node_copy(n, lambda a: env2[a])
    return torch.fx.GraphModule(gm, head), torch.fx.GraphModule(gm, tail), live.index(nodes[at])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--test-limit", type=int)
    ap.add_argument("--node", required=True)
    ap.add_argument("--trigger", required=True)
    ap.add_argument("--std", type=float, required=True)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--memory-format", choices=["nchw", "channels_last"], default="nchw")
    ap.add_argument("--skip-sweep", action="store_true")
    args = ap.parse_args()
    model = model_of(args)
    norm = parse_norm(args.norm)
    size, row, col, amplitude, target = args.trigger.split(",")
    mask = trigger_mask(int(size), int(row), int(col), float(amplitude)) * args.std
    raw, labels = read_mnist(args.data_dir, "t10k", args.test_limit)
    x = torch.cat([raw, raw + mask])
    if norm is not None:
        x = normalise(x, norm)
    layout = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=layout)
    n, target = len(labels), int(target)

    def metrics(pred):
        clean, trig = pred[:n], pred[n:]
        return {
            "clean_acc": 100.0 * (clean == labels).sum().item() / n,
            "poison_acc": 100.0 * (trig == target).sum().item() / n,
        }

    out = {"memory_format": args.memory_format, "batch": args.batch, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        cpu, wall = time.process_time(), time.perf_counter()
        pred = torch.cat([model(b.contiguous(memory_format=layout)).argmax(1) for b in x.split(args.batch)])
        out.update(eval_cpu_s=time.process_time() - cpu, eval_wall_s=time.perf_counter() - wall, eval=metrics(pred))
        if args.skip_sweep:
            print(json.dumps(out))
            return
        head, tail, site = split_at(model, args.node)
        cpu, wall = time.process_time(), time.perf_counter()
        preds = None
        for b in x.split(args.batch):
            values = head(b.contiguous(memory_format=layout))
            channels = values[site].shape[1]
            if preds is None:
                preds = [[] for _ in range(channels)]
            for first in range(0, channels, args.variants):
                units = list(range(first, min(channels, first + args.variants)))
                v = len(units)
                repeated = [t.repeat(v, *([1] * (t.dim() - 1))) for t in values]
                h = repeated[site].view(v, b.shape[0], *values[site].shape[1:])
                for k, u in enumerate(units):
                    h[k, :, u] = 0
                logits = tail(*repeated).view(v, b.shape[0], -1)
                for k, u in enumerate(units):
                    preds[u].append(logits[k].argmax(1))
        out.update(sweep_cpu_s=time.process_time() - cpu, sweep_wall_s=time.perf_counter() - wall)
        out["sweep"] = [metrics(torch.cat(p)) for p in preds]
    print(json.dumps(out))


if __name__ == "__main__":
    run_main(main)
