"""What a model use is given before any network runs: image files prepared to a dataset's shape
(api/services/images.py), prompts in a vocabulary (models/inference.py), and the byte-bounded
cache of loaded networks (api/services/inference.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from api.services.images import ImageError, Preparation, prepare_image
from api.services.inference import ByteLRU
from models.inference import InputError, encode_prompt

DIGITS = Preparation(1, 8, 8, light_on_dark=True, max_pixels=10_000)
CIFAR = Preparation(3, 32, 32, light_on_dark=False, max_pixels=10_000)


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def test_a_large_drawing_is_averaged_down_like_the_digits_set():
    big = np.zeros((32, 32), dtype=np.uint8)
    big[8:24, 12:16] = 255  # a vertical bar: 2 blocks wide of the 8x8 grid... in 4x4 blocks
    out = prepare_image(encoded(Image.fromarray(big)), DIGITS, "files.0")
    assert out.shape == (1, 8, 8) and out.dtype == np.float32
    expected = big.reshape(8, 4, 8, 4).mean(axis=(1, 3)) / 255  # the box filter: block means
    assert np.allclose(out[0], expected, atol=1e-6)


def test_ink_on_paper_is_inverted_for_an_ink_dataset_but_not_for_cifar():
    paper = np.full((8, 8), 255, dtype=np.uint8)
    paper[2:6, 3] = 0  # a dark stroke on white
    digits = prepare_image(encoded(Image.fromarray(paper)), DIGITS, "f")
    assert digits[0, 2, 3] == 1.0 and digits[0, 0, 0] == 0.0
    rgb = prepare_image(encoded(Image.fromarray(paper).convert("RGB")), CIFAR, "f")
    assert rgb.shape == (3, 32, 32) and rgb[:, 0, 0].tolist() == [1.0, 1.0, 1.0]


def test_a_wide_image_is_padded_with_its_ground_not_stretched():
    wide = np.zeros((8, 16), dtype=np.uint8)
    wide[:, 6:10] = 255  # a bar in the middle
    out = prepare_image(encoded(Image.fromarray(wide)), DIGITS, "f")[0]
    # padded to 16 x 16 (4 rows of ground above and below), then halved
    assert out[:2].max() == 0 and out[-2:].max() == 0
    assert out[4, 3] == 1.0 and out[4, 4] == 1.0 and out[4, 0] == 0.0


def test_a_transparent_drawing_reads_as_ink_on_paper():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent...
    rgba[2:6, 4] = (0, 0, 0, 255)  # ...with an opaque black stroke
    out = prepare_image(encoded(Image.fromarray(rgba)), DIGITS, "f")
    assert out[0, 3, 4] == 1.0 and out[0, 0, 0] == 0.0


def test_a_jpeg_is_accepted_and_a_gif_or_garbage_is_not():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8))
    assert prepare_image(encoded(photo, "JPEG"), CIFAR, "f").shape == (3, 32, 32)
    for data, says in ((encoded(Image.new("L", (8, 8)), "GIF"), "not a PNG or JPEG"),
                       (b"", "is empty"), (b"hello", "not a PNG or JPEG")):
        with pytest.raises(ImageError) as refused:
            prepare_image(data, DIGITS, "files.3")
        assert refused.value.field == "files.3" and says in refused.value.message


def test_a_truncated_png_is_refused_as_damaged():
    noise = np.random.default_rng(1).integers(0, 255, (64, 64), np.uint8)
    whole = encoded(Image.fromarray(noise))
    with pytest.raises(ImageError, match="is damaged and does not decode"):
        prepare_image(whole[: len(whole) // 2], Preparation(1, 8, 8, True, 10_000), "f")


def test_a_decompression_bomb_is_refused_before_decoding():
    bomb = encoded(Image.new("L", (200, 100)))  # 20,000 pixels > DIGITS.max_pixels
    with pytest.raises(ImageError, match="200 x 100 pixels; at most 10,000"):
        prepare_image(bomb, DIGITS, "f")


def test_prompts_in_a_word_and_a_char_vocabulary():
    words = ["<unk>", "the", "cat", "sat", "."]
    got = encode_prompt("The cat sat on the mat.", words, "word")
    assert got.ids == [1, 2, 3, 0, 1, 0, 4] and got.unknown == ["on", "mat"]
    chars = ["<unk>", " ", "a", "b"]
    got = encode_prompt("ab ca\u2603b c", chars, "char")
    assert got.ids == [2, 3, 1, 2, 3, 1] and got.unknown == ["c", "\u2603"]
    with pytest.raises(InputError, match="3,000 tokens long"):
        encode_prompt("a" * 3000, chars, "char")


def test_the_cache_keeps_the_recently_used_within_its_bytes():
    cache = ByteLRU(100)
    loads = []

    def loader(key, size):
        def load():
            loads.append(key)
            return f"value {key}", size
        return load

    assert cache.get_or_load("a", loader("a", 40)) == "value a"
    cache.get_or_load("b", loader("b", 40))
    cache.get_or_load("a", loader("a", 40))  # a hit: "a" is now the most recent
    cache.get_or_load("c", loader("c", 40))  # evicts "b", the least recent
    assert loads == ["a", "b", "c"] and cache.bytes == 80 and len(cache) == 2
    cache.get_or_load("a", loader("a", 40))
    cache.get_or_load("b", loader("b", 40))
    assert loads == ["a", "b", "c", "b"]
    cache.get_or_load("huge", loader("huge", 1000))  # used once, never kept
    assert "huge" in loads and cache.bytes <= 100 and cache.hits == 2
