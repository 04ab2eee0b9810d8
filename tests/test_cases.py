import json
from pathlib import Path

import pytest

from kaleido_s2v.common.cases import (
    Case,
    CaseError,
    CaseReference,
    read_cases,
    split_cases,
    write_cases_jsonl,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG")  # existence is all the parser checks
    return path


def test_at_lines_ids_are_physical_line_numbers_and_labels_are_stems(tmp_path):
    _touch(tmp_path / "refs" / "cat.png")
    _touch(tmp_path / "refs" / "red_ball.jpg")
    case_file = tmp_path / "cases.txt"
    case_file.write_text(
        "a cat walks@@refs/cat.png\n\n   \na cat and a ball @@ refs/cat.png @@refs/red_ball.jpg\n"
    )
    items = read_cases(case_file)
    assert [item.id for item in items] == ["00001", "00004"]
    first, second = items
    assert first.prompt == "a cat walks"
    assert first.references == [CaseReference(path=tmp_path.resolve() / "refs" / "cat.png", label="cat")]
    assert second.labels == ["cat", "red_ball"]
    assert second.line == 4 and second.seed is None and second.negative_prompt is None


def test_paths_are_relative_to_the_case_file_not_the_working_directory(tmp_path, monkeypatch):
    _touch(tmp_path / "sub" / "refs" / "dog.png")
    case_file = tmp_path / "sub" / "cases.txt"
    case_file.write_text("a dog@@refs/dog.png\n")
    monkeypatch.chdir(tmp_path)
    (case,) = read_cases(Path("sub/cases.txt"))
    assert case.references[0].path == (tmp_path / "sub" / "refs" / "dog.png").resolve()


def test_jsonl_fields_defaults_and_optional_values(tmp_path):
    _touch(tmp_path / "cat.png")
    lines = [
        {
            "id": "cat_walks",
            "prompt": "p1",
            "references": [{"path": "cat.png", "label": "tabby cat"}],
            "seed": 3,
        },
        {"prompt": "p2", "references": [{"path": "cat.png"}], "negative_prompt": "blurry"},
    ]
    case_file = tmp_path / "cases.jsonl"
    case_file.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    first, second = read_cases(case_file)
    assert first == Case(
        id="cat_walks",
        prompt="p1",
        references=[CaseReference(tmp_path.resolve() / "cat.png", "tabby cat")],
        seed=3,
    )
    assert second.id == "00002" and second.labels == ["cat"] and second.negative_prompt == "blurry"


@pytest.mark.parametrize(
    ("line", "reason_part"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"id": "a", "references": [{"path": "ok.png"}]}', "'prompt'"),
        ('{"id": "a", "prompt": "p", "references": []}', "'references'"),
        ('{"id": "a/b", "prompt": "p", "references": ["ok.png"]}', "file name"),
        ('{"id": "a", "prompt": "p", "references": ["ok.png"], "seed": -1}', "'seed'"),
        ('{"id": "a", "prompt": "p", "references": ["ok.png"], "sede": 1}', "unknown field"),
        ('{"id": "a", "prompt": "p", "references": ["missing.png"]}', "not found"),
        (
            '{"id": "a", "prompt": "a \\ud800 cat", "references": ["ok.png"]}',
            "'prompt': character 3 (U+D800)",
        ),
        (
            '{"id": "a", "prompt": "p", "references": ["ok.png"], "negative_prompt": "\\udcff"}',
            "'negative_prompt': character 1 (U+DCFF)",
        ),
        (
            '{"id": "a", "prompt": "p", "references": [{"path": "ok.png", "label": "c\\udfffat"}]}',
            "reference 1: 'label': character 2 (U+DFFF)",
        ),
        ('{"id": "a\\ud800", "prompt": "p", "references": ["ok.png"]}', "'id': character 2 (U+D800)"),
        (json.dumps({"id": "x" * 300, "prompt": "p", "references": ["ok.png"]}), "300 bytes in UTF-8"),
    ],
)
def test_a_bad_jsonl_line_is_reported_and_the_others_still_returned(tmp_path, line, reason_part):
    _touch(tmp_path / "ok.png")
    good = json.dumps({"id": "good", "prompt": "p", "references": [{"path": "ok.png", "label": "x"}]})
    good2 = json.dumps({"id": "good2", "prompt": "p", "references": [{"path": "ok.png", "label": "x"}]})
    case_file = tmp_path / "cases.jsonl"
    case_file.write_text(f"{good}\n{line}\n{good2}\n")
    items = read_cases(case_file)
    cases, errors = split_cases(items)
    assert [case.id for case in cases] == ["good", "good2"]
    assert len(errors) == 1 and errors[0].line == 2
    assert reason_part in errors[0].reason
    assert isinstance(items[1], CaseError)  # file order is kept
    assert str(errors[0]).startswith("line 2")


def test_bad_at_lines_and_duplicate_ids(tmp_path):
    _touch(tmp_path / "a.png")
    case_file = tmp_path / "cases.txt"
    case_file.write_text("no images here\n@@a.png\nok@@a.png\nbad@@a.png@@\nok@@a.png@@gone.png\n")
    items = read_cases(case_file)
    assert [type(item).__name__ for item in items] == [
        "CaseError",
        "CaseError",
        "Case",
        "CaseError",
        "CaseError",
    ]
    assert "no reference images" in items[0].reason and items[0].id == "00001"
    assert "empty prompt" in items[1].reason
    assert "empty image path" in items[3].reason
    assert "gone.png" in items[4].reason and items[4].id == "00005"

    jsonl = tmp_path / "dup.jsonl"
    record = json.dumps({"id": "same", "prompt": "p", "references": ["a.png"]})
    jsonl.write_text(f"{record}\n{record}\n")
    first, second = read_cases(jsonl)
    assert isinstance(first, Case) and isinstance(second, CaseError)
    assert "duplicate id 'same'" in second.reason and "line 1" in second.reason


def test_check_files_false_parses_lists_whose_images_are_elsewhere(tmp_path):
    case_file = tmp_path / "cases.txt"
    case_file.write_text("p@@far/away.png\n")
    (case,) = read_cases(case_file, check_files=False)
    assert case.references[0].label == "away"


def test_missing_case_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="case file"):
        read_cases(tmp_path / "nope.jsonl")


def test_write_then_read_round_trips(tmp_path):
    _touch(tmp_path / "refs" / "cat.png")
    case = Case(
        id="x1",
        prompt="a cat",
        references=[CaseReference((tmp_path / "refs" / "cat.png").resolve(), "cat")],
        negative_prompt="bad",
        seed=7,
    )
    out = write_cases_jsonl(tmp_path / "out" / "cases.jsonl", [case])
    assert json.loads(out.read_text())["references"][0]["path"] == "../refs/cat.png"
    assert read_cases(out) == [case]


def test_ids_are_limited_in_utf8_bytes_so_their_file_names_fit(tmp_path):
    _touch(tmp_path / "ok.png")
    lines = [{"id": "é" * 100, "prompt": "p", "references": ["ok.png"]}]  # 200 bytes: the limit
    lines.append({"id": "é" * 101, "prompt": "p", "references": ["ok.png"]})  # 101 characters, 202 bytes
    case_file = tmp_path / "cases.jsonl"
    case_file.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    fits, too_long = read_cases(case_file)
    assert isinstance(fits, Case) and len(fits.id) == 100
    assert isinstance(too_long, CaseError) and "202 bytes in UTF-8" in too_long.reason
    assert "at most 200" in too_long.reason and too_long.id is None  # the line names it, not the long id
    for suffix in (".mp4", ".json"):  # every name derived from the longest id can be created
        (tmp_path / f".{fits.id}.1f2e3d4c.tmp{suffix}").write_bytes(b"")


def test_bytes_that_are_not_utf8_spoil_only_their_line(tmp_path):
    _touch(tmp_path / "a.png")
    case_file = tmp_path / "cases.txt"
    case_file.write_bytes("caf\xe9 au lait@@a.png\na cat@@a.png\n".encode("latin-1"))
    bad, good = read_cases(case_file)
    assert isinstance(bad, CaseError) and bad.line == 1 and bad.id == "00001"
    assert "prompt: character 4 (U+DCE9) is not valid text" in bad.reason and "UTF-8" in bad.reason
    assert isinstance(good, Case) and good.prompt == "a cat"
