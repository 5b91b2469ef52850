"""GET /jobs/{id}/inspect/...: what a trained network learned (api/routes/inspect.py).

Tensors are nested JSON lists (list[Any]: their depth is the tensor's), floats rounded to 5
significant digits, pixels to 3 decimals, and null where a diverged run left NaN or infinity.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

CHECKPOINT = "The checkpoint that answered (default: the job's best by its headline metric)."
EPOCH = "Epochs its network had trained."
IMAGE = "The image, C x H x W, values in [0, 1] (average-pooled if a side is over 64)."


class FiltersOut(BaseModel):
    checkpoint: int = Field(description=CHECKPOINT)
    epoch: int = Field(description=EPOCH)
    layer: str = Field(description="The layer shown: blocks.0.conv, the first convolution.")
    shape: list[int] = Field(description="[out channels, in channels, k, k].")
    filters: list[Any] = Field(
        description="The weights of the first `limit` filters, out' x in x k x k.")
    min: float | None = Field(description="The smallest weight shown (for a shared colour "
                              "scale).")
    max: float | None = Field(description="The largest weight shown.")


class FeatureBlock(BaseModel):
    name: str = Field(description="blocks.i: conv, activation, then pooling.")
    shape: list[int] = Field(description="The block's whole output, [C, H, W].")
    maps_shape: list[int] = Field(
        description="What `maps` holds: the first 32 channels at most, pooled if a side is "
        "over 64.")
    maps: list[Any] = Field(description="The block's output for this image, C' x H' x W'.")


class FeatureMapsOut(BaseModel):
    checkpoint: int = Field(description=CHECKPOINT)
    epoch: int = Field(description=EPOCH)
    index: int = Field(description="The validation image shown (0-based).")
    label: int = Field(description="Its true class.")
    predicted: int = Field(description="The class the network gives it.")
    confidence: float | None = Field(description="The probability of the predicted class.")
    image: list[Any] = Field(description=IMAGE)
    blocks: list[FeatureBlock] = Field(description="One per conv block, input side first.")
    validation_size: int = Field(description="Images in the validation set: index < this.")


class UnitsOut(BaseModel):
    checkpoint: int = Field(description=CHECKPOINT)
    epoch: int = Field(description=EPOCH)
    layer: str = Field(description="The layer shown: layers.0, the first hidden layer.")
    shape: list[int] = Field(description="The input image's [C, H, W]: each unit's shape.")
    total_units: int = Field(description="Units in the layer (the first ones are shown).")
    units: list[Any] = Field(
        description="Each unit's incoming weights as an image, C x H x W: at most `limit` "
        "units, and at most 131,072 numbers in all (167 units of 28 x 28, 42 of 3 x 32 x 32).")
    min: float | None = Field(description="The smallest weight shown.")
    max: float | None = Field(description="The largest weight shown.")


class Mistake(BaseModel):
    index: int = Field(description="Its position in the validation set.")
    label: int = Field(description="Its true class.")
    predicted: int = Field(description="The (wrong) class the network gives it.")
    confidence: float | None = Field(description="The probability of the predicted class.")
    label_probability: float | None = Field(description="The probability of the true class.")
    image: list[Any] = Field(description=IMAGE)


class MistakesOut(BaseModel):
    checkpoint: int = Field(description=CHECKPOINT)
    epoch: int = Field(description=EPOCH)
    shape: list[int] = Field(description="The images' [C, H, W].")
    validation_size: int = Field(description="Images in the validation set.")
    wrong: int = Field(description="How many of them the network gets wrong "
                       "(validation_size x (1 - val_accuracy)).")
    items: list[Mistake] = Field(description="The most confident mistakes, most confident "
                                 "first, at most `limit`.")


class EmbeddingPoint(BaseModel):
    id: int = Field(description="The token id.")
    token: str
    x: float | None = Field(description="First coordinate (PCA: the first component).")
    y: float | None = Field(description="Second coordinate.")


class EmbeddingsOut(BaseModel):
    checkpoint: int = Field(description=CHECKPOINT)
    epoch: int = Field(description=EPOCH)
    method: Literal["pca", "tsne"]
    points: list[EmbeddingPoint] = Field(
        description="Token ids 1..limit (<unk>, id 0, left out): at word level the commonest "
        "words, as the vocabulary is ordered by frequency.")
    vocab_size: int = Field(description="Tokens in the vocabulary, <unk> included.")
    explained_variance: list[float | None] | None = Field(
        description="PCA: the share of the shown tokens' variance along each axis; t-SNE: "
        "null.")


class Neighbour(BaseModel):
    id: int
    token: str
    similarity: float | None = Field(description="Cosine similarity of the embeddings, "
                                     "in [-1, 1].")


class NeighboursOut(BaseModel):
    checkpoint: int = Field(description=CHECKPOINT)
    epoch: int = Field(description=EPOCH)
    token: str = Field(description="The token asked about, as the vocabulary spells it.")
    id: int = Field(description="Its id.")
    neighbours: list[Neighbour] = Field(
        description="Most similar first; the token itself and <unk> left out.")


class NextToken(BaseModel):
    token: str
    probability: float | None


class NextTokenOut(BaseModel):
    checkpoint: int = Field(description=CHECKPOINT)
    epoch: int = Field(description=EPOCH)
    prompt: str
    tokens: list[NextToken] = Field(description="The likeliest next tokens, likeliest first.")
    unknown: list[str] = Field(
        description="Prompt tokens the vocabulary lacks: characters dropped (char level), "
        "words read as <unk> (word level).")
