"""The three networks: shapes, options and the behaviour each option promises; and the family
table that describes each of them completely."""

import dataclasses
import math

import pytest
import torch
import torch.nn as nn

from core.metrics import metric_goal
from models.cnn import CNN, CNNConfig
from models.family import DataShape
from models.registry import FAMILIES, defaults
from models.mlp import MLP, MLPConfig
from models.rnn_lm import RNNLM, RNNLMConfig


def _all_params_get_grads(model, loss):
    loss.backward()
    return all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# MLP


@pytest.mark.parametrize("activation,cls",
                         [("relu", nn.ReLU), ("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh)])
def test_mlp_shapes_activation_and_loss(activation, cls):
    torch.manual_seed(0)
    model = MLP(MLPConfig(in_features=64, num_classes=10, hidden_sizes=[32, 16, 8],
                          activation=activation))
    assert isinstance(model.act, cls)
    assert [m.out_features for m in model.layers] == [32, 16, 8]
    x, y = torch.rand(5, 1, 8, 8), torch.randint(0, 10, (5,))
    logits, loss = model(x, y)
    assert logits.shape == (5, 10)
    assert loss.shape == () and _all_params_get_grads(model, loss)
    logits2, none = model(x)
    assert none is None and torch.equal(logits, logits2)
    assert list(model.layer_groups()) == ["layers.0", "layers.1", "layers.2", "head"]


def test_mlp_needs_two_hidden_layers():
    with pytest.raises(ValueError):
        MLP(MLPConfig(hidden_sizes=[32]))


def test_mlp_dropout_active_in_training_only():
    torch.manual_seed(0)
    model = MLP(MLPConfig(in_features=16, hidden_sizes=[64, 64], dropout=0.5))
    x = torch.rand(4, 16)
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])


# ---------------------------------------------------------------------------------------------
# CNN


@pytest.mark.parametrize("channels,hw,blocks", [
    (1, (8, 8), [8, 16]),
    (3, (8, 8), [4, 4, 4, 4, 4]),  # 8 -> 4 -> 2 -> 1 -> 1 -> 1: deep nets on tiny images survive
    (3, (32, 32), [8, 16]),
    (1, (9, 13), [8]),  # odd, non-square
    (3, (64, 48), [4, 4]),  # large: the head stays <= 4x4 per channel
])
def test_cnn_any_image_size(channels, hw, blocks):
    torch.manual_seed(0)
    model = CNN(CNNConfig(in_channels=channels, height=hw[0], width=hw[1], num_classes=7,
                          channels=blocks))
    x, y = torch.rand(3, channels, *hw), torch.randint(0, 7, (3,))
    logits, loss = model(x, y)
    assert logits.shape == (3, 7)
    assert model.head.in_features <= blocks[-1] * 16
    assert _all_params_get_grads(model, loss)


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_cnn_kernel_sizes_keep_spatial_size_and_pooling_kinds(kernel_size, pooling):
    model = CNN(CNNConfig(in_channels=1, height=8, width=8, channels=[4], kernel_size=kernel_size,
                          pooling=pooling, activation="tanh"))
    block = model.blocks[0]
    assert block.conv.padding == (kernel_size // 2, kernel_size // 2)
    assert isinstance(block.pool, nn.MaxPool2d if pooling == "max" else nn.AvgPool2d)
    assert block(torch.rand(2, 1, 8, 8)).shape == (2, 4, 4, 4)  # 'same' conv, then 2x2 pool


def test_cnn_rejects_even_kernel():
    with pytest.raises(ValueError):
        CNN(CNNConfig(kernel_size=4))


# ---------------------------------------------------------------------------------------------
# RNN-LM


@pytest.mark.parametrize("cell,cls", [("rnn", nn.RNN), ("gru", nn.GRU), ("lstm", nn.LSTM)])
def test_rnn_lm_cells_shapes_and_initial_loss(cell, cls):
    torch.manual_seed(0)
    V = 50
    model = RNNLM(RNNLMConfig(vocab_size=V, cell=cell, embedding_dim=16, hidden_size=24,
                              num_layers=2, dropout=0.1))
    assert isinstance(model.rnn, cls) and model.rnn.num_layers == 2
    if cell == "rnn":
        assert model.rnn.nonlinearity == "tanh"  # the Elman cell
    idx = torch.randint(0, V, (4, 12))
    logits, loss = model(idx, torch.roll(idx, -1, 1))
    assert logits.shape == (4, 12, V)
    assert abs(loss.item() - math.log(V)) < 0.5  # an untrained model is close to uniform
    assert _all_params_get_grads(model, loss)
    assert list(model.layer_groups()) == ["embedding", "rnn.0", "rnn.1", "decoder"]


def test_elman_cell_is_the_lecture_equation():
    torch.manual_seed(0)
    model = RNNLM(RNNLMConfig(vocab_size=7, cell="rnn", embedding_dim=3, hidden_size=4))
    idx = torch.tensor([[1, 5, 2]])
    logits, _ = model(idx)
    r = model.rnn
    h = torch.zeros(4)
    for t in range(3):  # h_t = tanh(x_t W + h_{t-1} U + b); y_t = h_t V + c
        x = model.embedding.weight[idx[0, t]]
        h = torch.tanh(x @ r.weight_ih_l0.T + r.bias_ih_l0 + h @ r.weight_hh_l0.T + r.bias_hh_l0)
        y = h @ model.decoder.weight.T + model.decoder.bias
        assert torch.allclose(logits[0, t], y, atol=1e-6)


def test_tied_weights_same_size_share_the_embedding():
    model = RNNLM(RNNLMConfig(vocab_size=30, embedding_dim=16, hidden_size=16, tie_weights=True))
    assert model.decoder.weight is model.embedding.weight and model.proj is None
    untied = RNNLM(RNNLMConfig(vocab_size=30, embedding_dim=16, hidden_size=16))
    n_tied = sum(p.numel() for p in model.parameters())
    assert n_tied == sum(p.numel() for p in untied.parameters()) - 30 * 16


def test_tied_weights_different_sizes_add_a_projection():
    model = RNNLM(RNNLMConfig(vocab_size=30, embedding_dim=8, hidden_size=20, tie_weights=True))
    assert model.proj is not None and (model.proj.in_features, model.proj.out_features) == (20, 8)
    assert model.decoder.weight is model.embedding.weight
    logits, loss = model(torch.randint(0, 30, (2, 5)), torch.randint(0, 30, (2, 5)))
    assert logits.shape == (2, 5, 30)
    assert "proj" in model.layer_groups()


def test_generate_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    model = RNNLM(RNNLMConfig(vocab_size=20, cell="lstm", embedding_dim=8, hidden_size=8))
    model.train()
    state = torch.get_rng_state()
    a = model.generate([1, 2, 3], 25, generator=torch.Generator().manual_seed(7))
    b = model.generate([1, 2, 3], 25, generator=torch.Generator().manual_seed(7))
    assert a == b and len(a) == 25 and all(0 <= i < 20 for i in a)
    assert torch.equal(state, torch.get_rng_state())
    assert model.training  # mode restored


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_generation_step_matches_the_sequence_forward(cell):
    torch.manual_seed(0)
    model = RNNLM(RNNLMConfig(vocab_size=11, cell=cell, embedding_dim=6, hidden_size=9,
                              num_layers=2, tie_weights=True)).eval()
    idx = torch.randint(0, 11, (2, 5))
    full, _ = model(idx)  # (2, 5, 11)
    _, state = model.step(idx[:, :4])
    with torch.no_grad():
        last, _ = model._cell_step(model.embedding(idx[:, 4]), state)
    assert torch.allclose(full[:, 4], last, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the family table

SHAPES = {"images": DataShape(channels=3, height=9, width=7, num_classes=4),
          "text": DataShape(vocab_size=37)}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_entry_is_complete(name):
    fam = FAMILIES[name]
    assert fam.name == name and fam.description
    assert (fam.data_kind, fam.task) in {("images", "classification"),
                                         ("text", "language_modeling")}
    names = [p.name for p in fam.params]
    assert len(names) == len(set(names)) and all(p.description for p in fam.params)
    # the headline metric is one it reports, and it has a better direction
    assert fam.headline_metric in fam.metrics and metric_goal(fam.headline_metric) is not None
    assert {"train_loss", "val_loss", "lr"} <= set(fam.metrics)
    assert not any(m.startswith("grad_norm/") for m in fam.metrics)

    # hyperparameters -> config -> module, and the size hook counts that module's parameters
    hp, shape = defaults(name), SHAPES[fam.data_kind]
    config = fam.build_config(hp, shape)
    assert dataclasses.is_dataclass(config) and type(config) is fam.config_type()
    torch.manual_seed(0)
    model = fam.build(config)
    assert isinstance(model, fam.model_type()) and isinstance(model, nn.Module)
    assert fam.size(hp, shape).params == sum(p.numel() for p in model.parameters())
    assert set(model.layer_groups()), "grad_norm/<layer> needs the layer groups"

