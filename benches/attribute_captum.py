"""Captum 0.9's attributions on the study's CNN: the reference `trojanscope
attribute` is checked and timed against (docs/detect.md). The model is the
PyTorch module the run's weights belong to (study_pytorch.make_net), fed
raw pixels in [0, 1] through the dataset's normalisation, so attributions are
over raw pixels and the zero baselines are black images.

  ig          IntegratedGradients, method "gausslegendre", zero baseline, the
              convergence delta returned
  saliency    Saliency, abs=True
  gradcam     LayerGradCam at --layer (a module of the Sequential, "net.3" is
              conv2), relu_attributions from --relu, then
              LayerAttribution.interpolate to the input size (mode "nearest")
  occlusion   Occlusion, windows (C, w, w), strides (1, s, s), baseline 0
  smoothgrad  NoiseTunnel(nt_type="smoothgrad") over --of ig|saliency with the
              noise trojanscope drew (--case's "noise"), by standing in for the
              one torch.normal call NoiseTunnel makes

--case holds "images" [N, C, H, W] and "targets" [N] (float), and "noise"
for smoothgrad. Prints one JSON object with an entry per method named:
"maps" (flattened, N·C·H·W), "deltas" (IG), "seconds" (the attribution calls
alone).

Usage: python benches/attribute_captum.py METHOD... --checkpoint MODEL.safetensors
       --case CASE.safetensors [--steps 50] [--layer net.3] [--relu]
       [--window 6 --stride 3] [--of ig|saliency --samples N --sigma S]
       [--batch N] [--threads N] [--times-only] [--dataset mnist]
"""
import argparse
import json
import time

import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency

from neural_cleanse import load_net, read_safetensors
from study_pytorch import NORMALISATION, add_dataset_arg


class RawPixels(torch.nn.Module):
    """The network reading raw pixels: normalise, then the study's CNN."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def module_named(model, name):
    return dict(model.named_modules())[name]


def attribute(a, method, model, x, targets, noise):
    if method == "ig":
        maps, deltas = IntegratedGradients(model).attribute(
            x, target=targets, n_steps=a.steps, method="gausslegendre", return_convergence_delta=True)
        return maps, deltas
    if method == "saliency":
        return Saliency(model).attribute(x, target=targets), None
    if method == "gradcam":
        cam = LayerGradCam(model, module_named(model, a.layer))
        maps = cam.attribute(x, target=targets, relu_attributions=a.relu)
        return LayerAttribution.interpolate(maps, tuple(x.shape[2:])), None
    if method == "occlusion":
        c = x.shape[1]
        return Occlusion(model).attribute(
            x, target=targets, sliding_window_shapes=(c, a.window, a.window), strides=(1, a.stride, a.stride),
            baselines=0), None
    inner = IntegratedGradients(model) if a.of == "ig" else Saliency(model)
    extra = {"n_steps": a.steps, "method": "gausslegendre"} if a.of == "ig" else {}
    normal = torch.normal
    torch.normal = lambda mean, std, *rest, **kw: noise.reshape(std.shape).to(std.dtype)
    try:
        maps = NoiseTunnel(inner).attribute(
            x, nt_type="smoothgrad", nt_samples=a.samples, stdevs=a.sigma, target=targets, **extra)
    finally:
        torch.normal = normal
    return maps, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("methods", nargs="+", choices=["ig", "saliency", "gradcam", "occlusion", "smoothgrad"])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--case", required=True)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--layer", default="net.3")
    ap.add_argument("--relu", action="store_true")
    ap.add_argument("--window", type=int, default=6)
    ap.add_argument("--stride", type=int, default=3)
    ap.add_argument("--of", choices=["ig", "saliency"], default="saliency")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--sigma", type=float, default=0.15)
    ap.add_argument("--batch", type=int, default=0, help="images per attribute call (0: all at once)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--times-only", action="store_true", help="leave the maps out (the bench reads the seconds)")
    add_dataset_arg(ap)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    mean, std = NORMALISATION[a.dataset]
    model = RawPixels(load_net(a.checkpoint), mean, std).eval()
    case = read_safetensors(a.case)
    images, targets = case["images"], case["targets"].long()
    noise = case.get("noise")
    batch = a.batch or len(images)
    out = {}
    for method in a.methods:
        started = time.perf_counter()
        maps, deltas = [], []
        per = a.samples if method == "smoothgrad" else 0
        for s in range(0, len(images), batch):
            part_noise = noise[s * per:(s + batch) * per] if noise is not None else None
            m, d = attribute(a, method, model, images[s:s + batch], targets[s:s + batch], part_noise)
            maps.append(m.detach())
            if d is not None:
                deltas.append(d.detach())
        out[method] = {"maps": torch.cat(maps).flatten().tolist(), "seconds": time.perf_counter() - started}
        if a.times_only:
            del out[method]["maps"]
        elif deltas:
            out[method]["deltas"] = torch.cat(deltas).tolist()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
