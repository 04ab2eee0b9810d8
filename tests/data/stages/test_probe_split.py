from pathlib import Path

import numpy as np
import pytest

from kaleido_s2v.data.stages.base import Context
from kaleido_s2v.data.stages.frames import frame_times
from kaleido_s2v.data.stages.probe import ProbeConfig, ProbeStage
from kaleido_s2v.data.stages.split import SplitConfig, SplitStage, clip_windows, detect_shots

BIKES_CUTS = [(0, 30), (30, 76), (76, 137), (137, 187), (187, 242), (242, 250)]


def _context(tmp_path: Path, upstream: dict | None = None) -> Context:
    return Context(run_dir=tmp_path, artifact_dir=Path("artifacts"), upstream=upstream or {})


def _probe(tmp_path, path, **config):
    item = {"id": "v", "source": str(path), "seed": 0}
    return ProbeStage(ProbeConfig(**config)).run(item, _context(tmp_path))


def test_bikes_real_cuts(bikes_path):
    assert detect_shots(str(bikes_path), 27.0, 8, 250) == BIKES_CUTS


@pytest.mark.parametrize(
    ("num_frames", "fps", "clipped_shots"),
    [(81, 16.0, []), (17, 8.0, [2]), (9, 8.0, [1, 2, 3, 4])],  # docs/contracts.md#4-clips (measured)
)
def test_bikes_clip_rules(bikes_path, num_frames, fps, clipped_shots):
    times = frame_times(bikes_path)
    got = [i for i, (a, b) in enumerate(BIKES_CUTS) if clip_windows(times, a, b, 3, num_frames, fps, 1)]
    assert got == clipped_shots


def test_clip_window_resamples_by_timestamp(bikes_path):
    times = frame_times(bikes_path)
    (window,) = clip_windows(times, 30, 76, 3, 9, 8.0, 1)
    # 25 fps -> 8 fps: every 3.125 source frames, starting 3 frames into the shot
    assert window == [33 + int(k * 3.125) for k in range(9)]
    two = clip_windows(times, 76, 137, 3, 9, 8.0, 5)
    assert len(two) == 2 and two[1][0] > two[0][-1]


def test_split_cuts_exact_frame_counts(tmp_path, bikes_path):
    from kaleido_s2v.common.video_io import probe_video, read_video

    probe = _probe(tmp_path, bikes_path)
    assert probe.status == "ok" and probe.data["num_frames"] == 250 and probe.data["fps"] == pytest.approx(25)
    item = {"id": "bikes", "source": str(bikes_path), "seed": 0}
    result = SplitStage(SplitConfig(num_frames=9, fps=8.0)).run(
        item, _context(tmp_path, {"probe": probe.data})
    )
    assert result.status == "ok"
    assert [s["reason"] for s in result.data["shots"]] == ["too_short", "", "", "", "", "too_short"]
    assert [c["shot"] for c in result.data["clips"]] == [1, 2, 3, 4]
    source, _ = read_video(bikes_path)
    for clip in result.data["clips"]:
        info = probe_video(tmp_path / clip["clip"])
        assert (info.num_frames, info.fps, info.width, info.height) == (9, 8.0, 640, 272)
        frames, _ = read_video(tmp_path / clip["clip"])
        # frame-accurate: each clip frame is its source frame (up to H.264 re-encoding)
        for k in (0, 4, 8):
            error = np.abs(frames[k].astype(int) - source[clip["source_frames"][k]].astype(int)).mean()
            assert error < 6, error
        other = np.abs(frames[4].astype(int) - source[clip["source_frames"][4] + 10].astype(int)).mean()
        assert other > error


def test_decode_frames_seeks_to_the_same_frames(bikes_path):
    from kaleido_s2v.data.stages.frames import decode_frames

    everything = decode_frames(bikes_path)
    assert len(everything) == 250 and decode_frames(bikes_path, []) == {}
    wanted = [70, 71, 137, 200, 249]
    sought = decode_frames(bikes_path, wanted, seek_after=10)
    assert sorted(sought) == wanted
    for index in wanted:
        np.testing.assert_array_equal(sought[index], everything[index])


def test_split_rejects_too_short(tmp_path, bikes_path):
    probe = _probe(tmp_path, bikes_path)
    item = {"id": "bikes", "source": str(bikes_path), "seed": 0}
    result = SplitStage(SplitConfig(num_frames=81, fps=16.0)).run(
        item, _context(tmp_path, {"probe": probe.data})
    )
    assert result.status == "rejected" and result.reason == "too_short"


def test_split_config_needs_4k_plus_1():
    with pytest.raises(ValueError, match="4k\\+1"):
        SplitConfig(num_frames=80)


def test_probe_bad_inputs(tmp_path, video_makers):
    _, zero_frame_video = video_makers
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 50)
    assert _probe(tmp_path, garbage).reason == "unreadable"
    corrupt_png = tmp_path / "broken.png"
    corrupt_png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert _probe(tmp_path, corrupt_png).reason == "unreadable"
    assert _probe(tmp_path, zero_frame_video(tmp_path / "empty.avi")).reason == "zero_frames"
    assert _probe(tmp_path, tmp_path / "absent.mp4").reason == "unreadable"


def test_probe_variable_frame_rate(tmp_path, video_makers):
    timestamped_video, _ = video_makers
    vfr = tmp_path / "vfr.mp4"
    pts, t = [], 0
    for i in range(30):
        pts.append(t)
        t += 40 if i % 2 else 120
    timestamped_video(vfr, pts)
    assert frame_times(vfr)[:4].round(3).tolist() == [0.0, 0.12, 0.16, 0.28]
    resampled = _probe(tmp_path, vfr)
    assert resampled.status == "ok" and resampled.data["variable_frame_rate"] is True
    rejected = _probe(tmp_path, vfr, variable_frame_rate="reject")
    assert rejected.reason == "variable_frame_rate"
    cfr = tmp_path / "cfr.mp4"
    timestamped_video(cfr, [40 * i for i in range(10)])
    assert _probe(tmp_path, cfr).data["variable_frame_rate"] is False
