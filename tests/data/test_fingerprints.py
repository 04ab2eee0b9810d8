"""Stage fingerprints key the manifest, so their rule must never drift: compact, key-sorted JSON."""

import hashlib
import json

from kaleido_s2v.common.hashing import file_sha256, json_digest
from kaleido_s2v.data.stages.base import fingerprint, model_files_fingerprint


def test_a_fingerprint_is_the_sha256_of_compact_sorted_json():
    parts = ("detect", {"config": {"b": 1, "a": [0.5, None]}, "backend": "motion"}, "0" * 64)
    text = json.dumps(list(parts), sort_keys=True, separators=(",", ":"))
    assert fingerprint(*parts) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert fingerprint(*parts) == json_digest(list(parts), compact=True) != json_digest(list(parts))


def test_model_files_fingerprint_reads_names_and_sizes_not_bytes(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"a" * 8)
    before = model_files_fingerprint(str(tmp_path))
    assert before == fingerprint([("weights.bin", 8)])
    (tmp_path / "weights.bin").write_bytes(b"b" * 8)
    assert model_files_fingerprint(str(tmp_path)) == before
    assert model_files_fingerprint(str(tmp_path / "missing")) == f"missing:{tmp_path / 'missing'}"


def test_the_common_file_digest_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(bytes(range(256)) * 5000)  # over one read block
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
