"""Atomic writes never touch a file they did not create (issue: a failed write deleted `<stem>.tmp<suffix>`)."""

from __future__ import annotations

import pytest

from kaleido_s2v.common import atomic
from kaleido_s2v.common.atomic import atomic_path, is_temporary, write_text_atomic


def test_a_failed_write_leaves_a_same_named_file_of_the_user_alone(tmp_path):
    target = tmp_path / "clip.mp4"
    users = tmp_path / "clip.tmp.mp4"  # the name the old temporary used
    users.write_text("the user's own file")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as temporary:
            assert temporary != users and temporary.suffix == ".mp4"
            temporary.write_text("half")
            raise RuntimeError("boom")
    assert users.read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.tmp.mp4"]  # our temporary is gone


def test_temporaries_are_unique_and_created_by_the_call(tmp_path):
    target = tmp_path / "a.json"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.is_file() and second.is_file()
        assert first.stat().st_size == 0
        first.write_text("1")
        second.write_text("2")
    assert target.read_text() == "1"  # each block renames on its own exit: the outer one finished last


def _names_drawn(monkeypatch, *tokens):
    """Make the temporaries' random parts come out as `tokens`, in order."""
    drawn = iter(tokens)
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda nbytes: next(drawn))


@pytest.mark.parametrize("directory", [False, True], ids=["file", "folder"])
def test_a_temporary_name_that_is_taken_is_never_reused(tmp_path, monkeypatch, directory):
    """Even when the random name collides with something already there, the call creates its own."""
    target = tmp_path / ("out" if directory else "clip.mp4")
    taken = tmp_path / (".out.aaaaaaaa.tmp" if directory else ".clip.aaaaaaaa.tmp.mp4")
    if directory:
        taken.mkdir()
        (taken / "notes.txt").write_text("someone else's")
    else:
        taken.write_text("someone else's")
    _names_drawn(monkeypatch, "aaaaaaaa", "bbbbbbbb")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target, directory=directory) as temporary:
            assert temporary.name == taken.name.replace("aaaaaaaa", "bbbbbbbb")
            raise RuntimeError("boom")
    assert (taken / "notes.txt" if directory else taken).read_text() == "someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [taken.name]


def test_a_failed_folder_replacement_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_replace = atomic.os.replace

    def replace(source, destination):
        if (atomic.Path(source) / "new.txt").exists():  # moving the new content onto the target
            raise OSError("disk full")
        real_replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target, directory=True, replace_folder=True) as staging:
            (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_only_hidden_names_with_tmp_are_temporaries():
    assert is_temporary(".clip.1f2e3d4c.tmp.mp4") and is_temporary(".out.1f2e3d4c.tmp")
    assert not is_temporary("clip.tmp.mp4")  # a user's file, named like the old temporaries
    assert not is_temporary(".clip.mp4") and not is_temporary("clip.mp4")


def test_a_folder_write_keeps_an_existing_foreign_staging_folder(tmp_path):
    target = tmp_path / "out"
    old_staging = tmp_path / "out.tmp"
    old_staging.mkdir()
    (old_staging / "notes.txt").write_text("keep me")
    with atomic_path(target, directory=True) as staging:
        assert staging.is_dir() and not any(staging.iterdir())
        (staging / "weights.bin").write_bytes(b"x")
    assert sorted(p.name for p in target.iterdir()) == ["weights.bin"]
    assert (old_staging / "notes.txt").read_text() == "keep me"


def test_a_non_empty_folder_is_replaced_only_when_asked(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(OSError):
        with atomic_path(target, directory=True) as staging:
            (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with atomic_path(target, directory=True, replace_folder=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_a_temporary_left_by_a_killed_write_is_not_read_as_a_sample(tmp_path):
    """A SIGKILL mid-write leaves `.<stem>.<random>.tmp.mp4`; readers that list a folder skip it."""
    import numpy as np
    from PIL import Image

    from kaleido_s2v.common.atomic import is_temporary
    from kaleido_s2v.common.video_io import write_video
    from kaleido_s2v.data.samples import iter_folder, write_folder_sample

    frames = np.zeros((5, 16, 16, 3), dtype=np.uint8)
    write_video(tmp_path / "clip.mp4", frames, 8)
    write_folder_sample(tmp_path / "set", "a", tmp_path / "clip.mp4", "a cat", [Image.new("RGB", (8, 8))])
    leftover = tmp_path / "set" / "videos" / ".b.1f2e3d4c.tmp.mp4"
    leftover.write_bytes(b"half a video")
    assert is_temporary(leftover) and not is_temporary(tmp_path / "set" / "videos" / "a.mp4")
    assert [sample.id for sample in iter_folder(tmp_path / "set")] == ["a"]
