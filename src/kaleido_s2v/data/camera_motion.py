"""Global (camera) motion between frames: a similarity transform tracked with OpenCV.

A frame pair's camera motion is the similarity transform (translation, uniform scale, rotation) that
maps the previous frame's pixels onto the current frame's: corners (`cv2.goodFeaturesToTrack`) are
tracked with pyramidal Lucas-Kanade, kept when tracking them back lands within a pixel of where they
started, and fitted by `cv2.estimateAffinePartial2D` with RANSAC, so subjects that move on their own
are outliers. The camera is still (the identity) unless the fit passes four rules, each of which a
subject moving before a still camera fails somewhere:
- it explains at least `MIN_INLIERS` of the tracks (a moving camera moves every corner);
- fewer than `STILL_SHARE` of the tracks move less than `STILL_PX` (corners of a still background);
- its inliers lie in at least `MIN_QUADRANTS` of the frame's four quadrants (camera motion moves
  the whole frame; two subjects moving apart in opposite corners fit a similarity as a rotation);
- it explains the frame's border (a strip `BORDER` of the shorter side wide) better than a still
  camera, whose mean grey difference there must exceed `BORDER_NOISE` levels (over a plain
  background, where only subjects carry corners, a still camera leaves the border unchanged);
- it explains them clearly better than a still camera: their median distance from where a still
  camera leaves them is over `MIN_SHIFT_PX` and over twice their median distance from where the fit
  puts them (tracking noise alone never passes, a slow zoom of 1 % a frame does).
Matrices are (3, 3) homogeneous, mapping (x, y, 1) pixel coordinates of one frame to another's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CORNERS = 400
MIN_TRACKS = 8  # fewer tracked corners than this: the frame pair is untrackable (flat), taken as still
RANSAC_PX = 1.5  # inlier tolerance of the fit, pixels
MIN_QUADRANTS = 3
BORDER, BORDER_NOISE = 0.1, 1.0
MIN_SHIFT_PX = 0.2
MIN_INLIERS = 0.5  # share of the tracks the fit must explain
STILL_PX, STILL_SHARE = 0.25, 0.25  # this share of tracks moving less than this: the camera is still


@dataclass(frozen=True)
class CameraMotion:
    """A similarity transform described about the frame's centre: where the centre moves
    (`translation_px`, (dx, dy) pixels), the zoom factor (`scale`, > 1 zooms in) and the rotation
    (`rotation_deg`, counter-clockwise on screen)."""

    translation_px: tuple[float, float]
    scale: float
    rotation_deg: float

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, width: int, height: int) -> CameraMotion:
        centre = np.array([width / 2, height / 2, 1.0])
        moved = matrix @ centre
        scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
        rotation = float(np.degrees(np.arctan2(-matrix[1, 0], matrix[0, 0])))
        return cls((float(moved[0] - centre[0]), float(moved[1] - centre[1])), scale, rotation)

    def travel(self, width: int, height: int) -> float:
        """Mean distance the four frame corners move, as a fraction of the frame's diagonal."""
        corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], float)
        return float(np.linalg.norm(self._apply(corners, width, height) - corners, axis=1).mean()) / float(
            np.hypot(width, height)
        )

    def _apply(self, points: np.ndarray, width: int, height: int) -> np.ndarray:
        """(N, 2) points moved by this transform."""
        angle = np.radians(self.rotation_deg)
        rotate = self.scale * np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        centre = np.array([width / 2, height / 2])
        return (points - centre) @ rotate.T + centre + np.asarray(self.translation_px)

    @classmethod
    def from_json(cls, values: dict) -> CameraMotion:
        return cls(tuple(values["translation_px"]), values["scale"], values["rotation_deg"])

    def to_json(self) -> dict:
        return {
            "model": "similarity",
            "translation_px": [round(v, 3) for v in self.translation_px],
            "scale": round(self.scale, 5),
            "rotation_deg": round(self.rotation_deg, 4),
        }


def _grey(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _tracks(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(points in previous (N, 2), the same points in current (N, 2)) for the corners tracked both ways."""
    import cv2

    a, b = _grey(previous), _grey(current)
    height, width = a.shape
    points = cv2.goodFeaturesToTrack(
        a, maxCorners=MAX_CORNERS, qualityLevel=0.01, minDistance=max(3, min(height, width) // 60)
    )
    if points is None or len(points) < MIN_TRACKS:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    lk = {"winSize": (21, 21), "maxLevel": 3}
    forward, found, _ = cv2.calcOpticalFlowPyrLK(a, b, points, None, **lk)
    back, found_back, _ = cv2.calcOpticalFlowPyrLK(b, a, forward, None, **lk)
    good = (found.ravel() == 1) & (found_back.ravel() == 1)
    good &= np.linalg.norm((back - points).reshape(-1, 2), axis=1) < 1.0
    return points.reshape(-1, 2)[good], forward.reshape(-1, 2)[good]


def frame_motion(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """(3, 3) similarity mapping `previous`'s pixels onto `current`'s (both (H, W, 3) uint8), by the
    rules of the module docstring; the identity when the camera is still or the pair untrackable."""
    import cv2

    identity = np.eye(3)
    height, width = previous.shape[:2]
    before, after = _tracks(previous, current)
    if len(before) < MIN_TRACKS:
        return identity
    fit, inliers = cv2.estimateAffinePartial2D(
        before, after, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX, maxIters=2000, confidence=0.99
    )
    if fit is None:
        return identity
    inliers = inliers.ravel().astype(bool)
    still = np.linalg.norm(after - before, axis=1) < STILL_PX
    if inliers.sum() < max(MIN_TRACKS, MIN_INLIERS * len(before)) or still.mean() >= STILL_SHARE:
        return identity
    before, after = before[inliers], after[inliers]
    quadrants = len({(x >= width / 2, y >= height / 2) for x, y in before})
    still_error = float(np.median(np.linalg.norm(after - before, axis=1)))
    fit_error = float(np.median(np.linalg.norm(after - (before @ fit[:, :2].T + fit[:, 2]), axis=1)))
    matrix = np.vstack([fit, [0.0, 0.0, 1.0]])
    if quadrants < MIN_QUADRANTS or still_error <= max(MIN_SHIFT_PX, 2 * fit_error):
        return identity
    if not _explains_border(previous, current, matrix):
        return identity
    return matrix


def _explains_border(previous: np.ndarray, current: np.ndarray, matrix: np.ndarray) -> bool:
    """True when `matrix` explains the frame's border strip better than a still camera (the module
    docstring's rule)."""
    a, b = _grey(previous).astype(np.float32), _grey(current).astype(np.float32)
    height, width = a.shape
    strip = max(2, int(BORDER * min(height, width)))
    border = np.ones((height, width), bool)
    border[strip:-strip, strip:-strip] = False
    moved, valid = warp(a, matrix)
    still_error = float(np.abs(b - a)[border].mean())
    fit_error = float(np.abs(b - moved)[border & valid].mean()) if (border & valid).any() else still_error
    return still_error > max(BORDER_NOISE, fit_error)


def motions_to(frames: np.ndarray, anchor: int) -> list[np.ndarray]:
    """For frames (T, H, W, 3) in time order, the (3, 3) transform taking each frame's pixels into frame
    `anchor`'s, composed from consecutive pairs (`frame_motion`), so slow motion over many frames adds up."""
    steps = [frame_motion(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]  # i -> i + 1
    out = [np.eye(3) for _ in frames]
    for i in range(anchor - 1, -1, -1):
        out[i] = out[i + 1] @ steps[i]
    for i in range(anchor + 1, len(frames)):
        out[i] = out[i - 1] @ np.linalg.inv(steps[i - 1])
    return out


def warp(frame: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frame moved by `matrix` (H, W, C), valid (H, W) bool: pixels the frame actually covers)."""
    import cv2

    height, width = frame.shape[:2]
    if np.allclose(matrix, np.eye(3)):
        return frame, np.ones((height, width), bool)
    moved = cv2.warpAffine(np.ascontiguousarray(frame), matrix[:2], (width, height), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(
        np.ones((height, width), np.uint8), matrix[:2], (width, height), flags=cv2.INTER_NEAREST
    )
    inside = cv2.erode(inside, np.ones((3, 3), np.uint8))  # border pixels mix in the black outside
    return moved, inside.astype(bool)


def align_to(frames: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, int]:
    """Frames (T, H, W, 3) uint8 in time order moved into `frame`'s view: ((T, H, W, 3) float32, NaN
    where a frame does not reach; the anchor's index). The chain (`motions_to`) runs through the anchor,
    the frame that differs least from `frame` (the nearest in time under any smooth motion), which is
    then tracked onto `frame`."""
    anchor = int(np.argmin([np.abs(f.astype(np.int16) - frame).mean() for f in frames]))
    into_frame = frame_motion(frames[anchor], frame)
    out = np.full(frames.shape, np.nan, np.float32)
    for index, to_anchor in enumerate(motions_to(frames, anchor)):
        moved, valid = warp(frames[index], into_frame @ to_anchor)
        out[index][valid] = moved[valid]
    return out, anchor


def clip_camera_motion(frames: np.ndarray, analysis_side: int) -> CameraMotion:
    """The camera's net motion from a clip's first frame to its last, in the clip's pixels; frames
    (T, H, W, 3) uint8 are tracked downscaled to `analysis_side` (longest side) when larger."""
    import cv2

    height, width = frames.shape[1:3]
    factor = max(1, int(np.ceil(max(height, width) / analysis_side)))
    if factor > 1:
        size = (width // factor, height // factor)
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    small = CameraMotion.from_matrix(motions_to(frames, len(frames) - 1)[0], frames.shape[2], frames.shape[1])
    dx, dy = small.translation_px
    return CameraMotion((dx * factor, dy * factor), small.scale, small.rotation_deg)
