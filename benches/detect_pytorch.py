"""Poisoned-input detection and poisoned-data inspection in plain PyTorch: the
references `trojanscope detect-inputs` and `scan-data` are checked and timed
against, on the study's CNN.

  strip     BackdoorBench's detection_infer/strip.py: per loader batch of 128
            inputs, each of the N drawn clean images superimposed in the
            normalised space (x + alpha * x', alpha = 1), the softmax entropy
            (p + 1e-8) averaged over the N; the threshold is the sorted clean
            entropies read at int(frr * n), inputs below it are flagged.
  scaleup   SCALE-UP: pixels times 3, 5, 7, 9, 11 clipped to [0, 1]; the share of
            scaled predictions equal to the input's own.
  spectral  BackdoorBench's detection_pretrain/spectral.py: per class (the labels
            as trained) the top right-singular vector of the centred penultimate
            features (fc2's input, read by a forward hook as its get_features),
            the score |v . x| of the uncentred features, removed above the 85th
            percentile (numpy's linear interpolation).
  ac        BackdoorBench's detection_pretrain/ac.py: per class the centred
            features, FastICA (scikit-learn's algorithm: whitening by SVD,
            parallel logcosh, tol 1e-4, 200 iterations, unit variance; each
            whitening column's largest entry made positive, as svd_flip) to
            10 dimensions (fewer where the features' rank is lower), 2-means (scikit-learn's Lloyd iterations), the smaller
            cluster flagged below 35 %, the silhouette. scikit-learn's algorithms
            are written out in torch here so that only torch is needed.

The draws (STRIP's superimposed images, FastICA's w_init, the initial
centres) come from trojanscope in --draws, so both sides use the same ones.

Usage: python benches/detect_pytorch.py METHOD --checkpoint MODEL.safetensors
       --case CASE.safetensors --draws DRAWS.json [--threads N] [--dataset mnist]
Prints one JSON object on stdout.
"""
import argparse
import json
import math
import time

import torch

from neural_cleanse import load_net, read_safetensors
from study_pytorch import NORMALISATION, add_dataset_arg

BATCH = 128
SCALES = (3, 5, 7, 9, 11)


def strip(net, case, draws, mean, std):
    def entropy(x):
        p = torch.nn.Softmax(dim=1)(net(x)) + 1e-8
        return (-p * p.log()).sum(1)

    pool = (case["pool"] - mean) / std

    def check(inputs, batch_draws):
        out = []
        for b, start in enumerate(range(0, len(inputs), BATCH)):
            x = (inputs[start:start + BATCH] - mean) / std
            entropies = [entropy(x + draws["alpha"] * pool[i:i + 1]) for i in batch_draws[b]]
            out.append(torch.stack(entropies).mean(0))
        return torch.cat(out)

    with torch.no_grad():
        clean = check(case["clean"], draws["clean"])
        triggered = check(case["triggered"], draws["triggered"])
    ordered, _ = clean.sort()
    threshold = float(ordered[int(draws["frr"] * len(ordered))])
    return {
        "clean": clean.tolist(),
        "triggered": triggered.tolist(),
        "threshold": threshold,
        "flagged": (triggered < threshold).nonzero().flatten().tolist(),
    }


def scaleup(net, case, mean, std):
    def consistency(x):
        with torch.no_grad():
            own = net((x - mean) / std).argmax(1)
            same = [net(((x * s).clamp(0, 1) - mean) / std).argmax(1) == own for s in SCALES]
        return torch.stack(same).double().mean(0).tolist()

    return {"clean": consistency(case["clean"]), "triggered": consistency(case["triggered"])}


def features(net, images, mean, std):
    kept = []
    hook = net[9].register_forward_hook(lambda module, inp, out: kept.append(inp[0].detach()))
    with torch.no_grad():
        for start in range(0, len(images), 1000):
            net((images[start:start + 1000] - mean) / std)
    hook.remove()
    return torch.cat(kept).double()


def members(labels, c):
    return (labels == c).nonzero().flatten()


def spectral(feats, labels, classes):
    out = []
    for c in range(classes):
        idx = members(labels, c)
        x = feats[idx]
        centred = x - x.mean(0, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        scores = (x @ vh[0]).abs()
        threshold = float(torch.quantile(scores, 0.85))
        out.append({"scores": scores.tolist(), "threshold": threshold,
                    "removed": idx[scores > threshold].tolist()})
    return out


def sym_decorrelation(w):
    s, u = torch.linalg.eigh(w @ w.T)
    s = s.clamp(min=torch.finfo(w.dtype).tiny)
    return (u * (1.0 / s.sqrt())) @ u.T @ w


def fast_ica(x, k, w_init):
    """scikit-learn's FastICA(whiten='unit-variance', whiten_solver='svd').fit_transform."""
    n = x.shape[0]
    xt = (x - x.mean(0)).T
    u, d, _ = torch.linalg.svd(xt, full_matrices=False)
    u = u * torch.where(u.gather(0, u.abs().argmax(0, keepdim=True)) >= 0, 1.0, -1.0)
    whitening = (u / d).T[:k]
    x1 = whitening @ xt * math.sqrt(n)
    w = sym_decorrelation(torch.tensor(w_init, dtype=torch.float64).reshape(k, k))
    for _ in range(200):
        g = torch.tanh(w @ x1)
        g_prime = (1 - g ** 2).mean(-1)
        w1 = sym_decorrelation(g @ x1.T / n - g_prime[:, None] * w)
        lim = ((w1 * w).sum(1).abs() - 1).abs().max()
        w = w1
        if lim < 1e-4:
            break
    sources = (w @ whitening @ xt).T
    return sources / sources.std(0, unbiased=False, keepdim=True)


def kmeans(x, centres):
    """scikit-learn's KMeans(init=centres, n_init=1), Lloyd's algorithm."""
    tol = x.var(0, unbiased=False).mean() * 1e-4
    labels_old = None
    for _ in range(300):
        labels = torch.cdist(x, centres).argmin(1)
        new = torch.stack([x[labels == c].mean(0) if (labels == c).any() else centres[c] for c in range(len(centres))])
        shift = ((new - centres) ** 2).sum()
        centres = new
        if labels_old is not None and torch.equal(labels, labels_old):
            return labels, centres
        if shift <= tol:
            break
        labels_old = labels
    return torch.cdist(x, centres).argmin(1), centres


def silhouette(x, labels):
    d = torch.cdist(x, x)
    total = 0.0
    for i in range(len(x)):
        mine = labels == labels[i]
        if mine.sum() <= 1:
            continue
        a = d[i][mine].sum() / (mine.sum() - 1)
        b = d[i][~mine].mean()
        total += float((b - a) / max(a, b))
    return total / len(x)


def ac(feats, labels, classes, starts):
    out = []
    for c in range(classes):
        idx = members(labels, c)
        start = starts[c]
        x = feats[idx]
        x = x - x.mean(0)
        sources = fast_ica(x, start["components"], start["w_init"])
        cluster, _ = kmeans(sources, sources[start["centres"]])
        clean = 1 if cluster.sum() >= len(cluster) / 2 else 0
        outliers = idx[cluster != clean]
        flagged = len(outliers) < len(cluster) * 0.35
        out.append({"sources": sources.flatten().tolist(), "removed": outliers.tolist() if flagged else [],
                    "flagged": flagged, "silhouette": silhouette(sources, cluster)})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=["strip", "scaleup", "spectral", "ac"])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--case", required=True)
    ap.add_argument("--draws", required=True)
    ap.add_argument("--threads", type=int, default=0)
    add_dataset_arg(ap)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    mean, std = NORMALISATION[a.dataset]
    net = load_net(a.checkpoint)
    case = read_safetensors(a.case)
    draws = json.load(open(a.draws))
    started = time.perf_counter()
    if a.method == "strip":
        result = strip(net, case, draws, mean, std)
    elif a.method == "scaleup":
        result = scaleup(net, case, mean, std)
    else:
        labels = case["labels"].long()
        feats = features(net, case["images"], mean, std)
        classes = int(labels.max()) + 1
        result = spectral(feats, labels, classes) if a.method == "spectral" else ac(feats, labels, classes, draws["starts"])
        result = {"classes": result}
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
