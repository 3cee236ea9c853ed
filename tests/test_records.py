"""Record schema, validating reader, writer and atomic file helpers (real files, no mocks)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from PIL import Image

from common.atomic import atomic_save_image, atomic_write, atomic_write_json, atomic_write_text
from data.records import DatasetError, Record, RecordProblem, read_records, resolve_path, write_records

BOX = [[[1, 2], [30.5, 2], [30.5, 12], [1, 12]], [[0, 0], [4, 0], [4, 4], [0, 4.25]]]


def _make_pair(root: Path, index: int, size: tuple[int, int] = (32, 32)) -> tuple[str, str]:
    """Write a tiny image/condition pair and return their dataset-relative paths."""
    image_rel, condition_rel = f"images/{index:05d}.png", f"conditioning_images/{index:05d}.png"
    atomic_save_image(Image.new("RGB", size, (200, 10, 10)), root / image_rel)
    atomic_save_image(Image.new("RGB", size, (0, 0, 0)), root / condition_rel)
    return image_rel, condition_rel


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------------
# round trips


def test_round_trip_plain_box_and_chinese(tmp_path: Path) -> None:
    records = []
    for i, (text, box, gt) in enumerate(
        [
            ("red circle with white background", None, None),
            ("机械键盘 皮肤，赛博朋克风格", BOX, ["Esc", "中"]),
            ("", [], []),  # unconditional sample, no text regions
            ("boxes without labels", BOX, None),
        ]
    ):
        image, condition = _make_pair(tmp_path, i)
        records.append(Record(text=text, image=image, conditioning_image=condition, box=box, gt_text=gt))
    jsonl = tmp_path / "train.jsonl"

    write_records(jsonl, records)
    loaded = read_records(jsonl)

    assert loaded == records
    raw = jsonl.read_text(encoding="utf-8")
    assert "机械键盘" in raw, "non-ASCII must be written as UTF-8, not \\u escapes"
    lines = raw.splitlines()
    assert len(lines) == len(records)
    first = json.loads(lines[0])
    assert set(first) == {"text", "image", "conditioning_image"}, "None fields are omitted"
    # the JSON round trip is exact: ints stay ints, floats stay floats
    assert json.loads(lines[1])["box"] == BOX
    assert [r.to_json() for r in loaded] == [json.loads(line) for line in lines]
    assert _temp_files(tmp_path) == []


def test_record_normalises_to_tuples_and_validates() -> None:
    record = Record("t", "a.png", "b.png", box=BOX, gt_text=["x", "y"])
    assert isinstance(record.box, tuple) and isinstance(record.box[0][0], tuple)
    assert record.gt_text == ("x", "y")
    assert hash(record) == hash(Record("t", "a.png", "b.png", box=BOX, gt_text=("x", "y")))
    assert Record.from_json(record.to_json()) == record

    with pytest.raises(ValueError, match="gt_text"):
        Record("t", "a.png", "b.png", gt_text=["x"])  # labels without boxes
    with pytest.raises(ValueError, match="3 points"):
        Record("t", "a.png", "b.png", box=[[[0, 0], [1, 0], [1, 1]]])
    with pytest.raises(ValueError, match="finite"):
        Record("t", "a.png", "b.png", box=[[[0, 0], [1, 0], [1, float("nan")], [0, 1]]])
    with pytest.raises(ValueError, match="image"):
        Record("t", "", "b.png")
    with pytest.raises(ValueError, match="unknown key 'caption'"):
        Record.from_json({"caption": "t", "image": "a", "conditioning_image": "b"})


def test_resolve_path(tmp_path: Path) -> None:
    assert resolve_path(tmp_path, "images/0.png") == tmp_path / "images" / "0.png"
    absolute = tmp_path / "elsewhere.png"
    assert resolve_path(Path("/unrelated"), str(absolute)) == absolute


def test_absolute_paths_accepted(tmp_path: Path) -> None:
    image, condition = _make_pair(tmp_path / "store", 0)
    record = Record("t", str(tmp_path / "store" / image), str(tmp_path / "store" / condition))
    jsonl = tmp_path / "meta" / "train.jsonl"
    write_records(jsonl, [record])
    assert read_records(jsonl) == [record]


# --------------------------------------------------------------------------------------------------
# validation problems


def test_bad_jsonl_reports_every_problem_with_line_and_field(tmp_path: Path) -> None:
    good_image, good_condition = _make_pair(tmp_path, 0)

    def line(**fields: object) -> str:
        obj = {"text": "ok", "image": good_image, "conditioning_image": good_condition}
        obj.update(fields)
        return json.dumps({k: v for k, v in obj.items() if v is not None}, ensure_ascii=False)

    jsonl = tmp_path / "train.jsonl"
    _write_lines(
        jsonl,
        [
            line(),  # 1: fine
            '{"text": "broken", "image": ',  # 2: invalid JSON
            line(image="images/missing.png"),  # 3: missing image file
            "",  # 4: blank, skipped
            line(box=[[[0, 0], [1, 0], [1, 1]]]),  # 5: polygon with 3 points
            json.dumps({"txt": "typo", "image": good_image, "conditioning_image": good_condition}),  # 6
            line(box=BOX, gt_text=["only one"]),  # 7: gt_text length mismatch
            line(text="中文 fine"),  # 8: fine
        ],
    )

    with pytest.raises(DatasetError) as caught:
        read_records(jsonl)
    problems = caught.value.problems

    found = {(p.line, p.field) for p in problems}
    assert found == {(2, "json"), (3, "image"), (5, "box"), (6, "txt"), (6, "text"), (7, "gt_text")}
    by_place = {(p.line, p.field): p for p in problems}
    assert "did you mean 'text'" in by_place[(6, "txt")].message
    assert "missing required field" in by_place[(6, "text")].message
    assert "3 points" in by_place[(5, "box")].message
    assert "1 entries but box has 2" in by_place[(7, "gt_text")].message
    assert "missing.png" in by_place[(3, "image")].message
    assert all(p.path == jsonl for p in problems)
    # the message lists every problem as file:line: field: message
    message = str(caught.value)
    for problem in problems:
        assert str(problem) in message
    assert f"{jsonl}:2: json: invalid JSON" in message

    # without file checks the missing image is not a problem, the rest still are
    with pytest.raises(DatasetError) as caught:
        read_records(jsonl, check_files=False)
    assert (3, "image") not in {(p.line, p.field) for p in caught.value.problems}


def _obj(**fields: object) -> str:
    """A jsonl line: a valid record with ``fields`` overridden."""
    return json.dumps({"text": "t", "image": "a", "conditioning_image": "b", **fields})


@pytest.mark.parametrize(
    ("line", "field", "fragment"),
    [
        ("[1, 2]", "json", "JSON object"),
        (_obj(text=3), "text", "must be a string"),
        (_obj(image=""), "image", "non-empty"),
        (_obj(conditioning_image=None), "conditioning_image", "got null"),
        (_obj(box=[[[0, 0], [1, 0], [1, 1], [0, True]]]), "box", "finite numbers"),
        (_obj(box=[[[0, 0], [1, 0], [1, 1], [0, float("nan")]]]), "box", "finite numbers"),
        (_obj(box=[[[0, 0], [1, 0], [1, 1], [0]]]), "box", "point 3"),
        (_obj(box={"a": 1}), "box", "array of polygons"),
        (_obj(gt_text=["x"]), "gt_text", "without 'box'"),
        (_obj(box=[], gt_text=[1]), "gt_text", "must be strings"),
    ],
)
def test_single_line_problems(tmp_path: Path, line: str, field: str, fragment: str) -> None:
    jsonl = tmp_path / "train.jsonl"
    _write_lines(jsonl, [line])
    with pytest.raises(DatasetError) as caught:
        read_records(jsonl, check_files=False)
    [problem] = [p for p in caught.value.problems if p.field == field]
    assert problem.line == 1
    assert fragment in problem.message


def test_empty_file_and_directory_as_image(tmp_path: Path) -> None:
    jsonl = tmp_path / "train.jsonl"
    _write_lines(jsonl, ["", "   "])
    with pytest.raises(DatasetError, match="no records"):
        read_records(jsonl)

    (tmp_path / "images" / "dir.png").mkdir(parents=True)
    _, condition = _make_pair(tmp_path, 0)
    write_records(jsonl, [Record("t", "images/dir.png", condition)])
    with pytest.raises(DatasetError, match="not a regular file"):
        read_records(jsonl)

    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "nope.jsonl")


def test_dataset_error_truncates_message_and_pickles(tmp_path: Path) -> None:
    problems = [RecordProblem(tmp_path / "t.jsonl", i, "json", "bad") for i in range(1, 61)]
    error = DatasetError(problems)
    message = str(error)
    assert message.startswith("60 problems in")
    assert f"{tmp_path / 't.jsonl'}:50: json: bad" in message
    assert ":51: json" not in message
    assert message.endswith("... and 10 more")
    clone = pickle.loads(pickle.dumps(error))
    assert clone.problems == problems and str(clone) == message


# --------------------------------------------------------------------------------------------------
# atomic writers


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "train.jsonl"
    target.write_text("old contents\n", encoding="utf-8")

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom), atomic_write(target) as handle:
        handle.write("half of the new contents")
        handle.flush()
        raise Boom

    assert target.read_text(encoding="utf-8") == "old contents\n"
    assert _temp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


def test_atomic_writers_replace_and_create_parents(tmp_path: Path) -> None:
    text_path = tmp_path / "a" / "b" / "note.txt"
    atomic_write_text(text_path, "héllo")
    atomic_write_text(text_path, "world")
    assert text_path.read_text(encoding="utf-8") == "world"
    reference = tmp_path / "reference.txt"
    reference.write_text("")
    assert text_path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777, "not the temp file's 0600"

    json_path = tmp_path / "meta.json"
    atomic_write_json(json_path, {"名": [1, 2.5]})
    assert json.loads(json_path.read_text(encoding="utf-8")) == {"名": [1, 2.5]}

    with atomic_write(tmp_path / "blob.bin", "wb", encoding=None) as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"

    image_path = tmp_path / "img" / "x.jpg"
    atomic_save_image(Image.new("RGB", (8, 6), (1, 2, 3)), image_path, quality=90)
    with Image.open(image_path) as image:
        assert image.format == "JPEG" and image.size == (8, 6)
    with pytest.raises(ValueError, match="suffix"):
        atomic_save_image(Image.new("RGB", (2, 2)), tmp_path / "x.unknownext")
    with pytest.raises(ValueError, match="modes"):
        atomic_write(tmp_path / "y", "a").__enter__()
    assert _temp_files(tmp_path) == []
