"""Imports a PyTorch CNN into trojanscope's graph file (docs/graph.md).

    python scripts/import_graph.py --source FILE.py:NAME --weights WEIGHTS --out DIR \
        --input-shape C,H,W [--state-key KEY] [--norm MEAN/STD|none] [--trust-pickle] \
        [--probe-count 16] [--probe-seed 0]

Builds NAME from FILE.py, loads WEIGHTS (strict), traces the module with torch.fx and
translates every node into the ops of docs/graph.md. Writes DIR/graph.json,
DIR/weights.safetensors (float32, the weights the nodes use) and DIR/probe.safetensors
(`inputs` raw pixels in [0, 1], `logits` of PyTorch's module on them), only once
everything succeeded, then prints one line of JSON. Errors: `error: ...` on stderr,
exit status 2.

    python scripts/import_graph.py --weights-only --weights WEIGHTS --out DIR \
        [--state-key KEY] [--trust-pickle]

only reads the state dict (the same key finding, `module.` stripping and pickle
rules) and writes DIR/weights.safetensors (every floating-point tensor as float32),
for a graph trojanscope builds itself (`import --preset`), which checks the keys.
"""
import argparse
import contextlib
import io
import json
import operator
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from graph_python import (  # noqa: E402
    find_state_dict, read_checkpoint,
    GraphError, check_norm_channels, fail, list_some, load_model, normalise, parse_norm,
    run_main, write_safetensors,
)

import torch  # noqa: E402
import torch.fx as fx  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.fx.passes.shape_prop import ShapeProp  # noqa: E402

FORMAT = "trojanscope-graph/1"

SUPPORTED = (
    "modules Conv2d, BatchNorm2d, ReLU, LeakyReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, "
    "Flatten, Linear, Dropout, Dropout2d, Identity, Normalize; functions relu, leaky_relu, "
    "add of two tensors, flatten(x, 1), max_pool2d, avg_pool2d, adaptive_avg_pool2d, dropout, "
    "(x - mean) / std with constant mean and std; methods view/reshape to [N, -1], "
    "flatten(1), relu, add"
)


def is_normalize_like(m):
    return type(m).__name__ == "Normalize" and hasattr(m, "mean") and hasattr(m, "std")


class LeafTracer(fx.Tracer):
    """The standard leaves (torch.nn's own modules) plus Normalize-like modules."""

    def is_leaf_module(self, m, qualname):
        if is_normalize_like(m):
            return True
        return super().is_leaf_module(m, qualname)


class RecordingShapeProp(ShapeProp):
    """ShapeProp that remembers the node it is running (to name it in an error)."""

    current = None

    def run_node(self, n):
        self.current = n
        return super().run_node(n)


def target_name(node):
    t = node.target
    if isinstance(t, str):
        return t if node.op != "call_method" else f"Tensor.{t}"
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", None) or repr(t)
    mod = {"_operator": "operator", "torch._C._nn": "torch.nn.functional",
           "torch._C._VariableFunctions": "torch"}.get(mod, mod)
    return f"{mod}.{name}" if mod else name


def pair(v, what, node_name):
    if isinstance(v, int):
        return [v, v]
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return [int(v[0]), int(v[1])]
    if isinstance(v, (tuple, list)) and len(v) == 1 and isinstance(v[0], int):
        return [int(v[0]), int(v[0])]
    fail(f"node {node_name!r}: {what} {v!r} is not an int or a pair of ints")


def short_f32(x):
    """The shortest decimal that reads back as the same float32 (0.1307, not 0.13070000708)."""
    import struct
    want = struct.pack("<f", x)
    for digits in range(1, 10):
        y = float(f"{x:.{digits}g}")
        if struct.pack("<f", y) == want:
            return y
    return x


def floats(v):
    if isinstance(v, torch.Tensor):
        vals = v.detach().to(torch.float64).flatten().tolist()
        if v.dtype in (torch.float32, torch.float16, torch.bfloat16):
            return [short_f32(float(x)) for x in vals]
        return [float(x) for x in vals]
    if isinstance(v, (int, float)):
        return [float(v)]
    return [float(x) for x in torch.as_tensor(v, dtype=torch.float64).flatten().tolist()]


def bind(node, params, defaults):
    """Binds a call's args and kwargs to parameter names (params[0] is the input)."""
    out = dict(defaults)
    if len(node.args) > len(params):
        fail(f"node {node.name!r}: too many arguments for {target_name(node)}")
    for p, a in zip(params, node.args):
        out[p] = a
    for k, v in node.kwargs.items():
        if k not in params:
            fail(f"node {node.name!r}: {target_name(node)} with the argument {k!r} "
                 f"is not supported by trojanscope")
        out[k] = v
    for p in params:
        if p not in out:
            fail(f"node {node.name!r}: {target_name(node)} lacks the argument {p!r}")
    return out


def shape_of(node):
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    if meta is None or not hasattr(meta, "shape"):
        return None
    return list(meta.shape)


class Translator:
    def __init__(self, gm, start_name, reserved):
        self.gm = gm
        self.nodes = []          # graph.json's nodes
        self.used = set()        # names of the nodes written
        self.reserved = set(reserved)  # module paths and "input": not for function nodes
        self.ref = {}            # fx node -> graph node name of its tensor
        self.const = {}          # get_attr fx node -> tensor
        self.pending_norm = {}   # sub fx node -> (input name, mean list)
        self.calls = {}          # module path -> calls so far
        self.start = start_name
        self.module_calls = {}
        self.weight_modules = []  # module paths whose weights the graph uses
        self.output = None
        for n in gm.graph.nodes:
            if n.op == "call_module":
                self.module_calls[n.target] = self.module_calls.get(n.target, 0) + 1

    # ------------------------------------------------------------ helpers
    def unsupported(self, node, what=None):
        what = what or target_name(node)
        fail(f"node {node.name!r}: op {what!r} is not supported by trojanscope "
             f"(supported: {SUPPORTED})")

    def tensor(self, node, arg, what="its input"):
        if isinstance(arg, fx.Node) and arg in self.ref:
            return self.ref[arg]
        if isinstance(arg, fx.Node) and arg in self.pending_norm:
            fail(f"node {node.name!r}: uses {arg.name!r} = x - mean, which trojanscope supports "
                 f"only as (x - mean) / std")
        fail(f"node {node.name!r} ({target_name(node)}): {what} ({arg!r}) is not a tensor "
             f"computed by the network; op not supported by trojanscope (supported: {SUPPORTED})")

    def constant(self, node, v, what):
        if isinstance(v, fx.Node):
            fail(f"node {node.name!r} ({target_name(node)}): {what} must be a constant, "
                 f"not the value of {v.name!r}")
        return v

    def fn_name(self, node):
        name = node.name
        k = 1
        while name in self.used or name in self.reserved:
            name = f"{node.name}_{k}"
            k += 1
        return name

    def emit(self, node, name, op, inputs, module=None, **fields):
        d = {"name": name, "op": op, "inputs": inputs}
        if module is not None and module != name:
            d["module"] = module
        elif module is not None and self.module_calls.get(module, 1) > 1:
            d["module"] = module
        d.update(fields)
        self.nodes.append(d)
        self.used.add(name)
        self.ref[node] = name
        return d

    def channels_norm(self, node, x, vals, what):
        shape = shape_of(x)
        if shape is None or len(shape) != 4:
            fail(f"node {node.name!r}: a normalisation (x - mean) / std is supported only on "
                 f"images [N, C, H, W]")
        c = shape[1]
        if isinstance(vals, torch.Tensor):
            s = list(vals.shape)
            if vals.numel() != 1:
                s4 = [1] * (4 - len(s)) + s if len(s) <= 4 else s
                if len(s4) != 4 or s4[0] != 1 or s4[2] != 1 or s4[3] != 1 or s4[1] != c:
                    fail(f"node {node.name!r}: the normalisation's {what} has shape {s}, not "
                         f"one value per channel ([{c}, 1, 1] or [1, {c}, 1, 1])")
        out = floats(vals)
        if len(out) not in (1, c):
            fail(f"node {node.name!r}: the normalisation's {what} has {len(out)} values "
                 f"for {c} channels")
        return out

    def norm_value(self, node, v, what):
        if isinstance(v, fx.Node):
            if v in self.const:
                return self.const[v]
            fail(f"node {node.name!r}: the normalisation's {what} must be a constant tensor "
                 f"(a buffer or parameter) or a number, not the value of {v.name!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        fail(f"node {node.name!r}: the normalisation's {what} {v!r} is not a number or tensor")

    # ------------------------------------------------------------ ops
    def flatten_node(self, node, x, name, module=None):
        shape = shape_of(x)
        xin = self.tensor(node, x)
        if shape is not None and len(shape) == 2:
            self.ref[node] = xin  # already [N, F]: nothing to do
            return
        if shape is None or len(shape) != 4:
            fail(f"node {node.name!r}: flatten is supported only on [N, C, H, W] "
                 f"(its input has shape {shape})")
        self.emit(node, name, "flatten", [xin], module=module)

    def add_node(self, node, a, b, alpha):
        if alpha not in (None, 1):
            fail(f"node {node.name!r}: {target_name(node)} with alpha={alpha!r} is not "
                 f"supported by trojanscope")
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            self.unsupported(node, f"{target_name(node)} of a tensor and a constant")
        ia, ib = self.tensor(node, a), self.tensor(node, b)
        sa, sb = shape_of(a), shape_of(b)
        if sa != sb:
            fail(f"node {node.name!r}: add of shapes {sa} and {sb}; trojanscope's add needs "
                 f"equal shapes")
        self.emit(node, self.fn_name(node), "add", [ia, ib])

    def batch_ref(self, v, x):
        """Is v x.size(0) / x.size()[0] / x.shape[0] (the batch size)?"""
        if not isinstance(v, fx.Node):
            return False
        if v.op == "call_method" and v.target == "size":
            dim = v.args[1] if len(v.args) > 1 else v.kwargs.get("dim")
            return dim == 0
        if v.op == "call_function" and v.target is operator.getitem and v.args[1] == 0:
            src = v.args[0]
            if isinstance(src, fx.Node):
                if src.op == "call_method" and src.target == "size" and len(src.args) == 1 \
                        and not src.kwargs:
                    return True
                if src.op == "call_function" and src.target is getattr and src.args[1] == "shape":
                    return True
        return False

    def view_node(self, node):
        x = node.args[0]
        shape_args = list(node.args[1:])
        if len(shape_args) == 1 and isinstance(shape_args[0], (tuple, list)):
            shape_args = list(shape_args[0])
        if "shape" in node.kwargs or "size" in node.kwargs:
            shape_args = list(node.kwargs.get("shape", node.kwargs.get("size")))
        xs = shape_of(x)
        ok = False
        if xs is not None and len(xs) in (2, 4) and len(shape_args) == 2:
            k = 1
            for s in xs[1:]:
                k *= s
            a, b = shape_args
            if self.batch_ref(a, x) and (b == -1 or b == k):
                ok = True
            elif a == -1 and b == k:
                ok = True
        if not ok:
            fail(f"node {node.name!r}: {target_name(node)} with shape {tuple(shape_args)!r} is "
                 f"not supported by trojanscope (only x.view(x.size(0), -1) or x.view(-1, C*H*W) "
                 f"on [N, C, H, W], a flatten)")
        self.flatten_node(node, x, self.fn_name(node))

    def call_module(self, node):
        path = node.target
        m = self.gm.get_submodule(path)
        k = self.calls.get(path, 0) + 1
        self.calls[path] = k
        name = path if k == 1 else f"{path}@{k}"
        if name in self.used:
            fail(f"node {name!r}: two nodes would have this name; rename the module {path!r}")
        if len(node.args) != 1 or node.kwargs:
            fail(f"node {name!r}: module {path!r} ({type(m).__name__}) is called with "
                 f"{len(node.args)} arguments; trojanscope supports one input")
        x = node.args[0]
        if isinstance(m, nn.Identity):
            self.ref[node] = self.tensor(node, x)
            return
        xin = self.tensor(node, x)
        cls = type(m).__name__
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                fail(f"node {name!r}: Conv2d with padding_mode={m.padding_mode!r}; trojanscope "
                     f"supports zero padding only")
            kernel = pair(m.kernel_size, "kernel_size", name)
            stride = pair(m.stride, "stride", name)
            dil = pair(m.dilation, "dilation", name)
            pad = m.padding
            if pad == "valid":
                pad = [0, 0]
            elif pad == "same":
                pad = []
                for kk, d in zip(kernel, dil):
                    total = d * (kk - 1)
                    if total % 2:
                        fail(f"node {name!r}: Conv2d padding='same' with kernel {kernel} and "
                             f"dilation {dil} pads unevenly, which trojanscope does not support")
                    pad.append(total // 2)
            else:
                pad = pair(pad, "padding", name)
            self.emit(node, name, "conv2d", [xin], module=path,
                      in_channels=m.in_channels, out_channels=m.out_channels, kernel=kernel,
                      stride=stride, padding=pad, dilation=dil, groups=m.groups,
                      bias=m.bias is not None)
            self.weight_modules.append(path)
        elif isinstance(m, nn.BatchNorm2d):
            if not m.track_running_stats or m.running_mean is None:
                fail(f"node {name!r}: BatchNorm2d without running statistics "
                     f"(track_running_stats=False) is not supported by trojanscope")
            self.emit(node, name, "batch_norm2d", [xin], module=path,
                      channels=m.num_features, eps=float(m.eps),
                      momentum=0.1 if m.momentum is None else float(m.momentum),
                      affine=bool(m.affine))
            self.weight_modules.append(path)
        elif isinstance(m, nn.ReLU):
            self.emit(node, name, "relu", [xin], module=path)
        elif isinstance(m, nn.LeakyReLU):
            self.emit(node, name, "leaky_relu", [xin], module=path,
                      negative_slope=float(m.negative_slope))
        elif isinstance(m, nn.MaxPool2d):
            if m.return_indices:
                fail(f"node {name!r}: MaxPool2d with return_indices=True is not supported")
            kernel = pair(m.kernel_size, "kernel_size", name)
            stride = kernel if m.stride is None else pair(m.stride, "stride", name)
            self.emit(node, name, "max_pool2d", [xin], module=path, kernel=kernel, stride=stride,
                      padding=pair(m.padding, "padding", name),
                      dilation=pair(m.dilation, "dilation", name), ceil_mode=bool(m.ceil_mode))
        elif isinstance(m, nn.AvgPool2d):
            if m.divisor_override is not None:
                fail(f"node {name!r}: AvgPool2d with divisor_override is not supported")
            kernel = pair(m.kernel_size, "kernel_size", name)
            stride = kernel if m.stride is None else pair(m.stride, "stride", name)
            self.emit(node, name, "avg_pool2d", [xin], module=path, kernel=kernel, stride=stride,
                      padding=pair(m.padding, "padding", name), ceil_mode=bool(m.ceil_mode),
                      count_include_pad=bool(m.count_include_pad))
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            self.emit(node, name, "adaptive_avg_pool2d", [xin], module=path,
                      output=self.adaptive_size(name, m.output_size))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                fail(f"node {name!r}: Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}); "
                     f"trojanscope supports Flatten(1, -1) only")
            self.flatten_node(node, x, name, module=path)
        elif isinstance(m, nn.Linear):
            self.emit(node, name, "linear", [xin], module=path, in_features=m.in_features,
                      out_features=m.out_features, bias=m.bias is not None)
            self.weight_modules.append(path)
        elif isinstance(m, (nn.Dropout, nn.Dropout2d)):
            self.emit(node, name, "dropout", [xin], module=path, p=float(m.p))
        elif is_normalize_like(m):
            mean = self.channels_norm(node, x, m.mean if isinstance(m.mean, torch.Tensor)
                                      else torch.as_tensor(m.mean), "mean")
            std = self.channels_norm(node, x, m.std if isinstance(m.std, torch.Tensor)
                                     else torch.as_tensor(m.std), "std")
            self.emit(node, name, "input_norm", [xin], module=path, mean=mean, std=std)
        else:
            fail(f"node {name!r}: op {cls!r} (module {path!r}) is not supported by trojanscope "
                 f"(supported: {SUPPORTED})")

    def adaptive_size(self, name, size):
        if isinstance(size, int):
            return [size, size]
        if isinstance(size, (tuple, list)) and len(size) == 2:
            if any(s is None for s in size):
                fail(f"node {name!r}: adaptive_avg_pool2d with output size {tuple(size)!r} "
                     f"(None keeps the input's size) is not supported by trojanscope")
            return [int(size[0]), int(size[1])]
        fail(f"node {name!r}: adaptive_avg_pool2d output size {size!r} is not an int or a pair")

    def call_function(self, node):
        t = node.target
        name = self.fn_name(node)
        if t in (F.relu, torch.relu, torch.relu_, F.relu_):
            a = bind(node, ["input", "inplace"], {"inplace": False})
            self.emit(node, name, "relu", [self.tensor(node, a["input"])])
        elif t is F.leaky_relu:
            a = bind(node, ["input", "negative_slope", "inplace"],
                     {"negative_slope": 0.01, "inplace": False})
            self.emit(node, name, "leaky_relu", [self.tensor(node, a["input"])],
                      negative_slope=float(self.constant(node, a["negative_slope"],
                                                         "negative_slope")))
        elif t in (operator.add, operator.iadd, torch.add):
            if t is torch.add:
                a = bind(node, ["input", "other", "alpha"], {"alpha": None})
                self.add_node(node, a["input"], a["other"], a["alpha"])
            else:
                self.add_node(node, node.args[0], node.args[1], None)
        elif t is torch.flatten:
            a = bind(node, ["input", "start_dim", "end_dim"], {"start_dim": 0, "end_dim": -1})
            if a["start_dim"] != 1 or a["end_dim"] != -1:
                fail(f"node {name!r}: torch.flatten(x, {a['start_dim']}, {a['end_dim']}); "
                     f"trojanscope supports torch.flatten(x, 1) only")
            self.flatten_node(node, a["input"], name)
        elif t is F.max_pool2d or t is torch.max_pool2d:
            a = bind(node, ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                            "return_indices"],
                     {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                      "return_indices": False})
            for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                      "return_indices"):
                self.constant(node, a[k], k)
            if a["return_indices"]:
                fail(f"node {name!r}: max_pool2d with return_indices=True is not supported")
            kernel = pair(a["kernel_size"], "kernel_size", name)
            stride = kernel if a["stride"] in (None, [], ()) else pair(a["stride"], "stride", name)
            self.emit(node, name, "max_pool2d", [self.tensor(node, a["input"])], kernel=kernel,
                      stride=stride, padding=pair(a["padding"], "padding", name),
                      dilation=pair(a["dilation"], "dilation", name),
                      ceil_mode=bool(a["ceil_mode"]))
        elif t is F.avg_pool2d:
            a = bind(node, ["input", "kernel_size", "stride", "padding", "ceil_mode",
                            "count_include_pad", "divisor_override"],
                     {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True,
                      "divisor_override": None})
            for k in ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                      "divisor_override"):
                self.constant(node, a[k], k)
            if a["divisor_override"] is not None:
                fail(f"node {name!r}: avg_pool2d with divisor_override is not supported")
            kernel = pair(a["kernel_size"], "kernel_size", name)
            stride = kernel if a["stride"] in (None, [], ()) else pair(a["stride"], "stride", name)
            self.emit(node, name, "avg_pool2d", [self.tensor(node, a["input"])], kernel=kernel,
                      stride=stride, padding=pair(a["padding"], "padding", name),
                      ceil_mode=bool(a["ceil_mode"]),
                      count_include_pad=bool(a["count_include_pad"]))
        elif t is F.adaptive_avg_pool2d:
            a = bind(node, ["input", "output_size"], {})
            self.emit(node, name, "adaptive_avg_pool2d", [self.tensor(node, a["input"])],
                      output=self.adaptive_size(name, self.constant(node, a["output_size"],
                                                                    "output_size")))
        elif t in (F.dropout, F.dropout2d):
            a = bind(node, ["input", "p", "training", "inplace"],
                     {"p": 0.5, "training": True, "inplace": False})
            self.emit(node, name, "dropout", [self.tensor(node, a["input"])],
                      p=float(self.constant(node, a["p"], "p")))
        elif t in (operator.sub, torch.sub):
            self.sub_node(node)
        elif t in (operator.truediv, torch.div, torch.true_divide):
            self.div_node(node)
        elif t is getattr and len(node.args) == 2 and node.args[1] == "shape":
            pass  # x.shape, for a view's batch size; its users are checked
        elif t is operator.getitem and isinstance(node.args[0], fx.Node) and (
                node.args[0].op == "call_method" and node.args[0].target == "size"
                or node.args[0].target is getattr):
            pass  # x.size()[0] / x.shape[0]
        else:
            self.unsupported(node)

    def sub_node(self, node):
        if node.kwargs or len(node.args) != 2:
            self.unsupported(node)
        x, c = node.args
        if not (isinstance(x, fx.Node) and x in self.ref):
            self.unsupported(node)
        users = list(node.users)
        if len(users) != 1 or not (
                (users[0].op == "call_function" and users[0].target in
                 (operator.truediv, torch.div, torch.true_divide))
                or (users[0].op == "call_method" and users[0].target in ("div", "true_divide")))\
                or users[0].args[0] is not node:
            fail(f"node {node.name!r}: a subtraction is supported only as the normalisation "
                 f"(x - mean) / std with constant mean and std; op {target_name(node)!r} is "
                 f"otherwise not supported by trojanscope (supported: {SUPPORTED})")
        mean = self.channels_norm(node, x, self.norm_value(node, c, "mean"), "mean")
        self.pending_norm[node] = (self.ref[x], mean)

    def div_node(self, node):
        if node.kwargs or len(node.args) != 2 or node.args[0] not in self.pending_norm:
            fail(f"node {node.name!r}: a division is supported only as the normalisation "
                 f"(x - mean) / std with constant mean and std; op {target_name(node)!r} is "
                 f"otherwise not supported by trojanscope (supported: {SUPPORTED})")
        sub = node.args[0]
        xin, mean = self.pending_norm[sub]
        std = self.channels_norm(node, sub.args[0], self.norm_value(node, node.args[1], "std"),
                                 "std")
        if any(s == 0 for s in std):
            fail(f"node {node.name!r}: the normalisation's std holds a zero")
        self.emit(node, self.fn_name(node), "input_norm", [xin], mean=mean, std=std)

    def call_method(self, node):
        t = node.target
        name = self.fn_name(node)
        if t in ("view", "reshape"):
            self.view_node(node)
        elif t == "flatten":
            a = bind(node, ["self", "start_dim", "end_dim"], {"start_dim": 0, "end_dim": -1})
            if a["start_dim"] != 1 or a["end_dim"] != -1:
                fail(f"node {name!r}: x.flatten({a['start_dim']}, {a['end_dim']}); trojanscope "
                     f"supports x.flatten(1) only")
            self.flatten_node(node, a["self"], name)
        elif t in ("relu", "relu_"):
            if len(node.args) != 1 or node.kwargs:
                self.unsupported(node)
            self.emit(node, name, "relu", [self.tensor(node, node.args[0])])
        elif t in ("add", "add_"):
            a = bind(node, ["self", "other", "alpha"], {"alpha": None})
            self.add_node(node, a["self"], a["other"], a["alpha"])
        elif t == "size":
            pass  # only for a view's batch size; its users are checked
        elif t == "sub":
            self.sub_node(node)
        elif t in ("div", "true_divide"):
            self.div_node(node)
        else:
            self.unsupported(node)

    def containers(self):
        """Each container module (a block, a Sequential stage) whose output is one
        node: its path -> that node's name, so `layer2.1:5` addresses the block's
        output as a forward hook on `layer2.1` would."""
        leaves = {n.target for n in self.gm.graph.nodes if n.op == "call_module"}
        members = {}
        for n in self.gm.graph.nodes:
            if n in self.ref and n.op != "placeholder":
                for path in (n.meta.get("nn_module_stack") or {}):
                    if path and path not in leaves:
                        members.setdefault(path, set()).add(n)
        out = {}
        for path, inside in members.items():
            exits = {self.ref[n] for n in inside if any(u not in inside for u in n.users)}
            if len(exits) == 1 and path not in self.used and path not in self.reserved:
                out[path] = exits.pop()
        return dict(sorted(out.items()))

    def run(self):
        placeholders = 0
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                placeholders += 1
                if placeholders > 1:
                    fail(f"the module's forward takes more than one input ({node.name!r}); "
                         f"trojanscope feeds one image batch")
                self.ref[node] = self.start
            elif node.op == "get_attr":
                v = self.gm
                for part in node.target.split("."):
                    v = getattr(v, part)
                self.const[node] = v
            elif node.op == "call_module":
                self.call_module(node)
            elif node.op == "call_function":
                self.call_function(node)
            elif node.op == "call_method":
                self.call_method(node)
            elif node.op == "output":
                out = node.args[0]
                if isinstance(out, (tuple, list)) and len(out) == 1:
                    out = out[0]
                if not isinstance(out, fx.Node):
                    fail(f"the module returns {type(out).__name__}; trojanscope needs one tensor "
                         f"of logits [N, classes]")
                self.output = self.tensor(node, out, "the module's output")
                shape = shape_of(out)
                if shape is None or len(shape) != 2:
                    fail(f"the module's output has shape {shape}; trojanscope needs logits "
                         f"[N, classes]")
                self.classes = shape[1]
        return self.nodes


# --------------------------------------------------- a reference executor of the graph

def run_graph(graph, weights, x):
    """Runs graph.json's nodes with torch's functional ops (a check of the translation)."""
    vals = {"input": x}
    for n in graph["nodes"]:
        ins = [vals[i] for i in n["inputs"]]
        m = n.get("module", n["name"])
        op = n["op"]
        h = ins[0]
        if op == "input_norm":
            c = h.shape[1]
            mean = torch.tensor(n["mean"] * (c if len(n["mean"]) == 1 else 1)).view(1, -1, 1, 1)
            std = torch.tensor(n["std"] * (c if len(n["std"]) == 1 else 1)).view(1, -1, 1, 1)
            y = (h - mean) / std
        elif op == "conv2d":
            y = F.conv2d(h, weights[f"{m}.weight"], weights.get(f"{m}.bias") if n["bias"] else None,
                         n["stride"], n["padding"], n["dilation"], n["groups"])
        elif op == "batch_norm2d":
            y = F.batch_norm(h, weights[f"{m}.running_mean"], weights[f"{m}.running_var"],
                             weights.get(f"{m}.weight") if n["affine"] else None,
                             weights.get(f"{m}.bias") if n["affine"] else None,
                             False, n["momentum"], n["eps"])
        elif op == "relu":
            y = F.relu(h)
        elif op == "leaky_relu":
            y = F.leaky_relu(h, n["negative_slope"])
        elif op == "max_pool2d":
            y = F.max_pool2d(h, n["kernel"], n["stride"], n["padding"], n["dilation"],
                             n["ceil_mode"])
        elif op == "avg_pool2d":
            y = F.avg_pool2d(h, n["kernel"], n["stride"], n["padding"], n["ceil_mode"],
                             n["count_include_pad"])
        elif op == "adaptive_avg_pool2d":
            y = F.adaptive_avg_pool2d(h, n["output"])
        elif op == "flatten":
            y = torch.flatten(h, 1)
        elif op == "linear":
            y = F.linear(h, weights[f"{m}.weight"], weights.get(f"{m}.bias") if n["bias"] else None)
        elif op == "dropout":
            y = h
        elif op == "add":
            y = ins[0] + ins[1]
        else:
            raise ValueError(op)
        vals[n["name"]] = y
    return vals[graph["output"]]


# ------------------------------------------------------------------------ main

def parse_shape(text):
    try:
        dims = [int(x) for x in text.split(",")]
    except ValueError:
        dims = []
    if len(dims) != 3 or any(d <= 0 for d in dims):
        fail(f"--input-shape {text!r} must be C,H,W (three positive numbers, e.g. 1,28,28)")
    return dims


def write_outputs(out_dir, files):
    """Writes every file under a temporary name in out_dir, then renames them all."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        fail(f"cannot create {out_dir}: {e.strerror}")
    temps = []
    try:
        for name, writer in files:
            tmp = os.path.join(out_dir, f".{name}.tmp{os.getpid()}")
            writer(tmp)
            temps.append((tmp, os.path.join(out_dir, name)))
        for tmp, final in temps:
            os.replace(tmp, final)
    except OSError as e:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.remove(tmp)
        fail(f"cannot write into {out_dir}: {e}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", help="FILE.py:NAME")
    p.add_argument("--weights-only", action="store_true",
                   help="only read the state dict into DIR/weights.safetensors")
    p.add_argument("--weights", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--input-shape", help="C,H,W")
    p.add_argument("--state-key")
    p.add_argument("--norm", default="none", help="MEAN/STD or none")
    p.add_argument("--trust-pickle", action="store_true")
    p.add_argument("--probe-count", type=int, default=16)
    p.add_argument("--probe-seed", type=int, default=0)
    args = p.parse_args()
    if args.weights_only:
        return weights_only(args)
    if args.source is None or args.input_shape is None:
        fail("--source and --input-shape are needed (or --weights-only)")

    torch.set_grad_enabled(False)
    c, h, w = parse_shape(args.input_shape)
    norm = parse_norm(args.norm)
    check_norm_channels(norm, c)
    if args.probe_count < 1:
        fail("--probe-count must be at least 1")

    model, info = load_model(args.source, args.weights, args.state_key, args.trust_pickle)
    for note in info["notes"]:
        print(f"note: {note}", file=sys.stderr)

    tracer = LeafTracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:
        msg = " ".join(str(e).split())
        fail(f"torch.fx could not trace the module: {type(e).__name__}: {msg} -- the module must "
             f"be traceable by torch.fx (no control flow that depends on the data)")
    gm = fx.GraphModule(tracer.root, graph)
    gm.eval()

    x0 = normalise(torch.zeros(1, c, h, w), norm)
    prop = RecordingShapeProp(gm)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints a traceback
            prop.propagate(x0)
    except Exception as e:
        while e.__cause__ is not None:
            e = e.__cause__
        msg = " ".join(str(e).split())
        at = ""
        if prop.current is not None:
            n = prop.current
            at = f" at node {n.target if n.op == 'call_module' else n.name!r}"
        fail(f"the module does not accept {c}x{h}x{w} inputs (the dataset's shape){at}: "
             f"{type(e).__name__}: {msg}")

    module_paths = {n.target for n in graph.nodes if n.op == "call_module"}
    fn_names = {n.name for n in graph.nodes if n.op in ("call_function", "call_method")}
    start = "input"
    norm_name = None
    if norm is not None:
        norm_name, k = "input_norm", 1
        while norm_name in module_paths or norm_name in fn_names:
            k += 1
            norm_name = f"input_norm@{k}"
        start = norm_name
    reserved = set(module_paths) | {"input"} | ({norm_name} if norm_name else set())
    tr = Translator(gm, start, reserved)
    nodes = tr.run()
    if norm is not None:
        nodes.insert(0, {"name": norm_name, "op": "input_norm", "inputs": ["input"],
                         "mean": norm[0], "std": norm[1]})
    out_graph = {"format": FORMAT, "input": [c, h, w], "nodes": nodes, "output": tr.output}
    containers = tr.containers()
    if containers:
        out_graph["containers"] = containers

    state = model.state_dict()
    weights = {}
    for path in dict.fromkeys(tr.weight_modules):
        node = next(n for n in nodes if n.get("module", n["name"]) == path)
        keys = []
        if node["op"] in ("conv2d", "linear"):
            keys = ["weight"] + (["bias"] if node["bias"] else [])
        elif node["op"] == "batch_norm2d":
            keys = (["weight", "bias"] if node["affine"] else []) + ["running_mean", "running_var"]
        for k in keys:
            key = f"{path}.{k}" if path else k
            if key not in state:
                fail(f"node {node['name']!r}: the weight {key!r} is not in the module's state dict "
                     f"(a weight held outside the module's parameters is not supported)")
            weights[key] = state[key].detach().to(torch.float32).contiguous()
    parameters = sum(t.numel() for k, t in weights.items()
                     if not k.endswith(("running_mean", "running_var")))

    gen = torch.Generator().manual_seed(args.probe_seed)
    inputs = torch.rand(args.probe_count, c, h, w, generator=gen, dtype=torch.float32)
    try:
        logits = model(normalise(inputs, norm)).to(torch.float32).contiguous()
    except Exception as e:
        fail(f"the module failed on the probe inputs: {type(e).__name__}: {e}")
    # The translation checked against PyTorch's module, as the Rust executor will be.
    check = run_graph(out_graph, weights, inputs)
    diff = float((check - logits).abs().max())
    if not diff <= 1e-4:
        fail(f"internal: the translated graph differs from PyTorch's module by {diff:g} on the "
             f"probe inputs; please report this with the module's source")

    text = json.dumps(out_graph, indent=2) + "\n"

    def write_text(path):
        with open(path, "w") as f:
            f.write(text)

    write_outputs(args.out, [
        ("graph.json", write_text),
        ("weights.safetensors", lambda path: write_safetensors(weights, path)),
        ("probe.safetensors",
         lambda path: write_safetensors({"inputs": inputs, "logits": logits}, path)),
    ])
    print(json.dumps({"state_key": info["state_key"], "stripped_prefix": info["stripped_prefix"],
                      "trust_pickle": bool(args.trust_pickle), "nodes": len(nodes),
                      "parameters": parameters, "classes": tr.classes, "unsupported": []}))


def weights_only(args):
    obj = read_checkpoint(args.weights, args.trust_pickle)
    sd, key_used, prefix, notes = find_state_dict(obj, args.state_key, args.weights)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    weights = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            fail(f"the weights in {args.weights} hold {k!r} as {v.dtype}, not floating point")
        if not bool(torch.isfinite(v).all()):
            fail(f"the weights in {args.weights} hold a non-finite value (NaN or infinity) in {k!r}")
        weights[k] = v.detach().to(torch.float32).contiguous()
    write_outputs(args.out, [("weights.safetensors", lambda path: write_safetensors(weights, path))])
    print(json.dumps({"state_key": key_used, "stripped_prefix": prefix,
                      "trust_pickle": bool(args.trust_pickle)}))


if __name__ == "__main__":
    run_main(main)
