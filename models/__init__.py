"""Neural networks and the training core of Trainyard (pure torch).

Modules: mlp, cnn, rnn_lm (one nn.Module + config each), registry (hyperparameter catalogue and
validation; imports no torch so the API can use it cheaply), data (datasets as tensors) and
train (``fit``, the training core). This package file imports nothing, on purpose: importing
``models.registry`` must not pull in torch.
"""
