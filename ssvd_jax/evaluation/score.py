"""Score a devkit detections file against an ILSVRC VID annotation folder, without any model.

`score_detections` is what `main.py --mode=score` calls. It reads the ground truth of every frame
of the evaluation list, in list order, which defines the global 1-based frame ids of the result
file (REFERENCE_SPEC §9):

* `frame_list` given: that file. Lines `<frame path> <global id> ...` (FGFA's VID_val_frames.txt,
  SSVD's VID_val_all.txt, the devkit's val.txt) use column 2 as the id; 4-column lines
  `<snippet> <first id> <start> <num frames>` (VID_val_videos.txt) expand to frames
  `%06d` from start, ids from the first id on (FGFA's generator does the same). A relative name
  that is not a file is looked up under `<data_root>/ImageSets{,/VID,/DET}`.
* otherwise: `input_pipeline.ilsvrc.list_vid_videos(root, split)`, the order our TFDS builder and
  inference use (list files under ImageSets/ when present, else the sorted folders), with ids
  1..N. When Data/VID/<split> is absent (annotations only): the val list files under ImageSets/
  as above, else the sorted folders of Annotations/VID/<split>.

Motion IoUs (VID_PROTOCOL §2) are computed over the listed frames of each video, which is the
protocol's definition whenever every frame is listed, as in all the official lists.
A listed frame without an XML file has no ground truth (its detections are FPs); FGFA would stop
there, we count it. An object whose WordNet id is not a VID class stops the run with the file
named: FGFA's class lookup fails on it too, and the VID release has none.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pathlib
from typing import Any

import numpy as np

from input_pipeline import classes, cocovid, ilsvrc
from ssvd_jax.evaluation import motion, results, stability, track_ap, track_results, tracks, vid_ap
from ssvd_jax.evaluation import seq_nms as seq_nms_lib

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

_SPLITS = ("train", "val", "test")


def _with_split(split: str, name: str) -> str:
    # The devkit's val.txt omits the split prefix that FGFA's lists carry; a path that names a
    # split already is taken as it stands.
    return name if name.split("/", 1)[0] in _SPLITS else f"{split}/{name}"


def _resolve_list(path: PathLike, root: pathlib.Path) -> pathlib.Path:
    """The list file as given, else a file of that name under root/ImageSets{,/VID,/DET}."""
    path = pathlib.Path(path)
    if path.is_file():
        return path
    found = None if path.is_absolute() else ilsvrc.find_list_file(root, path.name)
    if found is None:
        raise ilsvrc.IlsvrcFormatError(path, f"frame list not found (nor under {root}/ImageSets)")
    return found


def _videos_from_list(
    path: PathLike, split: str, root: pathlib.Path
) -> list[tuple[ilsvrc.Video, np.ndarray]]:
    path = _resolve_list(path, root)
    first = next((ln.split() for ln in path.read_text().splitlines() if ln.strip()), None)
    if first is None:
        raise ilsvrc.IlsvrcFormatError(path, "frame list is empty")
    out = []
    if len(first) == 4:  # VID_val_videos.txt
        for video, first_id, start, num in ilsvrc.read_vid_val_videos(path):
            stems = tuple(f"{start + k:06d}" for k in range(num))
            ids = np.arange(first_id, first_id + num, dtype=np.int64)
            out.append((ilsvrc.Video(_with_split(split, video), stems), ids))
        return out
    grouped: dict[str, tuple[list[str], list[int]]] = {}
    for frame_path, frame_id in ilsvrc.read_vid_val_frames(path):
        video, stem = _with_split(split, frame_path).rsplit("/", 1)
        stems, ids = grouped.setdefault(video, ([], []))
        stems.append(stem)
        ids.append(frame_id)
    for video, (stems, ids) in grouped.items():
        out.append((ilsvrc.Video(video, tuple(stems)), np.asarray(ids, np.int64)))
    all_ids = np.concatenate([ids for _, ids in out])
    unique, count = np.unique(all_ids, return_counts=True)
    if np.any(count > 1):
        raise ilsvrc.IlsvrcFormatError(path, f"frame id {unique[count > 1][0]} listed twice")
    return out


def _videos_from_annotations(root: pathlib.Path, split: str) -> list[ilsvrc.Video]:
    base = root / "Annotations" / "VID"
    videos = []
    for dirpath, _, filenames in sorted(os.walk(base / split)):
        stems = sorted(f[: -len(".xml")] for f in filenames if f.endswith(".xml"))
        if stems:
            videos.append(
                ilsvrc.Video(pathlib.Path(dirpath).relative_to(base).as_posix(), tuple(stems))
            )
    videos.sort(key=lambda v: v.video_id)
    return videos


def _cocovid_videos(
    source: cocovid.Source, split: str, frame_list: PathLike | None
) -> list[tuple[cocovid.Video, np.ndarray]]:
    """A COCO-VID split's videos in file order, ids = the images' ids; with a frame list
    (`<video name>/<frame stem> <id>` lines, as `_subset_list` writes), its frames only."""
    dataset = cocovid.split_dataset(source, split)
    out = [(v, np.asarray(v.image_ids, np.int64)) for v in dataset.videos]
    if frame_list is None:
        return out
    path = pathlib.Path(frame_list)
    if not path.is_file():
        raise cocovid.CocoVidFormatError(path, "frame list not found")
    listed: dict[str, set[str]] = collections.defaultdict(set)
    for frame_path, _ in ilsvrc.read_vid_val_frames(path):
        video, stem = frame_path.rsplit("/", 1)
        listed[video].add(stem)
    kept = []
    for video, ids in out:
        keep = [t for t, stem in enumerate(video.frames) if stem in listed.get(video.video_id, ())]
        if keep:
            video = dataclasses.replace(
                video, frames=_take(video.frames, keep), files=_take(video.files, keep),
                image_ids=_take(video.image_ids, keep), entries=_take(video.entries, keep),
            )  # fmt: skip
            kept.append((video, ids[keep]))
    return kept


def _take(values: tuple, index: list[int]) -> tuple:
    return tuple(values[t] for t in index)


def evaluation_videos(
    data_root: PathLike | cocovid.Source, split: str = "val", frame_list: PathLike | None = None
) -> list[tuple[ilsvrc.Video, np.ndarray]]:
    """The evaluated videos in list order, each with its frames' global 1-based ids.
    `data_root` is an ILSVRC2015 folder or a `cocovid.Source` (then the split's JSON file
    defines the videos, in file order, and the ids are its image ids)."""
    if isinstance(data_root, cocovid.Source):
        return _cocovid_videos(data_root, split, frame_list)
    root = pathlib.Path(data_root)
    if frame_list is not None:
        return _videos_from_list(frame_list, split, root)
    if (root / "Data" / "VID" / split).is_dir():
        videos = ilsvrc.list_vid_videos(root, split, use_lists=True)
    else:
        # Annotations only: the official lists still define the order when present.
        names = (*ilsvrc.VID_VAL_FRAMES_LISTS, ilsvrc.VID_VAL_VIDEOS_LIST) if split == "val" else ()
        lst = ilsvrc.find_list_file(root, *names) if names else None
        if lst is not None:
            return _videos_from_list(lst, split, root)
        videos = _videos_from_annotations(root, split)
    out, next_id = [], 1
    for video in videos:
        out.append((video, np.arange(next_id, next_id + video.num_frames, dtype=np.int64)))
        next_id += video.num_frames
    return out


def video_annotations(
    data_root: PathLike | cocovid.Source,
    split: str,
    video: Any,
    counts: collections.Counter | None = None,
) -> list[ilsvrc.Annotation | None]:
    """Every frame's annotation of an evaluated video (None: an ILSVRC frame without XML)."""
    if isinstance(data_root, cocovid.Source):
        by_image = cocovid.split_dataset(data_root, split).annotation_of_image
        return [by_image[i] for i in video.image_ids]
    return ilsvrc.read_video_annotations(data_root, video, counts)


def load_ground_truth(
    data_root: PathLike | cocovid.Source,
    split: str = "val",
    frame_list: PathLike | None = None,
    counts: collections.Counter | None = None,
) -> vid_ap.GroundTruth:
    """Ground truth of every listed frame, with FGFA motion IoUs, video boundaries and the XML
    track ids.

    `counts` receives videos, frames, frames_without_xml, frames_without_gt, gt_boxes and
    gt_generated.
    """
    counts = counts if counts is not None else collections.Counter()
    videos = evaluation_videos(data_root, split, frame_list)
    coco = isinstance(data_root, cocovid.Source)
    if not videos:
        where = (
            "images in the JSON file" if coco else f"Data/VID/{split} or Annotations/VID/{split}"
        )
        raise ilsvrc.IlsvrcFormatError(
            data_root.json_for(split) if coco else data_root, f"no {split} frames found ({where})"
        )
    frame_ids, video_starts = [], []
    rows, labels, boxes, motions, track_ids = [], [], [], [], []
    crowd_rows, crowd_labels, crowd_boxes = [], [], []
    generated = 0
    row = 0
    for video, ids in videos:
        video_starts.append(row)
        frame_ids.append(ids)
        anns = video_annotations(data_root, split, video, counts)
        per_frame = []
        for t, ann in enumerate(anns):
            objs = ann.objects if ann is not None else ()
            for obj in objs:
                if obj.label is None:
                    raise ilsvrc.IlsvrcFormatError(
                        video.annotation_path(data_root, t),
                        f"object {obj.wnid!r} is not one of the 30 VID classes",
                    )
            crowd = [o for o in objs if o.crowd]
            objs = [o for o in objs if not o.crowd]
            crowd_rows.extend([row + t] * len(crowd))
            crowd_labels.extend(o.label for o in crowd)
            crowd_boxes.extend(o.box for o in crowd)
            per_frame.append([(o.track_id, o.box) for o in objs])
            rows.extend([row + t] * len(objs))
            labels.extend(o.label for o in objs)
            boxes.extend(o.box for o in objs)
            track_ids.extend(o.track_id for o in objs)
            generated += sum(o.generated for o in objs)
        motions.extend(motion.video_motion_iou(per_frame))
        row += video.num_frames
    extra: dict[str, Any] = {}
    if coco:
        names = cocovid.split_dataset(data_root, split).class_names
        extra.update(num_classes=len(names), class_names=names, iou_rule=data_root.iou_rule)
        if crowd_rows:
            extra.update(
                crowd_frame=np.asarray(crowd_rows, np.int64),
                crowd_label=np.asarray(crowd_labels, np.int64),
                crowd_boxes=np.asarray(crowd_boxes, np.float64).reshape(-1, 4),
            )
    counts["gt_crowd"] += len(crowd_rows)
    gt = vid_ap.GroundTruth(
        frame_ids=np.concatenate(frame_ids),
        frame=np.asarray(rows, np.int64),
        label=np.asarray(labels, np.int64),
        boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
        motion_iou=np.concatenate(motions) if motions else np.zeros(0),
        video_starts=np.asarray(video_starts, np.int64),
        track_id=np.asarray(track_ids, np.int64),
        **extra,
    )
    counts["videos"] += len(videos)
    counts["frames_without_xml"] += 0  # always reported, 0 included
    counts["frames"] += gt.num_frames
    counts["frames_without_gt"] += int(np.sum(gt.boxes_per_frame() == 0))
    counts["gt_boxes"] += len(gt)
    counts["gt_generated"] += generated
    return gt


def _per_class(values: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    return {name: float(v) for name, v in zip(names, values, strict=True)}


def evaluate(
    gt: vid_ap.GroundTruth, dets: vid_ap.Detections, counts: collections.Counter | None = None
) -> dict[str, Any]:
    """The summary dict of `score_detections` for in-memory ground truth and detections."""
    counts = counts if counts is not None else collections.Counter()
    matching = vid_ap.match_detections(gt, dets)
    overall = vid_ap.evaluate_vid(gt, dets, matching)
    speed = motion.evaluate_motion(gt, dets, motion.SPEED_BUCKETS, matching)
    counts["detections"] += len(dets)
    counts["detections_scored"] += overall.num_detections
    counts["detections_off_list"] += overall.num_dropped
    counts["true_positives"] += overall.num_tp
    counts["detections_ignored_crowd"] += matching.num_ignored
    for name in motion.SPEED_BUCKETS:
        counts[f"gt_{name}"] += int(speed.npos[name].sum())
    names = gt.names
    summary: dict[str, Any] = {
        "mAP": overall.mAP,
        "AP": _per_class(overall.ap, names),
        **{f"mAP_{b}": speed.mAP[b] for b in motion.SPEED_BUCKETS},
        **{f"AP_{b}": _per_class(speed.ap[b], names) for b in motion.SPEED_BUCKETS},
        "num_gt": {k: int(v) for k, v in _per_class(overall.npos, names).items()},
        **{
            f"num_gt_{b}": {k: int(v) for k, v in _per_class(speed.npos[b], names).items()}
            for b in motion.SPEED_BUCKETS
        },
        "classes": list(names),
        "iou_rule": gt.iou_rule,
        "counts": dict(sorted(counts.items())),
    }
    return summary


def files_root(data_root: PathLike | cocovid.Source) -> PathLike:
    """The folder beside which a dataset keeps its side files (the synthetic manifest): the
    ILSVRC root, or a COCO-VID dataset's image root."""
    return data_root.image_root if isinstance(data_root, cocovid.Source) else data_root


def _name(data_root: PathLike | cocovid.Source) -> str:
    return str(data_root) if isinstance(data_root, cocovid.Source) else os.fspath(data_root)


def num_classes(data_root: PathLike | cocovid.Source, split: str) -> int:
    """The class count of the dataset (30 for ILSVRC VID)."""
    if isinstance(data_root, cocovid.Source):
        return cocovid.split_dataset(data_root, split).num_classes
    return classes.NUM_CLASSES


def category_ids(data_root: PathLike | cocovid.Source, split: str) -> tuple[int, ...]:
    """The ids that COCO-style result files use for the classes, in label order: the
    dataset's category ids (1..30 for ILSVRC VID, the devkit's class ids)."""
    if isinstance(data_root, cocovid.Source):
        return cocovid.split_dataset(data_root, split).category_ids
    return tuple(range(1, classes.NUM_CLASSES + 1))


def read_detections(
    path: PathLike, data_root: PathLike | cocovid.Source, split: str
) -> vid_ap.Detections:
    """A detections file for this dataset: COCO-style JSON (`.json`: image_id, category_id,
    bbox [x, y, w, h], score; the dataset's category ids) or the devkit's text lines
    (`frame_id class_id score x1 y1 x2 y2`, class ids 1..C)."""
    if os.fspath(path).lower().endswith(".json"):
        return results.read_coco_detections(path, category_ids(data_root, split))
    return results.read_detections(path, num_classes(data_root, split))


def score_detections(
    detections_path: PathLike,
    data_root: PathLike,
    split: str = "val",
    frame_list: PathLike | None = None,
    out_json: PathLike | None = None,
    seq_nms: bool = False,
) -> dict[str, Any]:
    """Score a devkit detections file (VID_PROTOCOL §1, §2); optionally write the JSON summary
    (`evaluation.report.score_report` renders it).

    detections_path: `frame_id class_id score x1 y1 x2 y2` lines (results.read_detections),
      or a COCO-style `.json` list of {image_id, category_id, bbox, score} (`read_detections`).
    data_root: the ILSVRC2015 folder holding Annotations/VID/<split> (and Data/, ImageSets/),
      or a `cocovid.Source` (its split's JSON file; frame ids are image ids).
    split: 'val' for the benchmark; 'train' works the same (e.g. the mini fixture).
    frame_list: optional list file defining frames and ids (module docstring).
    out_json: where to write the summary (keys mAP, AP, mAP_slow, mAP_medium, mAP_fast, the
      per-bucket AP_* and num_gt* tables, counts); atomic.
    seq_nms: apply FGFA's Seq-NMS + per-frame NMS (seq_nms.seq_nms) before scoring.
    Returns the summary; APs of classes without ground truth are NaN (null in the JSON) and are
    left out of the means.
    """
    counts: collections.Counter = collections.Counter()
    dets = read_detections(detections_path, data_root, split)
    gt = load_ground_truth(data_root, split, frame_list, counts)
    if seq_nms:
        before = len(dets)
        dets = seq_nms_lib.seq_nms(dets, gt.video_frame_ids())
        counts["detections_before_seq_nms"] += before
    summary = evaluate(gt, dets, counts)
    summary.update(
        detections_file=os.fspath(detections_path),
        data_root=_name(data_root),
        split=split,
        frame_list=None if frame_list is None else os.fspath(frame_list),
        seq_nms=bool(seq_nms),
    )
    if counts["frames_without_xml"]:
        log.warning("%d listed frames have no XML file", counts["frames_without_xml"])
    if counts["detections_off_list"]:
        log.warning(
            "%d detections are on frames outside the list and were dropped",
            counts["detections_off_list"],
        )
    if out_json is not None:
        results.write_summary(out_json, summary)
    return summary


# ----------------------------------------------------------------------------------------------
# Tracks (docs/TRACK_PROTOCOL.md)


def tau_key(tau: float) -> str:
    """The summary key suffix of an overlap fraction: '@0.25', '@0.5', '@0.75'."""
    return f"@{tau:g}"


def evaluate_tracks(
    gt: vid_ap.GroundTruth, preds: tracks.Tracks, counts: collections.Counter | None = None
) -> dict[str, Any]:
    """The summary dict of `score_tracks` for in-memory ground truth and tracks."""
    counts = counts if counts is not None else collections.Counter()
    result = track_ap.evaluate_tracks(gt, preds)
    stable = stability.stability(gt, preds.dets.boxes, result)
    counts["track_detections"] += len(preds)
    counts["track_detections_off_list"] += result.pred_tracks.num_dropped
    counts["tracks"] += result.num_tracks
    counts["gt_tracks"] += result.num_gt_tracks
    taus = [tau_key(t) for t in result.taus]
    names = gt.names
    summary: dict[str, Any] = {"mAP_track": result.mAP_track}
    summary.update({f"mAP_track{k}": float(m) for k, m in zip(taus, result.mAP, strict=True)})
    summary["AP_track"] = _per_class(np.mean(result.ap, axis=0), names)
    summary.update(
        {f"AP_track{k}": _per_class(a, names) for k, a in zip(taus, result.ap, strict=True)}
    )
    summary["num_gt_tracks"] = {k: int(v) for k, v in _per_class(result.npos, names).items()}
    summary["classes"] = list(names)
    summary["iou_rule"] = gt.iou_rule
    summary["true_positive_tracks"] = {
        k[1:]: int(n) for k, n in zip(taus, result.num_tp, strict=True)
    }
    summary["stability"] = dataclasses.asdict(stable)
    summary["track_counts"] = dict(sorted(counts.items()))
    return summary


def score_tracks(
    tracks_path: PathLike,
    data_root: PathLike,
    split: str = "val",
    frame_list: PathLike | None = None,
    out_json: PathLike | None = None,
) -> dict[str, Any]:
    """Score a track result file (`frame_id class_id track_id score x1 y1 x2 y2`) against the
    ground-truth tracks of an ILSVRC VID annotation folder (docs/TRACK_PROTOCOL.md); optionally
    write the JSON summary (`evaluation.report.track_report` renders it).

    Summary keys: mAP_track (the mean over the taus), mAP_track@0.25 / @0.5 / @0.75, AP_track
    (per class, mean over taus) and AP_track@<tau>, num_gt_tracks, true_positive_tracks,
    stability (Zhang & Wang's errors of the tracks matched at 0.5), track_counts. A track with
    two classes or two boxes on one frame fails naming the file and line; a ground-truth track
    that does, naming its XML file.
    """
    counts: collections.Counter = collections.Counter()
    preds = track_results.read_tracks(tracks_path, num_classes(data_root, split))
    gt = load_ground_truth(data_root, split, frame_list, counts)
    try:
        summary = evaluate_tracks(gt, preds, counts)
    except tracks.TrackConsistencyError as e:
        if not e.ground_truth:
            line = track_results.line_of_row(tracks_path, e.row)
            raise track_results.TracksFormatError(f"{tracks_path}:{line}", e.problem) from None
        row = int(gt.frame[e.row])
        video_index = int(tracks.video_of_frames(gt)[row])
        video, _ = evaluation_videos(data_root, split, frame_list)[video_index]
        t = row - int(gt.video_starts[video_index])
        xml = video.annotation_path(data_root, t)
        raise ilsvrc.IlsvrcFormatError(xml, e.problem) from None
    summary.update(
        tracks_file=os.fspath(tracks_path),
        data_root=_name(data_root),
        split=split,
        frame_list=None if frame_list is None else os.fspath(frame_list),
    )
    if summary["track_counts"].get("track_detections_off_list"):
        log.warning(
            "%d track detections are on frames outside the list and were dropped",
            summary["track_counts"]["track_detections_off_list"],
        )
    if out_json is not None:
        results.write_summary(out_json, summary)
    return summary
