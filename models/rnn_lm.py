"""Recurrent language model: embedding -> RNN (Elman) | GRU | LSTM -> softmax over the vocabulary.

Elman cell: h_t = tanh(x_t W + h_{t-1} U + b), y_t = softmax(h_t V). GRU and LSTM as options.
Tied weights (decoder weight = embedding matrix, Press & Wolf 2017): when embedding_dim differs
from hidden_size a linear projection hidden_size -> embedding_dim is inserted before the tied
decoder, so every combination of sizes is valid.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class TokenCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of rows of `logits` (N, V) against int64 `targets` (N,), in fp32: what
    F.cross_entropy(logits.float(), targets, reduction="sum") computes, with fewer (N, V)
    tensors alive. F.cross_entropy keeps the log-softmax for backward, whose backward then holds
    it, the incoming gradient and the logits' gradient: three. This keeps the logits themselves
    and builds their gradient, softmax minus one-hot, in one buffer: two, in forward and in
    backward. For a word-level vocabulary these tensors are most of a training step's memory."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=1, dtype=torch.float32)  # (N, V), freed on return
        ctx.save_for_backward(logits, targets)
        return -logp.gather(1, targets[:, None]).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        logits, targets = ctx.saved_tensors
        g = torch.softmax(logits, dim=1, dtype=torch.float32)  # (N, V): the one new buffer
        g.scatter_add_(1, targets[:, None], torch.full((g.shape[0], 1), -1.0, device=g.device))
        g.mul_(grad)
        return g.to(logits.dtype), None


@dataclass
class RNNLMConfig:
    vocab_size: int = 128
    cell: str = "gru"  # rnn (Elman, tanh) | gru | lstm
    embedding_dim: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.0  # on embeddings, between layers and before the decoder
    tie_weights: bool = False


class RNNLM(nn.Module):
    def __init__(self, config: RNNLMConfig):
        super().__init__()
        if config.cell not in CELLS:
            raise ValueError(f"unknown cell {config.cell!r}")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        kwargs = {"nonlinearity": "tanh"} if config.cell == "rnn" else {}
        self.rnn = CELLS[config.cell](
            config.embedding_dim, config.hidden_size, num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0, batch_first=True, **kwargs,
        )
        self.drop = nn.Dropout(config.dropout)
        out_dim = config.hidden_size
        self.proj = None
        if config.tie_weights and config.embedding_dim != config.hidden_size:
            self.proj = nn.Linear(config.hidden_size, config.embedding_dim)
            out_dim = config.embedding_dim
        self.decoder = nn.Linear(out_dim, config.vocab_size)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight  # (V, E) shared

    def features(self, idx: torch.Tensor, state=None):
        """idx: (B, T) token ids -> what the decoder reads, (B, T, D) with D = hidden_size (or
        embedding_dim through the projection), and the recurrent state after the last step."""
        x = self.drop(self.embedding(idx))  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H); state: (L, B, H) or a pair for LSTM
        out = self.drop(out)
        if self.proj is not None:
            out = self.proj(out)  # (B, T, E)
        return out, state

    def step(self, idx: torch.Tensor, state=None):
        """idx: (B, T) token ids -> logits (B, T, V) and the recurrent state after the last step."""
        out, state = self.features(idx, state)
        return self.decoder(out), state  # (B, T, V)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        # idx, targets: (B, T) int64; every window starts from a zero state
        logits, _ = self.step(idx)  # (B, T, V)
        loss = None
        if targets is not None:
            flat = logits.reshape(-1, logits.size(-1))  # (B*T, V)
            loss = TokenCrossEntropy.apply(flat, targets.reshape(-1)) / flat.shape[0]
        return logits, loss

    def loss_sum(self, idx: torch.Tensor, targets: torch.Tensor, chunk_tokens: int,
                 autocast=None) -> torch.Tensor:
        """Summed fp32 cross-entropy of `targets` (B, T) given `idx` (B, T), with the decoder
        applied to at most `chunk_tokens` positions at a time: the (B, T, V) logits of forward()
        never exist, only a (chunk_tokens, V) slice of them (and one temporary). `autocast`:
        a context-manager factory for the matmuls (bf16 on CUDA); the loss is summed in fp32."""
        ctx = autocast or contextlib.nullcontext
        with ctx():
            out, _ = self.features(idx)  # (B, T, D)
        out, targets = out.flatten(0, 1), targets.flatten()  # (B*T, D), (B*T,)
        total = torch.zeros((), dtype=torch.float32, device=out.device)
        for s in range(0, out.shape[0], max(1, chunk_tokens)):
            with ctx():
                logits = self.decoder(out[s:s + chunk_tokens])  # (chunk, V)
            total += TokenCrossEntropy.apply(logits, targets[s:s + chunk_tokens])
            del logits  # before the next chunk's logits are allocated
        return total

    def _cell_step(self, x: torch.Tensor, state):
        """One time step with the cell functions (cheaper than an nn.RNN call per token).
        x: (B, E); state as returned by nn.RNN/GRU/LSTM: (L, B, H), or a pair of those for LSTM."""
        rnn, cell = self.rnn, self.config.cell
        hs, cs = (state if cell == "lstm" else (state, None))
        new_h, new_c = [], []
        for layer in range(self.config.num_layers):
            w = [getattr(rnn, f"{name}_l{layer}")
                 for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if cell == "lstm":
                h, c = torch.lstm_cell(x, (hs[layer], cs[layer]), *w)  # (B, H) each
                new_c.append(c)
            elif cell == "gru":
                h = torch.gru_cell(x, hs[layer], *w)  # (B, H)
            else:
                h = torch.rnn_tanh_cell(x, hs[layer], *w)  # the Elman step
            new_h.append(h)
            x = h
        out = self.proj(x) if self.proj is not None else x
        state = (torch.stack(new_h), torch.stack(new_c)) if cell == "lstm" else torch.stack(new_h)
        return self.decoder(out), state  # (B, V)

    @torch.no_grad()
    def next_token_logits(self, prefix_ids):
        """Logits (1, V) of the token after `prefix_ids` (empty: after <unk>, id 0), and the
        recurrent state there."""
        device = self.embedding.weight.device
        ids = torch.as_tensor(list(prefix_ids) or [0], dtype=torch.long, device=device)[None]
        out, state = self.features(ids)  # (1, P, D)
        return self.decoder(out[:, -1]), state  # only the last position is sampled from

    @torch.no_grad()
    def generate(self, prefix_ids, n: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None, top_k: int | None = None,
                 deadline: float | None = None, never: tuple[int, ...] = ()) -> list[int]:
        """Feed `prefix_ids` (at least one id), then sample `n` next tokens; returns the n new ids.
        Draws come from `generator` (never the global RNG), which must live on the model's
        device; the loop stays on the device and reads the ids back once at the end. Memory:
        the prefix's features and a few (1, V) tensors, however long the prefix. `top_k` keeps
        the k likeliest tokens at each draw; ids in `never` are never drawn (a char-level
        model's <unk>, which no training text holds); past `deadline` (time.monotonic()) it raises
        TimeoutError, so a caller's time limit stops the work, not just the wait."""
        was_training = self.training
        self.eval()
        logits, state = self.next_token_logits(prefix_ids)  # (1, V)
        out = []
        try:
            for i in range(n):
                if deadline is not None and i % 16 == 0 and time.monotonic() > deadline:
                    raise TimeoutError(f"generation passed its time limit after {i} tokens")
                logits = logits.float() / max(temperature, 1e-6)
                if never:
                    logits[:, list(never)] = float("-inf")
                if top_k is not None and top_k < logits.shape[-1]:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (1, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
                out.append(nxt)  # (1, 1)
                logits, state = self._cell_step(self.embedding(nxt[:, 0]), state)
        finally:
            self.train(was_training)
        return torch.cat(out).flatten().tolist() if out else []

    def layer_groups(self) -> dict[str, list[nn.Parameter]]:
        """embedding, rnn.0 .. rnn.{L-1} (per recurrent layer), proj, decoder."""
        groups: dict[str, list[nn.Parameter]] = {"embedding": [self.embedding.weight]}
        for layer in range(self.config.num_layers):
            groups[f"rnn.{layer}"] = [p for name, p in self.rnn.named_parameters()
                                      if name.endswith(f"_l{layer}")]
        if self.proj is not None:
            groups["proj"] = list(self.proj.parameters())
        # a tied decoder weight is the embedding: report the decoder bias only
        groups["decoder"] = [self.decoder.bias] if self.config.tie_weights else \
            list(self.decoder.parameters())
        return groups
