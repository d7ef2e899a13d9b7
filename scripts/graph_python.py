"""Shared helpers of scripts/import_graph.py and benches/graph_reference.py: loading a
PyTorch module from FILE.py:NAME, reading a checkpoint (safetensors by hand, or
torch.load), finding and loading its state dict, parsing --norm, reading MNIST's raw
IDX files, and writing safetensors by hand (the project's Python has torch only).

Every failure the user can fix raises GraphError; the scripts print it as one
`error: ...` line on stderr and exit with status 2.
"""
import array
import importlib.util
import json
import os
import pickle
import struct
import sys
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


class GraphError(Exception):
    """A problem with the user's module, checkpoint or arguments (exit status 2)."""


def fail(msg):
    raise GraphError(msg)


def run_main(main):
    """Runs main(); a GraphError becomes `error: MESSAGE` on stderr and exit status 2."""
    try:
        main()
    except GraphError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def list_some(keys, limit=10):
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    if len(keys) > limit:
        shown += f" and {len(keys) - limit} more"
    return shown


# ---------------------------------------------------------------- safetensors

_ST_DTYPES = {
    "F32": (torch.float32, 4),
    "F64": (torch.float64, 8),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}


def read_safetensors(path):
    """Reads a safetensors file without the safetensors package."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    if len(data) < 8:
        fail(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        fail(f"{path} is not a safetensors file (header length {n} past the end of the file)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"{path} is not a safetensors file (its header is not JSON: {e})")
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype")
        if dtype not in _ST_DTYPES:
            fail(f"{path}: tensor {name!r} has dtype {dtype!r}, which is not supported "
                 f"(supported: {', '.join(_ST_DTYPES)})")
        tdtype, size = _ST_DTYPES[dtype]
        shape = [int(s) for s in info["shape"]]
        start, end = info["data_offsets"]
        count = 1
        for s in shape:
            count *= s
        if end - start != count * size or end > len(body):
            fail(f"{path}: tensor {name!r} has data offsets {start}..{end} that do not fit "
                 f"its shape {shape} of {dtype}")
        if count == 0:
            out[name] = torch.zeros(shape, dtype=tdtype)
        else:
            raw = bytearray(body[start:end])
            out[name] = torch.frombuffer(raw, dtype=tdtype).reshape(shape).clone()
    return out


def tensor_bytes(t):
    """Little-endian bytes of a float32 tensor."""
    t = t.detach().to(torch.float32).contiguous().flatten()
    a = array.array("f", t.tolist())
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def write_safetensors(tensors, path):
    """Writes float32 tensors as a safetensors file (keys in the given order)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = tensor_bytes(t)
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


# ------------------------------------------------------------------- modules

def load_module(source):
    """FILE.py:NAME -> an nn.Module built with no arguments."""
    if ":" not in source:
        fail(f"--source {source!r} must be FILE.py:NAME")
    file, name = source.rsplit(":", 1)
    if not name.isidentifier():
        fail(f"--source {source!r}: {name!r} is not a Python name")
    if not os.path.isfile(file):
        fail(f"cannot read {file}: no such file")
    file = os.path.abspath(file)
    folder = os.path.dirname(file)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    modname = "trojanscope_user_" + os.path.splitext(os.path.basename(file))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(modname, file)
    if spec is None or spec.loader is None:
        fail(f"cannot import {file} (not a Python file?)")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # the user's code
        fail(f"importing {file} failed: {type(e).__name__}: {e}")
    if not hasattr(mod, name):
        names = [n for n in dir(mod) if not n.startswith("_")]
        fail(f"{file} has no {name!r} (it defines: {list_some(names, 20)})")
    obj = getattr(mod, name)
    if isinstance(obj, type):
        if not issubclass(obj, nn.Module):
            fail(f"{name} in {file} is a class but not a torch.nn.Module")
        what = f"class {name}"
    elif callable(obj):
        what = f"function {name}"
    else:
        fail(f"{name} in {file} is neither an nn.Module class nor a function returning one "
             f"(it is a {type(obj).__name__})")
    try:
        model = obj()
    except Exception as e:
        fail(f"building {what}() from {file} failed (it must need no arguments): "
             f"{type(e).__name__}: {e}")
    if not isinstance(model, nn.Module):
        fail(f"{what}() from {file} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


# --------------------------------------------------------------- checkpoints

def read_checkpoint(path, trust_pickle):
    if not os.path.isfile(path):
        fail(f"cannot read {path}: no such file")
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if trust_pickle:
        print(f"warning: --trust-pickle: {path} was loaded with pickle, which can run code",
              file=sys.stderr)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            fail(f"cannot load {path} with torch.load: {type(e).__name__}: {e}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        reason = ""
        for line in first:
            if "unsupported global" in line.lower():
                line = line.strip()
                cut = line.find(" was not an allowed global")
                line = line[:cut] if cut > 0 else line
                line = line[line.lower().find("unsupported global"):]
                reason = " (" + line.rstrip(".") + ")"
                break
        fail(f"{path} holds more than tensors, and loading it needs pickle, which can run code"
             f"{reason}; if you trust this file, pass --trust-pickle")
    except Exception as e:
        fail(f"cannot load {path} with torch.load: {type(e).__name__}: {e}")


def _is_tensor_mapping(obj):
    return (isinstance(obj, dict) and len(obj) > 0
            and all(isinstance(v, torch.Tensor) for v in obj.values()))


def find_state_dict(obj, state_key, path):
    """Returns (state_dict, key_used or None, stripped prefix or None, notes)."""
    notes = []
    key_used = None
    if state_key is not None:
        if not isinstance(obj, dict):
            fail(f"--state-key {state_key!r}: {path} holds a {type(obj).__name__}, not a dict")
        if state_key not in obj:
            fail(f"--state-key {state_key!r}: {path} has no such key "
                 f"(its keys: {list_some(obj.keys(), 20)})")
        sd = obj[state_key]
        key_used = state_key
        if isinstance(sd, nn.Module):
            sd = sd.state_dict()
        if not _is_tensor_mapping(sd):
            fail(f"--state-key {state_key!r}: {path}[{state_key!r}] is not a state dict "
                 f"(a {type(sd).__name__}, not a dict of tensors)")
    elif isinstance(obj, nn.Module):
        sd = obj.state_dict()
        notes.append(f"{path} holds a whole {type(obj).__name__}; its state dict was used")
    elif _is_tensor_mapping(obj):
        sd = obj
    elif isinstance(obj, dict):
        sd = None
        for k in ("model", "state_dict", "net"):
            if k in obj:
                v = obj[k]
                if isinstance(v, nn.Module):
                    v = v.state_dict()
                if _is_tensor_mapping(v):
                    sd, key_used = v, k
                    break
        if sd is None:
            fail(f"{path} is a dict but not a state dict, and none of the keys 'model', "
                 f"'state_dict', 'net' holds one (its keys: {list_some(obj.keys(), 20)}); "
                 f"name the key with --state-key")
        notes.append(f"the state dict was found under the key {key_used!r}")
    else:
        fail(f"{path} holds a {type(obj).__name__}, not a state dict")
    sd = {str(k): v for k, v in sd.items()}
    prefix = None
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
        prefix = "module."
        notes.append("the prefix 'module.' (DataParallel) was removed from every key")
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    return sd, key_used, prefix, notes


def load_weights(model, sd, path):
    """Checks the keys, shapes and values, then load_state_dict(strict=True)."""
    own = model.state_dict()
    own_keys = [k for k in own if not k.endswith("num_batches_tracked")]
    missing = [k for k in own_keys if k not in sd]
    unexpected = [k for k in sd if k not in own]
    problems = []
    if missing:
        problems.append(f"missing keys: {list_some(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {list_some(unexpected)}")
    mism = [f"{k!r} is {list(sd[k].shape)} in the checkpoint but {list(own[k].shape)} in the module"
            for k in own_keys if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if mism:
        problems.append("shape mismatches: " + "; ".join(mism[:10])
                        + (f" and {len(mism) - 10} more" if len(mism) > 10 else ""))
    if problems:
        fail(f"the weights in {path} do not fit the module ({'; '.join(problems)})")
    for k, v in sd.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            fail(f"the weights in {path} hold a non-finite value (NaN or infinity) in {k!r}")
    full = dict(sd)
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in full:
            full[k] = v
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError as e:
        fail(f"the weights in {path} do not fit the module: {e}")
    return model


def load_model(source, weights, state_key=None, trust_pickle=False):
    """The whole loading path: returns (model in eval mode, info dict)."""
    model = load_module(source)
    obj = read_checkpoint(weights, trust_pickle)
    sd, key_used, prefix, notes = find_state_dict(obj, state_key, weights)
    load_weights(model, sd, weights)
    model.eval()
    return model, {"state_key": key_used, "stripped_prefix": prefix, "notes": notes}


def model_arguments(parser):
    """The options a reference script reads a model and MNIST's test split by."""
    parser.add_argument("--source", required=True, help="FILE.py:NAME")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--state-key")
    parser.add_argument("--norm", default="none", help="MEAN/STD or none")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--test-limit", type=int)


# --------------------------------------------------------------------- norm

def parse_norm(text):
    """'none' -> None; 'MEAN/STD' (comma lists or numbers) -> (mean list, std list)."""
    if text is None or text.strip().lower() == "none":
        return None
    if "/" not in text:
        fail(f"--norm {text!r} must be MEAN/STD (e.g. 0.1307/0.3081) or none")
    a, b = text.split("/", 1)
    try:
        mean = [float(x) for x in a.split(",")]
        std = [float(x) for x in b.split(",")]
    except ValueError:
        fail(f"--norm {text!r}: MEAN and STD must be numbers separated by commas")
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        fail(f"--norm {text!r}: MEAN has {len(mean)} numbers but STD has {len(std)}")
    if any(s == 0 or s != s for s in std):
        fail(f"--norm {text!r}: STD must not be zero")
    return mean, std


def check_norm_channels(norm, channels):
    if norm is None:
        return
    for what, vals in zip(("mean", "std"), norm):
        if len(vals) not in (1, channels):
            fail(f"--norm has {len(vals)} {what} values but the input has {channels} channels")


def normalise(x, norm):
    if norm is None:
        return x
    mean, std = norm
    c = x.shape[1]
    m = torch.tensor(mean if len(mean) == c else mean * c if len(mean) == 1 else mean,
                     dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std if len(std) == c else std * c if len(std) == 1 else std,
                     dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


# -------------------------------------------------------------------- MNIST

def _read_idx(path):
    try:
        if not os.path.exists(path) and os.path.exists(path + ".gz"):
            import gzip
            with gzip.open(path + ".gz", "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    if len(data) < 4:
        fail(f"{path} is not an IDX file")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        fail(f"{path} is not an uncompressed IDX file of bytes")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    t = torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8)
    return t.reshape(dims)


def read_mnist(data_dir, split="t10k", limit=None):
    """Raw MNIST split -> (images float32 [N, 1, H, W] in [0, 1], labels int64 [N])."""
    images = _read_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte"))
    labels = _read_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte"))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = images.to(torch.float32).div_(255.0).unsqueeze(1)
    return x, labels.to(torch.int64)
