"""Every stage picks its backends from one mapping: unknown names fail alike, the wrappers load lazily."""

import sys

import pytest

from kaleido_s2v.data import backends
from kaleido_s2v.data.stages.base import Stage, model_class
from kaleido_s2v.data.stages.caption import CAPTIONERS, CaptionConfig, CaptionStage
from kaleido_s2v.data.stages.detect import DETECTORS, DetectConfig, DetectStage
from kaleido_s2v.data.stages.export import SAMPLE_WRITERS, ExportConfig, ExportStage
from kaleido_s2v.data.stages.filter import SUBJECT_CHECKS, FilterConfig, FilterStage
from kaleido_s2v.data.stages.probe import PROBERS, ProbeConfig, ProbeStage
from kaleido_s2v.data.stages.references import INPAINTERS, POSERS, ReferencesConfig, ReferencesStage
from kaleido_s2v.data.stages.segment import SEGMENTERS, SegmentConfig, SegmentStage
from kaleido_s2v.data.stages.split import SHOT_DETECTORS, SplitConfig, SplitStage


@pytest.mark.parametrize(
    ("build", "stage", "choices"),
    [
        (lambda: ProbeStage(ProbeConfig(backend="nope")), "probe", PROBERS),
        (lambda: SplitStage(SplitConfig(backend="nope")), "split", SHOT_DETECTORS),
        (lambda: CaptionStage(CaptionConfig(backend="nope")), "caption", CAPTIONERS),
        (lambda: DetectStage(DetectConfig(backend="nope")), "detect", DETECTORS),
        (lambda: SegmentStage(SegmentConfig(backend="nope")), "segment", SEGMENTERS),
        (lambda: FilterStage(FilterConfig(backend="nope")), "filter", SUBJECT_CHECKS),
        (lambda: ReferencesStage(ReferencesConfig(inpaint_backend="nope")), "references", INPAINTERS),
        (lambda: ReferencesStage(ReferencesConfig(pose_backend="nope")), "references", POSERS),
        (lambda: ExportStage(ExportConfig(backend="nope")), "export", SAMPLE_WRITERS),
    ],
)
def test_an_unknown_backend_names_the_stage_and_every_choice(build, stage, choices):
    with pytest.raises(ValueError) as error:
        build()
    assert str(error.value) == f"{stage}: unknown backend 'nope'; choose one of {', '.join(choices)}"


def test_a_model_backend_checks_its_folder_only_when_its_variant_can_be_drawn():
    ReferencesStage(ReferencesConfig(inpaint_backend="flux_fill", variants=("cutout", "pose")))
    with pytest.raises(ValueError, match="needs model_path"):
        ReferencesStage(ReferencesConfig(inpaint_backend="flux_fill", variants=("inpainted",)))
    with pytest.raises(ValueError, match="needs model_path"):
        ReferencesStage(ReferencesConfig(pose_backend="model", variants=("pose",)))


def test_missing_model_libraries_name_the_extra(monkeypatch):
    monkeypatch.delitem(vars(backends), "VlmCaptioner", raising=False)  # loaded by an earlier test
    monkeypatch.setitem(sys.modules, "kaleido_s2v.data.backends.captioning", None)  # import fails
    with pytest.raises(
        ImportError, match=r'caption: the model backends are unavailable .*"kaleido-s2v\[data\]"'
    ):
        model_class("caption", "VlmCaptioner")


def test_an_item_goes_on_as_itself_unless_the_stage_splits_it():
    video = {"id": "v", "source": "v.mp4", "seed": 1}
    clips = [{"id": "v_s00c0", "video_id": "v"}, {"id": "v_s01c0", "video_id": "v"}]
    assert Stage().next_items(video, {"clips": clips}) == [video]
    assert SplitStage(SplitConfig()).next_items(video, {"shots": [], "clips": clips}) == clips
