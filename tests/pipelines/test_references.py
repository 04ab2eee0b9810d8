"""Reference preprocessing (docs/model.md#3-reference-preprocessing): letterbox geometry, white padding, RGBA on white, input forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kaleido_s2v.common.letterbox import letterbox_placement
from kaleido_s2v.pipelines.references import (
    image_to_tensor,
    letterbox,
    load_reference,
    prepare_references,
    reference_fingerprint,
)


def _solid(width: int, height: int, colour=(10, 120, 40)) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


@pytest.mark.parametrize(
    ("image_size", "video_hw", "expected_size"),
    [
        ((200, 100), (64, 64), (64, 32)),  # wide: the width touches the border
        ((100, 200), (64, 64), (32, 64)),  # tall: the height touches the border
        ((50, 50), (64, 96), (64, 64)),  # square into a wide video
        ((100, 30), (64, 96), (96, 28)),  # r = 3.33 > 1.5: (W, int(W / r)) = (96, int(28.8))
        ((37, 100), (64, 96), (23, 64)),  # r = 0.37: (int(H * r), H) = (int(23.68), 64)
        # r == W / H is not r > W / H: (int(H * r), H) = (int(144.0), 112); the other branch would
        # give (W, int(W / r)) = (144, int(111.99999999999999)) = (144, 111).
        ((216, 168), (112, 144), (144, 112)),
    ],
)
def test_fit_size_follows_the_spec_formula_with_truncation(image_size, video_hw, expected_size):
    placement = letterbox_placement(*image_size, *video_hw)
    assert (placement.width, placement.height) == expected_size


def test_wide_image_is_centred_with_white_bars_top_and_bottom():
    canvas = np.asarray(letterbox(_solid(200, 100), 64, 64))
    assert canvas.shape == (64, 64, 3)
    # Resized to 64x32, top = (64 - 32) // 2 = 16.
    assert (canvas[:16] == 255).all() and (canvas[48:] == 255).all()
    assert (canvas[16:48] == (10, 120, 40)).all()


def test_tall_image_is_centred_with_white_bars_left_and_right():
    canvas = np.asarray(letterbox(_solid(100, 200), 64, 64))
    assert (canvas[:, :16] == 255).all() and (canvas[:, 48:] == 255).all()
    assert (canvas[:, 16:48] == (10, 120, 40)).all()


def test_odd_padding_puts_the_extra_pixel_right_and_bottom():
    # 100x30 into 64x96: resized to 96x28, dh = 36 -> top 18, bottom 18; 37x100 -> 23x64, dw = 73 -> left 36.
    canvas = np.asarray(letterbox(_solid(37, 100), 64, 96))
    assert (canvas[:, :36] == 255).all()
    assert (canvas[:, 36:59] == (10, 120, 40)).all()
    assert (canvas[:, 59:] == 255).all()


def test_square_image_in_square_video_fills_it_with_lanczos():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8))
    canvas = letterbox(image, 64, 64)
    assert np.array_equal(np.asarray(canvas), np.asarray(image.resize((64, 64), Image.LANCZOS)))


def test_rgba_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red
    rgba[2:, :, 3] = 0  # bottom half fully transparent
    rgba[3, 3, 3] = 128  # one half-transparent pixel
    rgb = np.asarray(load_reference(Image.fromarray(rgba)))
    assert (rgb[:2] == (200, 0, 0)).all()
    assert (rgb[2, :] == 255).all()
    assert abs(int(rgb[3, 3, 1]) - 127) <= 1 and abs(int(rgb[3, 3, 0]) - 227) <= 1


def test_rgba_letterbox_of_transparent_subject_is_white_everywhere_but_the_subject(reference_files):
    canvas = np.asarray(letterbox(load_reference(reference_files[1]), 64, 64))
    # tall.png is 16x48 -> 21x64 centred: columns 21..41; its transparent rows are white too.
    assert (canvas[:, :21] == 255).all() and (canvas[:, 42:] == 255).all()
    assert (canvas[:5, 21:42] == 255).all()  # transparent top rows became white
    assert canvas[32, 31, 0] < 50 and canvas[32, 31, 1] > 150  # the opaque green band


def test_pixels_scale_to_minus_one_one():
    tensor = image_to_tensor(Image.fromarray(np.array([[[0, 255, 127]]], np.uint8)))
    assert tensor.shape == (3, 1, 1)
    assert torch.allclose(tensor[:, 0, 0], torch.tensor([-1.0, 1.0, (127 - 127.5) / 127.5]))


def test_every_input_form_gives_the_same_tensor(reference_files):
    path = reference_files[0]
    pil = Image.open(path).convert("RGB")
    array = np.array(pil)
    forms = [
        path,
        str(path),
        pil,
        array,
        array.astype(np.float32) / 255.0,
        torch.from_numpy(array).permute(2, 0, 1).float() / 255.0,
        torch.from_numpy(array.copy()),  # (H, W, 3) uint8
    ]
    expected = prepare_references([path], 64, 96)
    assert expected.shape == (1, 3, 64, 96)
    for form in forms:
        assert torch.equal(prepare_references([form], 64, 96), expected), type(form)


def test_references_keep_their_order(reference_files):
    batch = prepare_references(list(reference_files), 32, 32)
    assert batch.shape == (2, 3, 32, 32)
    assert torch.equal(batch[1], prepare_references([reference_files[1]], 32, 32)[0])


def test_missing_file_names_the_reference(tmp_path):
    with pytest.raises(FileNotFoundError, match="reference 1: .*nope.png does not exist"):
        prepare_references([_solid(8, 8), tmp_path / "nope.png"], 32, 32)


def test_zero_byte_file_is_reported_as_empty(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty file"):
        load_reference(empty)


def test_corrupt_file_is_reported_as_unreadable(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png body")
    with pytest.raises(ValueError, match="not a readable image"):
        load_reference(corrupt)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 4, 2), np.uint8), "not an image"),
        (np.full((4, 4, 3), 2.0, np.float32), r"expected \[0, 1\]"),
        (np.zeros((0, 4, 3), np.uint8), "empty side"),
        (np.zeros((4, 4, 3), np.int64), "must be uint8"),
    ],
)
def test_bad_arrays_are_rejected_with_the_reason(array, message):
    with pytest.raises(ValueError, match=message):
        load_reference(array)


def test_fingerprint_of_a_file_is_its_sha256(reference_files):
    import hashlib

    assert (
        reference_fingerprint(reference_files[0])
        == hashlib.sha256(reference_files[0].read_bytes()).hexdigest()
    )
    assert reference_fingerprint(reference_files[0]) != reference_fingerprint(reference_files[1])


def _expected_prepared(path, fitted: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """docs/model.md#3-reference-preprocessing spelled out with explicit PIL calls, as the pipeline prepared references before images.py."""
    with Image.open(path) as opened:
        opened.load()
        image = opened.copy()
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    resized = image.convert("RGB").resize(fitted, Image.LANCZOS)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(resized, ((width - fitted[0]) // 2, (height - fitted[1]) // 2))
    array = np.asarray(canvas, dtype=np.float32)
    return torch.from_numpy((array - 127.5) / 127.5).permute(2, 0, 1)


@pytest.mark.parametrize(
    ("name", "mode", "size", "fitted"),
    [
        ("rgba.png", "RGBA", (50, 30), (64, 38)),  # r = 1.67 > 64 / 48: (64, int(38.4))
        ("rgb.png", "RGB", (20, 40), (24, 48)),  # r = 0.5: (int(24.0), 48)
        ("palette.png", "P", (33, 33), (48, 48)),
        ("photo.jpg", "RGB", (60, 20), (64, 21)),
    ],
)
def test_ordinary_8_bit_files_prepare_bit_identically(tmp_path, name, mode, size, fitted):
    channels = 3 if mode == "P" else len(mode)
    pixels = np.random.default_rng(3).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "P":
        image = image.convert("P")
        image.info["transparency"] = image.getpixel((0, 0))  # a palette entry in use is transparent
    image.save(tmp_path / name)
    assert Image.open(tmp_path / name).mode == mode
    prepared = prepare_references([tmp_path / name], 48, 64)
    assert torch.equal(prepared[0], _expected_prepared(tmp_path / name, fitted, 48, 64))


@pytest.mark.parametrize("kind", ["16-bit grey png", "exif-rotated jpeg"])
def test_16_bit_and_exif_rotated_references_are_prepared_as_viewers_show_them(tmp_path, kind):
    if kind == "16-bit grey png":
        path = tmp_path / "grey16.png"
        Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(path)  # mid grey, not 99.7% white
        expected = torch.full((1, 3, 8, 8), (128 - 127.5) / 127.5)
    else:
        path = tmp_path / "rotated.jpg"
        stored = np.zeros((16, 32, 3), np.uint8)
        stored[:, 16:] = 255  # stored: black left, white right; orientation 6 shows white at the bottom
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(stored).save(path, exif=exif, quality=95)
        expected = torch.full((1, 3, 32, 16), -1.0)
        expected[..., 16:, :] = 1.0
    prepared = prepare_references([path], *expected.shape[-2:])
    assert torch.allclose(prepared[..., 2:-2, :], expected[..., 2:-2, :], atol=0.1)  # JPEG edges
