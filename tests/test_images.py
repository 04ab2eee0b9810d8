"""The one image loader (kaleido_s2v.common.images): bit depths, modes, EXIF orientation and unreadable files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from kaleido_s2v.common.images import ImageError, alpha_channel, on_white, open_image, to_8bit

# 511 tells the two usual 16 -> 8 bit rules apart: 511 >> 8 = 1, round(511 / 257) = 2.
SIXTEEN_BIT = [0, 511, 32768, 65535]
EIGHT_BIT = [0, 1, 128, 255]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(
    width: int, height: int, bit_depth: int, colour_type: int, rows: list[bytes], *extra: bytes
) -> bytes:
    """A PNG written chunk by chunk, for what PIL cannot save (16-bit colour, 16-bit tRNS, huge headers)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + row for row in rows))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + b"".join(extra)
        + _chunk(b"IDAT", pixels)
        + _chunk(b"IEND", b"")
    )


def _sixteen_bit_row(samples: list[int]) -> bytes:
    return struct.pack(f">{len(samples)}H", *samples)


def test_16_bit_grey_keeps_the_high_byte(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.array([SIXTEEN_BIT], np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")  # PIL hands 16-bit grey over undecided
    image = open_image(path)
    assert image.mode == "RGB"
    assert np.asarray(image)[0, :, 0].tolist() == EIGHT_BIT  # 32768 -> 128, not 255


def test_32_bit_grey_is_clipped_to_16_bits_before_its_high_byte_is_kept():
    values = np.array([[70000, -5, 65535, 256, 255]], np.int32)  # PIL mode "I" holds any int32
    grey = Image.fromarray(values)
    assert grey.mode == "I"
    image = to_8bit(grey)
    assert image.mode == "RGB"
    assert np.asarray(image)[0, :, 0].tolist() == [255, 0, 255, 1, 0]  # not 70000 >> 8 = 273 wrapped to 17


@pytest.mark.parametrize(("colour_type", "mode"), [(2, "RGB"), (6, "RGBA"), (4, "RGBA")])
def test_16_bit_colour_and_grey_alpha_keep_the_high_byte(colour_type, mode):
    channels = {2: 3, 6: 4, 4: 2}[colour_type]
    samples = [value for value in SIXTEEN_BIT for _ in range(channels)]
    image = open_image(_png(4, 1, 16, colour_type, [_sixteen_bit_row(samples)]), label="test png")
    assert image.mode == mode
    assert np.asarray(image)[0, :, 0].tolist() == EIGHT_BIT
    assert np.asarray(image)[0, :, -1].tolist() == EIGHT_BIT


def test_16_bit_grey_transparent_level_is_matched_at_16_bits():
    transparent = _chunk(b"tRNS", struct.pack(">H", 32768))
    data = _png(3, 1, 16, 0, [_sixteen_bit_row([32768, 32769, 0])], transparent)
    image = open_image(data, label="test png")
    assert image.mode == "RGBA"
    assert alpha_channel(image)[0].tolist() == [0, 255, 255]  # 32769 shares the high byte but is opaque
    assert np.asarray(on_white(image))[0, :, 0].tolist() == [255, 128, 0]


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16] = (255, 0, 0)  # left half red, right half blue as stored
    stored[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image = np.asarray(open_image(path)).astype(int)
    assert image.shape == (32, 16, 3)  # upright: tall
    assert (image[:12, :, 0] > 200).all() and (image[:12, :, 2] < 60).all()  # red on top
    assert (image[20:, :, 2] > 200).all() and (image[20:, :, 0] < 60).all()  # blue below


def _saved(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _palette(transparent: bool) -> Image.Image:
    image = Image.fromarray(np.array([[0, 1]], np.uint8), mode="L").convert("P")
    image.putpalette([200, 10, 10, 10, 10, 200])
    if transparent:
        image.info["transparency"] = 1
    return image


@pytest.mark.parametrize(
    ("source", "fmt", "mode", "pixels", "alpha"),
    [
        (Image.new("CMYK", (2, 1), (0, 255, 255, 0)), "JPEG", "RGB", None, None),
        (_palette(False), "PNG", "RGB", [(200, 10, 10), (10, 10, 200)], None),
        (_palette(True), "PNG", "RGBA", [(200, 10, 10), (10, 10, 200)], [255, 0]),
        (Image.new("RGBA", (2, 1), (1, 2, 3, 40)), "PNG", "RGBA", [(1, 2, 3)] * 2, [40, 40]),
        (Image.new("LA", (2, 1), (90, 7)), "PNG", "RGBA", [(90, 90, 90)] * 2, [7, 7]),
        (Image.new("1", (2, 1), 1), "PNG", "RGB", [(255, 255, 255)] * 2, None),
        (Image.fromarray(np.full((1, 2), 0.5, np.float32)), "TIFF", "RGB", [(128, 128, 128)] * 2, None),
        (Image.fromarray(np.full((1, 2), 32768, np.int32)), "TIFF", "RGB", [(128, 128, 128)] * 2, None),
    ],
    ids=["cmyk", "palette", "palette-transparent", "rgba", "la", "bilevel", "float", "int32"],
)
def test_every_mode_becomes_8_bit_rgb_or_rgba(source, fmt, mode, pixels, alpha):
    image = open_image(_saved(source, fmt), label=f"{source.mode} {fmt}")
    assert image.mode == mode
    if pixels is None:  # CMYK through JPEG: red, up to compression
        assert np.abs(np.asarray(image).astype(int) - (255, 0, 0)).max() < 8
    else:
        assert [tuple(p) for p in np.asarray(image)[0, :, :3].tolist()] == pixels
    assert alpha_channel(image)[0].tolist() == (alpha or [255, 255])


@pytest.mark.parametrize("mode", Image.MODES)
def test_every_pil_mode_has_an_8_bit_rgb_or_rgba_form(mode):
    expected = "RGBA" if mode in ("RGBA", "LA", "PA", "RGBa", "La") else "RGB"
    assert to_8bit(Image.new(mode, (3, 2))).mode == expected


def test_on_white_is_pil_alpha_composite_onto_white():
    rgba = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8))
    expected = Image.alpha_composite(Image.new("RGBA", (7, 5), (255, 255, 255, 255)), rgba).convert("RGB")
    assert np.array_equal(np.asarray(on_white(to_8bit(rgba))), np.asarray(expected))


def test_float_image_outside_zero_one_is_refused():
    with pytest.raises(ImageError, match=r"float image: float values span \[0, 2\]; expected \[0, 1\]"):
        to_8bit(Image.fromarray(np.array([[0.0, 2.0]], np.float32)), "float image")


def test_decompression_bomb_is_an_image_error_naming_file_pixels_and_limit(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(20000, 20000, 8, 0, [b"\x00" * 20000]))  # a 20000x20000 header, 58 bytes
    with pytest.raises(ImageError, match=r"bomb\.png .*400000000 pixels.*MAX_IMAGE_PIXELS = 89478485 pixels"):
        open_image(path)


def test_image_between_the_limit_and_twice_it_is_refused_too(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png(10000, 10000, 8, 0, [b"\x00" * 10000]))  # PIL alone would only warn
    with pytest.raises(ImageError, match=r"big\.png .*100000000 pixels.*MAX_IMAGE_PIXELS = 89478485"):
        open_image(path)


def test_the_limit_is_pils_image_max_image_pixels(monkeypatch):
    data = _png(20, 20, 8, 0, [b"\x00" * 20] * 20)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)
    with pytest.raises(ImageError, match="MAX_IMAGE_PIXELS = 300 pixels"):
        open_image(data, label="small png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert open_image(data, label="small png").size == (20, 20)


def _truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _saved(Image.fromarray(noise), "PNG")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.png", b"", "is an empty file"),
        ("truncated.png", _truncated_png(), "is not a readable image"),
        ("notes.png", b"this is a text file, not an image\n", "is not a readable image"),
        ("unknown.xyz", bytes(range(256)) * 4, "is not a readable image"),
    ],
)
def test_unreadable_files_raise_an_image_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=f"^reference 2: .*{name} {message}"):
        open_image(path, label="reference 2")
    assert issubclass(ImageError, ValueError)


def test_a_directory_is_an_image_error_and_a_missing_file_is_not_found(tmp_path):
    with pytest.raises(ImageError, match="is not a readable image"):
        open_image(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.png does not exist"):
        open_image(tmp_path / "missing.png")


def test_empty_bytes_are_named_by_their_label():
    with pytest.raises(ImageError, match="^sample k: reference 1 is empty"):
        open_image(b"", label="sample k: reference 1")


# --- letterboxing (kaleido_s2v.common.letterbox): one geometry for references, evaluation images and masks


@pytest.mark.parametrize(
    ("image_wh", "box_hw", "placement"),
    [
        ((200, 100), (64, 64), (0, 16, 64, 32)),  # wide: bars top and bottom
        ((100, 30), (64, 96), (0, 18, 96, 28)),  # r = 3.33 > 1.5: (W, int(W / r)) = (96, int(28.8))
        ((37, 100), (64, 96), (36, 0, 23, 64)),  # r = 0.37: (int(H * r), H) = (int(23.68), 64)
        ((1000, 1), (64, 64), (0, 31, 64, 1)),  # a side below one pixel is kept at one
    ],
)
def test_letterbox_placement_is_spec_section_3(image_wh, box_hw, placement):
    from kaleido_s2v.common.letterbox import Placement, letterbox_placement

    assert letterbox_placement(*image_wh, *box_hw) == Placement(*placement)


@pytest.mark.parametrize("image_wh", [(200, 100), (37, 100), (50, 50), (13, 7)])
def test_pipeline_and_evaluation_letterbox_images_and_masks_into_the_same_box(image_wh):
    from kaleido_s2v.common.letterbox import letterbox_placement
    from kaleido_s2v.evaluation.references import letterbox as evaluation_letterbox
    from kaleido_s2v.evaluation.references import letterbox_mask
    from kaleido_s2v.pipelines.references import letterbox as reference_letterbox

    width, height = image_wh
    pixels = np.random.default_rng(0).integers(0, 200, (height, width, 3), dtype=np.uint8)
    box = letterbox_placement(width, height, 48, 80)
    reference = np.asarray(reference_letterbox(Image.fromarray(pixels), 48, 80))
    assert np.array_equal(evaluation_letterbox(pixels, 48, 80), reference)
    mask, inside = letterbox_mask(np.ones((height, width), bool), 48, 80)
    rows, columns = np.nonzero(inside)
    assert (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1) == (
        box.left,
        box.top,
        box.left + box.width,
        box.top + box.height,
    )
    assert np.array_equal(mask, inside)  # a full mask fills exactly the image's box
    assert (reference[~inside] == 255).all()  # white bars outside it
