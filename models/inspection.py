"""Looking inside a trained network: what its layers learned and how it sees its data.

Pure torch (and numpy, for rounding; scikit-learn's t-SNE imported on use, as models/data.py
imports its digits). Each function takes the network (eval mode) and tensors and returns plain
Python structures, ready to be JSON: floats rounded (`plain`, 5 significant digits; pixels
`pixels`, 3 decimals), a non-finite value (a diverged run) as None, because JSON has no NaN.

Payloads stay bounded however large the model: at most MAX_CHANNELS feature maps per block,
maps and images larger than MAX_SIDE x MAX_SIDE average-pooled down to fit (`shown`), at most
MAX_UNIT_VALUES numbers of unit weights per answer. The API (api/routes/inspect.py) bounds the
counts a request may ask for.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.inference import InputError

MAX_CHANNELS = 32  # feature maps shown per conv block
MAX_SIDE = 64  # a map or image larger than this (either side) is average-pooled to fit
MAX_UNIT_VALUES = 2**17  # about 1.3 MB of JSON: 167 MNIST units, 42 of CIFAR's
DIGITS = 5  # significant digits of weights, activations, coordinates, probabilities
EVAL_ROWS = 64  # validation images per forward pass: bounds a wide CNN's activations
TSNE_DIMS = 50  # t-SNE reads the embeddings' first 50 principal components
TSNE_ITERATIONS = 500  # sklearn's default 1,000 settles little more for a few hundred points
SKIPPED_IDS = (0,)  # <unk>: it stands for every token outside the vocabulary, not for one


# ---------------------------------------------------------------------------------------------
# JSON-ready values


def _round_significant(a: np.ndarray, digits: int) -> np.ndarray:
    """`a` rounded to `digits` significant digits, element-wise (non-finite values kept)."""
    a = np.asarray(a, dtype=np.float64)
    exponent = np.zeros_like(a)
    nonzero = np.isfinite(a) & (a != 0)
    exponent[nonzero] = np.floor(np.log10(np.abs(a[nonzero])))
    keep = digits - 1 - exponent  # decimals to keep; negative for values >= 10**digits
    # Multiply and divide by exact powers of ten (10**k is exact for 0 <= k <= 22), so the
    # result is the double nearest the rounded decimal and prints as it: 0.12345, not ...0001.
    up = np.power(10.0, np.clip(keep, 0, None))
    down = np.power(10.0, np.clip(-keep, 0, None))
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(nonzero, np.round(a * up / down) * down / up, a)


def _listed(a: np.ndarray) -> list | float | None:
    if np.isfinite(a).all():
        return a.tolist()
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()


def plain(t: torch.Tensor, digits: int = DIGITS):
    """A tensor as nested lists (a number for a 0-d tensor), rounded, None for NaN/inf."""
    return _listed(_round_significant(t.detach().cpu().double().numpy(), digits))


def pixels(t: torch.Tensor):
    """An image in [0, 1] as nested lists, 3 decimals: every 8-bit grey level stays distinct
    (they are 1/255 apart), at about half the characters of full precision."""
    return _listed(np.round(t.detach().cpu().double().numpy(), 3))


def number(x: float, digits: int = DIGITS) -> float | None:
    return plain(torch.tensor(float(x)), digits)


def shown(x: torch.Tensor, max_side: int = MAX_SIDE) -> torch.Tensor:
    """(C, H, W) as it is shown: unchanged up to max_side x max_side, else average-pooled by
    the smallest whole factor that fits both sides (aspect kept)."""
    h, w = x.shape[-2:]
    factor = math.ceil(max(h, w) / max_side)
    if factor <= 1:
        return x
    size = (math.ceil(h / factor), math.ceil(w / factor))
    return F.adaptive_avg_pool2d(x[None].float(), size)[0]


def _extent(t: torch.Tensor) -> tuple[float | None, float | None]:
    """(min, max) of the finite values, for a shared colour scale; (None, None) if none."""
    finite = t[torch.isfinite(t)]
    if finite.numel() == 0:
        return None, None
    return number(finite.min()), number(finite.max())


# ---------------------------------------------------------------------------------------------
# image classifiers


def first_conv_filters(model: nn.Module, limit: int) -> dict:
    """A CNN's first convolution: {"layer", "shape" [Cout, Cin, k, k] (the whole layer),
    "filters" (the first `limit` output channels: Cout' x Cin x k x k), "min", "max" (of
    those)}. All 512 x 3 x 7 x 7 of the catalogue's largest are about 750 kB of JSON."""
    weight = model.blocks[0].conv.weight.detach()
    low, high = _extent(weight[:limit])
    return {"layer": "blocks.0.conv", "shape": list(weight.shape),
            "filters": plain(weight[:limit]), "min": low, "max": high}


@torch.inference_mode()
def feature_maps(model: nn.Module, image: torch.Tensor,
                 max_channels: int = MAX_CHANNELS) -> dict:
    """`image` (C, H, W) through each conv block of a CNN. A block's output is after its
    activation and pooling (what the next block reads). {"image", "predicted", "confidence",
    "blocks": [{"name", "shape" (the block's real [C, H, W]), "maps_shape" (what is sent:
    the first `max_channels` channels, pooled if larger than MAX_SIDE), "maps"}]}."""
    x = image[None].float()  # (1, C, H, W)
    blocks = []
    for i, block in enumerate(model.blocks):
        x = block(x)  # (1, C_i, H_i, W_i)
        maps = shown(x[0, :max_channels])
        blocks.append({"name": f"blocks.{i}", "shape": list(x.shape[1:]),
                       "maps_shape": list(maps.shape), "maps": plain(maps)})
    logits, _ = model(image[None].float())
    probabilities = torch.softmax(logits.float()[0], dim=-1)
    predicted = int(logits[0].argmax())
    return {"image": pixels(shown(image)), "predicted": predicted,
            "confidence": number(probabilities[predicted]), "blocks": blocks}


def first_layer_units(model: nn.Module, shape: tuple[int, int, int], limit: int) -> dict:
    """An MLP's first hidden layer: the incoming weights of its first units, each reshaped to
    the input image's (C, H, W): the input pattern (of a given norm) that excites it most.
    At most `limit` units, and at most MAX_UNIT_VALUES numbers in all (each unit pooled to
    MAX_SIDE if larger).
    {"layer", "shape", "total_units", "units", "min", "max"}."""
    weight = model.layers[0].weight.detach()  # (hidden_0, C*H*W)
    c, h, w = shape
    if weight.shape[1] != c * h * w:
        raise ValueError(f"layers.0 takes {weight.shape[1]} inputs, not {c} x {h} x {w}")
    per_unit = shown(torch.zeros(c, h, w)).numel()
    n = max(1, min(limit, weight.shape[0], MAX_UNIT_VALUES // per_unit))
    units = torch.stack([shown(row.reshape(c, h, w)) for row in weight[:n]])  # (n, C, H', W')
    low, high = _extent(units)
    return {"layer": "layers.0", "shape": [c, h, w], "total_units": weight.shape[0],
            "units": plain(units), "min": low, "max": high}


@dataclass(frozen=True)
class Predictions:
    """A classifier's answers for a validation set, (M,) each: what `confident_mistakes`
    reads, kept by the API per checkpoint so a second look costs no forward pass."""

    predicted: torch.Tensor  # int64: the logits' argmax, as training's val_accuracy counts
    confidence: torch.Tensor  # float32: the probability of the predicted class
    label_probability: torch.Tensor  # float32: the probability of the true class

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in
                   (self.predicted, self.confidence, self.label_probability))


@torch.inference_mode()
def validation_predictions(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           rows: int = EVAL_ROWS, deadline: float | None = None) -> Predictions:
    """The classifier on every image of `x` (M, C, H, W), `rows` at a time. Past `deadline`
    (time.monotonic()) it raises TimeoutError between batches, so a request's time limit
    stops the work, not just the wait (10,000 CIFAR images take a while on a CPU)."""
    predicted, confidence, label_p = [], [], []
    for s in range(0, x.shape[0], rows):
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"stopped after {s:,} of {x.shape[0]:,} validation images")
        logits, _ = model(x[s:s + rows].float())  # (rows, K)
        p = torch.softmax(logits.float(), dim=-1)
        guess = logits.argmax(dim=-1)
        predicted.append(guess)
        confidence.append(p.gather(1, guess[:, None])[:, 0])
        label_p.append(p.gather(1, y[s:s + rows, None])[:, 0])
    return Predictions(*map(torch.cat, (predicted, confidence, label_p)))


def confident_mistakes(found: Predictions, x: torch.Tensor, y: torch.Tensor,
                       limit: int) -> dict:
    """The validation images the classifier gets wrong, most confident first (ties: lower
    index first); `wrong` / validation_size is 1 - val_accuracy. {"validation_size", "wrong",
    "items": [{"index", "label", "predicted", "confidence", "label_probability", "image"}]}."""
    wrong = (found.predicted != y).nonzero().flatten()
    key = torch.nan_to_num(found.confidence[wrong], nan=-1.0)  # NaN (diverged run): last
    chosen = wrong[torch.sort(key, descending=True, stable=True).indices[:limit]]
    items = [{"index": i, "label": int(y[i]), "predicted": int(found.predicted[i]),
              "confidence": number(found.confidence[i]),
              "label_probability": number(found.label_probability[i]),
              "image": pixels(shown(x[i]))} for i in chosen.tolist()]
    return {"validation_size": int(x.shape[0]), "wrong": int(wrong.numel()), "items": items}


# ---------------------------------------------------------------------------------------------
# language models


def embedding_matrix(model: nn.Module) -> torch.Tensor:
    """(V, E) float64: the token embeddings; InputError when a diverged run left NaN/inf
    there (no projection or similarity means anything then)."""
    weight = model.embedding.weight.detach().double()
    if not torch.isfinite(weight).all():
        raise InputError("query.checkpoint", "this checkpoint's embeddings hold NaN or "
                         "infinite values (training diverged); choose an earlier checkpoint")
    return weight


def pca_2d(points: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """(n, E) -> (n, 2) coordinates on the first two principal components (an SVD of the
    centred matrix), and the share of the variance each explains. Signs are fixed: each
    component's largest-magnitude loading is positive, so the same matrix always gives the same
    picture. Missing components (E < 2 or n < 3) are zeros."""
    x = points.double() - points.double().mean(dim=0)  # (n, E)
    coords = torch.zeros(x.shape[0], 2, dtype=torch.float64)
    if x.shape[0] < 2:
        return coords, [0.0, 0.0]
    _, s, vt = torch.linalg.svd(x, full_matrices=False)  # vt: (min(n, E), E)
    comps = vt[:2]
    top = comps.abs().argmax(dim=1)
    signs = torch.sign(comps[torch.arange(comps.shape[0]), top])
    comps = comps * torch.where(signs == 0, 1.0, signs)[:, None]
    coords[:, :comps.shape[0]] = x @ comps.T
    var = s.square()
    total = float(var.sum())
    explained = [float(v) / total if total > 0 else 0.0 for v in var[:2]]
    return coords, explained + [0.0] * (2 - len(explained))


def tsne_2d(points: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(n, E) -> (n, 2) t-SNE coordinates (scikit-learn; a fixed seed: the same matrix gives
    the same picture). O(n log n) per iteration, seconds for 500 points: the API caps n."""
    from sklearn.manifold import TSNE

    n, e = points.shape
    if n < 3:
        return pca_2d(points)[0]
    x = points.double() - points.double().mean(dim=0)
    if e > TSNE_DIMS:  # the usual first step (sklearn's advice): less to compare per pair
        x = x @ torch.linalg.svd(x, full_matrices=False)[2][:TSNE_DIMS].T
    perplexity = min(30.0, (n - 1) / 3)  # sklearn requires perplexity < n
    init = "pca" if e >= 2 else "random"
    tsne = TSNE(n_components=2, perplexity=perplexity, init=init, learning_rate="auto",
                max_iter=TSNE_ITERATIONS, random_state=seed)
    return torch.from_numpy(tsne.fit_transform(x.numpy()))


def embedding_points(model: nn.Module, vocab: list[str], limit: int, method: str) -> dict:
    """The first `limit` tokens after <unk> (ids 1..limit: a word-level vocabulary is ordered
    by frequency, so these are the commonest words; a char-level one is sorted by character),
    projected to 2-D from the embedding table. {"method", "points": [{"id", "token", "x",
    "y"}], "vocab_size", "explained_variance" (PCA only; None for t-SNE)}."""
    weight = embedding_matrix(model)
    ids = [i for i in range(len(vocab)) if i not in SKIPPED_IDS][:limit]
    rows = weight[ids]  # (n, E)
    if method == "pca":
        coords, explained = pca_2d(rows)
    elif method == "tsne":
        coords, explained = tsne_2d(rows), None
    else:
        raise InputError("query.method", "must be pca or tsne")
    xs, ys = plain(coords[:, 0]), plain(coords[:, 1])
    points = [{"id": i, "token": vocab[i], "x": px, "y": py} for i, px, py in zip(ids, xs, ys)]
    return {"method": method, "points": points, "vocab_size": len(vocab),
            "explained_variance": None if explained is None else
            [number(v) for v in explained]}


def token_id(vocab: list[str], tokenizer: str, token: str) -> int:
    """The id of `token`; a word-level vocabulary is lower case, so "The" finds "the"."""
    index = {tok: i for i, tok in enumerate(vocab)}
    for candidate in (token, token.lower()) if tokenizer == "word" else (token,):
        if candidate in index:
            return index[candidate]
    raise InputError("query.token", f"{token!r} is not in the vocabulary of this model "
                     f"({len(vocab):,} {tokenizer}-level tokens)")


def nearest_tokens(model: nn.Module, vocab: list[str], tokenizer: str, token: str,
                   k: int) -> dict:
    """The `k` tokens whose embeddings are nearest `token`'s by cosine similarity, nearest
    first; the token itself and <unk> left out. {"token", "id", "neighbours": [{"id", "token",
    "similarity"}]}."""
    query = token_id(vocab, tokenizer, token)
    weight = F.normalize(embedding_matrix(model), dim=1)  # (V, E), unit rows (0 stays 0)
    similarity = weight @ weight[query]  # (V,)
    similarity[[query, *SKIPPED_IDS]] = -math.inf
    n = min(k, int(torch.isfinite(similarity).sum()))
    values, ids = torch.topk(similarity, n)
    values = values.clamp(-1.0, 1.0)  # rounding in the products can step past +-1
    neighbours = [{"id": i, "token": vocab[i], "similarity": v}
                  for i, v in zip(ids.tolist(), plain(values))]
    return {"token": vocab[query], "id": query, "neighbours": neighbours}


def next_tokens(model: nn.Module, vocab: list[str], tokenizer: str, prompt: str,
                top: int) -> dict:
    """The `top` likeliest tokens after `prompt`, likeliest first, with the prompt's tokens
    the vocabulary lacks (dropped at char level, read as <unk> at word level)."""
    from models.inference import encode_prompt, next_token_distribution

    try:
        unknown = encode_prompt(prompt, vocab, tokenizer).unknown
        ranked = next_token_distribution(model, vocab, tokenizer, prompt, top)
    except InputError as exc:  # the prompt is a query parameter here, not a body field
        raise InputError(f"query.{exc.field}", exc.message) from None
    probabilities = plain(torch.tensor([r["probability"] for r in ranked]))
    return {"tokens": [{"token": r["token"], "probability": p}
                       for r, p in zip(ranked, probabilities)], "unknown": unknown}
