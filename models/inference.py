"""Using a trained network: class probabilities for images, text from a language model.

Pure torch (and models/): the API's inference service (api/services/inference.py) loads the
network from a checkpoint (models.checkpoints.model_from_checkpoint) and calls these; image
files are decoded into arrays before they get here (api/services/images.py).

Inputs are checked here, against the checkpoint's own shapes, and a problem is an InputError
naming the field, which the API answers with a 422.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from models.data import UNK, detokenize, tokenize

MAX_PROMPT_TOKENS = 2_000  # a longer prompt is refused: the prefix pass is O(prompt)
MAX_NEW_TOKENS = 2_000
_CLOSING = set(".,;:!?)]}%'\"")


class InputError(ValueError):
    """An input that does not fit the model: `field` names it ("inputs", "prompt")."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def image_shape(ckpt: dict) -> tuple[int, int, int]:
    """(C, H, W) a classifier checkpoint's network takes."""
    cfg = ckpt["model_config"]
    if "in_channels" in cfg:  # CNN
        return cfg["in_channels"], cfg["height"], cfg["width"]
    if ckpt.get("input_shape"):
        return tuple(ckpt["input_shape"])
    # An MLP checkpoint older than input_shape: square grey or RGB images, as every built-in
    # image set is.
    return _mlp_shape(cfg["in_features"])


def _mlp_shape(features: int) -> tuple[int, int, int]:
    side = math.isqrt(features)
    if side * side == features:
        return 1, side, side
    side = math.isqrt(features // 3)
    if 3 * side * side == features:
        return 3, side, side
    return 1, 1, features


# ---------------------------------------------------------------------------------------------
# classifiers


def classifier_inputs(values: Sequence, shape: tuple[int, int, int], max_batch: int,
                      field: str = "inputs") -> torch.Tensor:
    """A JSON list of images (each H x W, or C x H x W, values in [0, 1]) as a float32 batch
    (B, C, H, W); InputError naming the offending image otherwise."""
    if not isinstance(values, list) or not values:
        raise InputError(field, "must be a non-empty list of images")
    if len(values) > max_batch:
        raise InputError(field, f"{len(values)} images; at most {max_batch} per request")
    c, h, w = shape
    allowed = f"{h} x {w}" + (f" or {c} x {h} x {w}" if c == 1 else "") if c == 1 \
        else f"{c} x {h} x {w}"
    batch = []
    for i, image in enumerate(values):
        try:
            x = torch.tensor(image, dtype=torch.float32)
        except (TypeError, ValueError):
            raise InputError(f"{field}.{i}", "must be a nested list of numbers of one "
                             f"shape, {allowed}") from None
        given = " x ".join(map(str, x.shape)) or "a single number"
        if x.dim() == 2 and c == 1:
            x = x[None]
        if tuple(x.shape) != (c, h, w):
            raise InputError(f"{field}.{i}", f"has shape {given}; this model takes {allowed}")
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise InputError(f"{field}.{i}", "values must be numbers in [0, 1]")
        batch.append(x)
    return torch.stack(batch)


@torch.inference_mode()
def class_probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> (B, num_classes) softmax probabilities (eval mode)."""
    logits, _ = model(x)
    return torch.softmax(logits.float(), dim=-1)


def predictions(probabilities: torch.Tensor) -> list[dict]:
    """[{"label", "probabilities"}] per row, as the API answers them."""
    labels = probabilities.argmax(dim=-1).tolist()
    return [{"label": label, "probabilities": row}
            for label, row in zip(labels, probabilities.tolist())]


# ---------------------------------------------------------------------------------------------
# language models


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    unknown: list[str]  # characters dropped (char level), words read as <unk> (word level)


def encode_prompt(prompt: str, vocab: list[str], tokenizer: str,
                  max_tokens: int = MAX_PROMPT_TOKENS) -> Prompt:
    """Token ids of `prompt` in a checkpoint's vocabulary. Char level drops characters the
    model never saw (an <unk> in the middle of characters would make it stutter); word level
    reads an unknown word as <unk>, as training did. Both are reported, in order, once each."""
    index = {tok: i for i, tok in enumerate(vocab)}
    tokens = tokenize(prompt, tokenizer)
    if len(tokens) > max_tokens:
        raise InputError("prompt", f"is {len(tokens):,} tokens long ({tokenizer} level); "
                         f"at most {max_tokens:,}")
    ids, unknown = [], []
    for tok in tokens:
        i = index.get(tok)
        if i is None or (tok == UNK and tokenizer == "char"):
            if tok not in unknown:
                unknown.append(tok)
            if tokenizer == "char":
                continue
            i = 0  # <unk>
        ids.append(i)
    return Prompt(ids, unknown)


def _join(prompt: str, continuation: str, tokenizer: str) -> str:
    if tokenizer == "char" or not prompt or not continuation:
        return prompt + continuation
    if prompt[-1].isspace() or continuation[0] in _CLOSING:
        return prompt + continuation
    return prompt + " " + continuation


def generate_text(model: nn.Module, vocab: list[str], tokenizer: str, prompt: str,
                  max_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                  seed: int = 0, deadline: float | None = None) -> dict:
    """Sample `max_tokens` tokens after `prompt` on the model's device; the same seed gives
    the same text. Returns {"text", "continuation", "tokens", "unknown"}."""
    if not 0 < temperature <= 2:
        raise InputError("temperature", "must be in (0, 2]")
    if not 0 <= max_tokens <= MAX_NEW_TOKENS:
        raise InputError("max_tokens", f"must be between 0 and {MAX_NEW_TOKENS}")
    encoded = encode_prompt(prompt, vocab, tokenizer)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    k = min(top_k, len(vocab)) if top_k else None
    # A char-level <unk> stands for characters no training text held: never write it.
    never = (0,) if tokenizer == "char" and vocab and vocab[0] == UNK else ()
    new = model.generate(encoded.ids, max_tokens, temperature=temperature, generator=generator,
                         top_k=k, deadline=deadline, never=never)
    continuation = detokenize([vocab[i] for i in new], tokenizer)
    return {"text": _join(prompt, continuation, tokenizer), "continuation": continuation,
            "tokens": len(new), "unknown": encoded.unknown}


@torch.inference_mode()
def next_token_distribution(model: nn.Module, vocab: list[str], tokenizer: str, prompt: str,
                            top: int = 20) -> list[dict]:
    """The `top` likeliest next tokens after `prompt`: [{"token", "probability"}], likeliest
    first."""
    encoded = encode_prompt(prompt, vocab, tokenizer)
    logits, _ = model.next_token_logits(encoded.ids)
    probs = torch.softmax(logits.float()[0], dim=-1)
    values, ids = torch.topk(probs, min(top, probs.numel()))
    return [{"token": vocab[i], "probability": p} for i, p in zip(ids.tolist(), values.tolist())]


def deadline_after(seconds: float) -> float:
    return time.monotonic() + seconds
