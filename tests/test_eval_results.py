"""Devkit detections files and JSON summaries: format, round trip, atomic writes, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssvd_jax.evaluation import results, vid_ap


def sample_dets():
    return vid_ap.Detections(
        frame_id=[1, 1, 464],
        label=[0, 29, 4],
        score=[0.987654, 0.5, 0.00123],
        boxes=[[10.123, 20.5, 300.0, 400.999], [0, 0, 9, 9], [1.005, 2, 3, 4]],
    )


def test_devkit_format_and_round_trip(tmp_path):
    path = tmp_path / "det.txt"
    results.write_detections(path, sample_dets())
    lines = path.read_text().splitlines()
    # 1-based class ids, FGFA's {:.4f} scores and {:.2f} boxes.
    assert lines[0] == "1 1 0.9877 10.12 20.50 300.00 401.00"
    assert lines[1] == "1 30 0.5000 0.00 0.00 9.00 9.00"
    back = results.read_detections(path)
    assert back.frame_id.tolist() == [1, 1, 464]
    assert back.label.tolist() == [0, 29, 4]
    np.testing.assert_allclose(back.score, [0.9877, 0.5, 0.0012])
    np.testing.assert_allclose(back.boxes[0], [10.12, 20.5, 300.0, 401.0])
    # Parts (e.g. one per video) concatenate in order; the empty set writes an empty file.
    both = vid_ap.Detections.concatenate([sample_dets(), sample_dets().take([2])])
    results.write_detections(path, both)
    assert path.read_text().splitlines() == lines + lines[2:]
    results.write_detections(path, vid_ap.Detections.concatenate([]))
    assert path.read_text() == "" and len(results.read_detections(path)) == 0
    # More decimals keep scores distinct.
    results.write_detections(path, sample_dets(), score_decimals=6)
    assert results.read_detections(path).score[0] == 0.987654


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out" / "det.txt"
    results.write_detections(path, sample_dets())
    first = path.read_text()

    class Boom(RuntimeError):
        pass

    def failing_format(*args, **kwargs):
        yield "partial line"
        raise Boom

    # Interrupted after the first line has been written to the temporary file.
    monkeypatch.setattr(results, "format_detections", failing_format)
    with pytest.raises(Boom):
        results.write_detections(path, sample_dets())
    assert path.read_text() == first  # the old file is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["det.txt"]  # no temporary left


def test_blank_lines_and_empty_file(tmp_path):
    path = tmp_path / "det.txt"
    path.write_text("\n1 2 0.5 0 0 9 9\n\n")
    assert results.read_detections(path).label.tolist() == [1]
    path.write_text("")
    assert len(results.read_detections(path)) == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1 2 0.5 0 0 9", "expected 7 fields"),
        ("1 2 0.5 0 0 9 9 9", "expected 7 fields"),
        ("1 2 high 0 0 9 9", "not a number"),
        ("0 2 0.5 0 0 9 9", "frame_id 0"),
        ("1.5 2 0.5 0 0 9 9", "frame_id 1.5"),
        ("1 0 0.5 0 0 9 9", "class_id 0"),
        ("1 31 0.5 0 0 9 9", "class_id 31"),
        ("1 2 nan 0 0 9 9", "non-finite"),
    ],
)
def test_malformed_line_is_named(tmp_path, line, message):
    path = tmp_path / "det.txt"
    path.write_text(f"1 1 0.9 0 0 9 9\n\n{line}\n2 1 0.8 0 0 9 9\n")
    with pytest.raises(results.DetectionsFormatError, match=message) as err:
        results.read_detections(path)
    assert f"{path}:3:" in str(err.value)


def test_two_wrong_lines_that_balance_out_are_caught(tmp_path):
    # 6 + 8 fields = 14 tokens: a token count alone would not notice.
    path = tmp_path / "det.txt"
    path.write_text("1 1 0.9 0 0 9\n1 1 0.8 0 0 9 9 9\n")
    with pytest.raises(results.DetectionsFormatError, match=r"det.txt:1: expected 7 fields"):
        results.read_detections(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(results.DetectionsFormatError, match="nope.txt"):
        results.read_detections(tmp_path / "nope.txt")


def test_summary_json_has_null_for_nan(tmp_path):
    path = tmp_path / "summary.json"
    results.write_summary(
        path,
        {"mAP": np.float64(0.5), "AP": {"bear": float("nan")}, "n": np.int64(3), "v": np.ones(2)},
    )
    assert json.loads(path.read_text()) == {
        "mAP": 0.5,
        "AP": {"bear": None},
        "n": 3,
        "v": [1.0, 1.0],
    }
