from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kaleido_s2v.data.samples import ShardWriter, iter_samples, read_folder_sample, write_folder_sample


def _refs():
    red = Image.new("RGB", (20, 10), (255, 0, 0))
    rgba = Image.new("RGBA", (8, 8), (0, 0, 255, 0))  # fully transparent -> white
    return [red, rgba]


def _meta():
    return {
        "caption": "a red box moves left",
        "fps": 8.0,
        "num_frames": 9,
        "width": 32,
        "height": 32,
        "seed": 7,
        "fingerprint": "abc",
        "subjects": [
            {
                "label": "box",
                "reference": "ref1.png",
                "variant": "cutout",
                "backend": "offline",
                "source": {"video": "v", "shot": 1, "frame": 3},
            }
        ],
    }


def test_folder_round_trip(tmp_path, tiny_video):
    root = tmp_path / "ds"
    write_folder_sample(
        root, "clip_a", tiny_video, "a red box moves left\nsecond line ignored", _refs(), _meta()
    )
    write_folder_sample(root, "clip_b", tiny_video.read_bytes(), "plain", _refs()[:1])
    samples = list(iter_samples(root))
    assert [s.id for s in samples] == ["clip_a", "clip_b"]
    a, b = samples
    assert a.caption == "a red box moves left"
    assert a.meta == _meta() and a.subjects[0]["variant"] == "cutout"
    assert b.meta is None and b.subjects == []
    assert a.video_bytes() == tiny_video.read_bytes()
    frames, fps = a.read_video()
    assert frames.shape == (9, 32, 32, 3) and fps == pytest.approx(8.0)
    refs = a.reference_images()
    assert [r.size for r in refs] == [(20, 10), (8, 8)]
    assert np.asarray(refs[1]).min() == 255  # transparent RGBA composited on white
    # without meta the reader probes the video
    assert b.video_info() == {"fps": pytest.approx(8.0), "num_frames": 9, "width": 32, "height": 32}


def test_tar_round_trip_matches_folder(tmp_path, tiny_video):
    root = tmp_path / "ds"
    for i in range(5):
        write_folder_sample(root, f"s{i}", tiny_video, f"caption {i}", _refs(), _meta() if i % 2 else None)
    shards = tmp_path / "shards"
    with ShardWriter(shards, max_samples=2) as writer:
        for sample in iter_samples(root):
            writer.write_sample(sample)
    assert [p.name for p in writer.shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert not list(shards.glob("*.tmp*"))
    from_tar = list(iter_samples(shards))
    from_folder = list(iter_samples(root))
    assert [s.id for s in from_tar] == [s.id for s in from_folder]
    for t, f in zip(from_tar, from_folder, strict=True):
        assert t.caption == f.caption and t.meta == f.meta
        assert t.video_bytes() == f.video_bytes()
        assert [np.asarray(i).tolist() for i in t.reference_images()] == [
            np.asarray(i).tolist() for i in f.reference_images()
        ]
    frames, _ = from_tar[0].read_video()
    assert frames.shape == (9, 32, 32, 3)
    assert from_tar[1].video_info()["num_frames"] == 9
    # a single shard and a list of shards are accepted too
    assert [s.id for s in iter_samples(writer.shards[1])] == ["s2", "s3"]
    assert len(list(iter_samples(writer.shards))) == 5


def test_webdataset_reads_our_shards(tmp_path, tiny_video):
    import webdataset as wds

    with ShardWriter(tmp_path, max_samples=10) as writer:
        writer.write("k1", tiny_video, "hello", _refs(), _meta())
    rows = list(wds.WebDataset(str(writer.shards[0]), shardshuffle=False))
    assert rows[0]["__key__"] == "k1"
    assert {"mp4", "txt", "ref1.png", "ref2.png", "json"} <= set(rows[0])


def test_clear_errors(tmp_path, tiny_video):
    root = tmp_path / "ds"
    write_folder_sample(root, "ok", tiny_video, "fine", _refs())
    with pytest.raises(FileNotFoundError, match="video .*missing.mp4"):
        read_folder_sample(root, "missing")
    (root / "videos" / "norefs.mp4").write_bytes(tiny_video.read_bytes())
    (root / "labels" / "norefs.txt").write_text("caption\n")
    with pytest.raises(FileNotFoundError, match="reference folder"):
        read_folder_sample(root, "norefs")
    (root / "videos" / "empty.mp4").write_bytes(tiny_video.read_bytes())
    (root / "labels" / "empty.txt").write_text("  \n\n")
    with pytest.raises(ValueError, match="caption is empty"):
        read_folder_sample(root, "empty")
    with pytest.raises(ValueError, match="letters, digits"):
        write_folder_sample(root, "bad.id", tiny_video, "c", _refs())
    with pytest.raises(FileNotFoundError, match="neither an S2V folder"):
        list(iter_samples(tmp_path / "nothing"))


def test_tar_missing_video_is_an_error(tmp_path):
    with ShardWriter(tmp_path) as writer:
        writer.write("k", b"not really a video", "c", [Image.new("RGB", (4, 4))])
    import tarfile

    broken = tmp_path / "broken.tar"
    with tarfile.open(writer.shards[0]) as src, tarfile.open(broken, "w") as dst:
        for member in src:
            if not member.name.endswith(".mp4"):
                dst.addfile(member, src.extractfile(member))
    with pytest.raises(FileNotFoundError, match="no k.mp4"):
        list(iter_samples(broken))


def test_16_bit_and_exif_rotated_references_are_read_as_viewers_show_them(tmp_path, tiny_video):
    root = tmp_path / "ds"
    write_folder_sample(root, "clip", tiny_video, "a grey card", [Image.new("RGB", (4, 4))] * 2)
    Image.fromarray(np.full((6, 10), 32768, np.uint16)).save(root / "references" / "clip" / "ref1.png")
    stored = np.zeros((8, 16, 3), np.uint8)
    stored[:, 8:] = 255  # black left, white right as stored; EXIF orientation 6 puts white at the bottom
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "references" / "clip" / "ref2.png", exif=exif)
    with ShardWriter(tmp_path / "shards") as writer:
        writer.write_sample(read_folder_sample(root, "clip"))
    for sample in (read_folder_sample(root, "clip"), next(iter_samples(tmp_path / "shards"))):
        grey, rotated = (np.asarray(image) for image in sample.reference_images())
        assert grey.shape == (6, 10, 3) and (grey == 128).all()  # not 99.7% white
        assert rotated.shape == (16, 8, 3)
        assert (rotated[:8] == 0).all() and (rotated[8:] == 255).all()
