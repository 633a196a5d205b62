"""The checks of an ILSVRC2015 folder that the TFDS builders apply, and `check_root`, which runs
them over a whole folder without building anything (`main.py --mode=check`).

Every problem found is a `Finding`: the file (or folder), the problem, and what the builder
does about it:
  fix     it repairs it: re-encodes a grayscale, CMYK, truncated or non-JPEG image; boxes are
          read in the image's real size when the XML's <size> differs; clips a box to the
          image; a frame without XML is a frame without objects; a list whose length differs
          from the folder, or frames numbered with gaps: the files on disk are used, in order
  drop    it leaves it out: a box outside the image or of zero size; a DET image without XML
          or that cannot be decoded
  refuse  it stops before writing, naming it: an empty, unreadable or undecodable video frame
          (a video's frames cannot be left out: their neighbours' indices depend on them),
          malformed XML, a WordNet id outside the 30 VID classes, a listed video folder that
          is missing, a malformed list file, frames of different sizes in one video
The builders call the same functions (`video_frames`, `det_entry`, `det_image`) while they
write, and `builders.prepare` runs `check_root` (headers only, no decoding) before a build, so a
folder the build would refuse is refused before anything is written, with every reason.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pathlib
from collections.abc import Iterator

from input_pipeline import ilsvrc

log = logging.getLogger(__name__)

FIX, DROP, REFUSE = "fix", "drop", "refuse"
ACTIONS = (REFUSE, DROP, FIX)

# Enough of a JPEG to find its frame header (SOF) in practice; EXIF blocks can push it later,
# and then the whole file is read.
_HEADER_BYTES = 1 << 16


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem: where, what, what the builder does (fix | drop | refuse), its counter."""

    file: str
    problem: str
    action: str
    kind: str

    def line(self) -> str:
        return f"{self.file}: {self.problem} [{self.action}]"


class Findings:
    """Findings in order, plus the build report's counters (`counts`, shared with the
    builders: every finding counts under its kind). With `log_them`, each finding is logged
    as a warning when found (the builders name every file they change or leave out)."""

    def __init__(self, counts: collections.Counter | None = None, *, log_them: bool = False):
        self.items: list[Finding] = []
        self.counts = counts if counts is not None else collections.Counter()
        self._log = log_them

    def add(self, file: str | os.PathLike, kind: str, problem: str, action: str) -> None:
        finding = Finding(os.fspath(file), problem, action, kind)
        self.items.append(finding)
        self.counts[kind] += 1
        if self._log:
            log.warning("%s", finding.line())

    def refusals(self) -> list[Finding]:
        return [f for f in self.items if f.action == REFUSE]

    def raise_if_refused(self, hint: str = "") -> None:
        """IlsvrcFormatError naming the first refused file (and how many more there are)."""
        refused = self.refusals()
        if not refused:
            return
        more = f" (and {len(refused) - 1} more that the build refuses)" if len(refused) > 1 else ""
        raise ilsvrc.IlsvrcFormatError(refused[0].file, refused[0].problem + more + hint)


# ----------------------------------------------------------------------------------------------
# Images


def _header_size(path: pathlib.Path) -> tuple[int, int, int] | None:
    """(width, height, components) from the first bytes of a JPEG, None if not found there."""
    with open(path, "rb") as f:
        head = f.read(_HEADER_BYTES)
    if head[:2] != b"\xff\xd8":
        return None
    return ilsvrc._jpeg_info(head)


@dataclasses.dataclass(frozen=True)
class Image:
    """An image as the builder stores it: JPEG bytes (None when only the header was read)."""

    data: bytes | None
    width: int
    height: int


def read_image(
    path: pathlib.Path, findings: Findings, *, decode: bool, header_only: bool, action: str
) -> Image | None:
    """The image for storage (`ilsvrc.load_image`; decode: verify every JPEG by decoding it),
    recording what is fixed; None when it cannot be used (recorded with `action`: refuse for a
    video frame, drop for a DET image). header_only: read just enough to know the size
    (well-formed colour or grayscale/CMYK JPEGs), the rest as load_image does."""
    try:
        if header_only:
            size = path.stat().st_size
            if size == 0:
                raise ilsvrc.IlsvrcFormatError(path, "empty image file (0 bytes)")
            info = _header_size(path)
            if info is not None and info[2] in (1, 3, 4):
                if info[2] != 3:
                    kind = "grayscale" if info[2] == 1 else "cmyk"
                    findings.add(path, f"images_{kind}", _FIXES[kind], FIX)
                return Image(None, info[0], info[1])
        data, width, height, fix = ilsvrc.load_image(path, verify=decode)
    except ilsvrc.IlsvrcFormatError as e:
        kind = "images_unreadable" if action == REFUSE else "images_corrupt_dropped"
        findings.add(e.file, kind, e.problem, action)
        return None
    if fix is not None:
        findings.add(path, f"images_{fix}", _FIXES.get(fix, f"{fix} image, re-encoded"), FIX)
    return Image(data, width, height)


_FIXES = {
    "grayscale": "grayscale JPEG, converted to 3 channels",
    "cmyk": "CMYK JPEG, converted to 3 channels",
    "truncated": "truncated JPEG, the rows present decoded and re-encoded",
    "not_jpeg": "not a JPEG, decoded and re-encoded as one",
    "corrupt_header": "JPEG without a readable frame header, decoded and re-encoded",
    "unusual_components": "JPEG with an unusual channel count, converted to 3 channels",
}


# ----------------------------------------------------------------------------------------------
# Annotations


def read_objects(
    xml_path: pathlib.Path, width: int, height: int, findings: Findings
) -> list[ilsvrc.Object] | None:
    """The cleaned-up objects of a VID frame's XML in the image's real size
    (`sanitize_objects`), recording each change; None when the XML cannot be used (refused:
    malformed, or an object of a class outside the 30). A frame without XML has no objects."""
    if not xml_path.is_file():
        findings.add(xml_path, "frames_without_xml", "no XML file: a frame without objects", FIX)
        return []
    try:
        ann = ilsvrc.parse_annotation(xml_path)
    except ilsvrc.IlsvrcFormatError as e:
        findings.add(e.file, "xml_malformed", e.problem, REFUSE)
        return None
    unknown = [o for o in ann.objects if o.label is None]
    if unknown:
        findings.add(
            xml_path, "unknown_class",
            f"<name> {unknown[0].wnid} is not one of the 30 VID classes", REFUSE,
        )  # fmt: skip
        return None
    if (ann.width, ann.height) != (width, height):
        findings.add(
            xml_path, "xml_size_mismatch",
            f"<size> {ann.width}x{ann.height}, the image is {width}x{height}: boxes are read in "
            "the image's size", FIX,
        )  # fmt: skip

    def changed(kind: str, obj: ilsvrc.Object) -> None:
        box = f"box {list(obj.box)} ({obj.wnid})"
        what = {
            "boxes_clipped": (f"{box} reaches outside the {width}x{height} image: clipped", FIX),
            "boxes_dropped_outside": (f"{box} lies outside the {width}x{height} image", DROP),
            "boxes_dropped_empty": (f"{box} has zero or negative size", DROP),
        }[kind]
        findings.add(xml_path, kind, *what)

    counts: collections.Counter = collections.Counter()  # counted by `changed` already
    return ilsvrc.sanitize_objects(ann.objects, width, height, counts, on_change=changed)


# ----------------------------------------------------------------------------------------------
# Videos and DET images


@dataclasses.dataclass(frozen=True)
class Frame:
    """One video frame as the builder writes it."""

    index: int
    image: Image
    objects: list[ilsvrc.Object]


def video_frames(
    root: pathlib.Path,
    video: ilsvrc.Video,
    findings: Findings,
    *,
    decode: bool,
    header_only: bool = False,
) -> Iterator[Frame]:
    """The frames of `video` that can be used, in order, recording every finding. A frame
    with a refusal is not yielded; frames of a size different from the first frame's are
    refused once, naming the video folder (the clip pipeline stacks a video's frames)."""
    first: tuple[str, int, int] | None = None
    mixed = False
    for i in range(video.num_frames):
        image_path = video.image_path(root, i)
        image = read_image(image_path, findings, decode=decode, header_only=header_only,
                           action=REFUSE)  # fmt: skip
        if image is None:
            continue
        if first is None:
            first = (image_path.name, image.width, image.height)
        elif (image.width, image.height) != first[1:] and not mixed:
            mixed = True
            findings.add(
                image_path.parent, "videos_mixed_sizes",
                f"frames differ in size: {first[0]} is {first[1]}x{first[2]}, "
                f"{image_path.name} is {image.width}x{image.height} (one size per video)",
                REFUSE,
            )  # fmt: skip
        objects = read_objects(video.annotation_path(root, i), image.width, image.height, findings)
        if objects is not None and not mixed:
            yield Frame(i, image, objects)


def det_entry(
    root: pathlib.Path, image_id: str, findings: Findings
) -> tuple[ilsvrc.Annotation, list[ilsvrc.Object]] | None:
    """A DET image's annotation and its VID-class objects (raw boxes), None when the image is
    left out (no XML: dropped; malformed XML: refused; no VID-class object: counted only)."""
    xml_path = ilsvrc.det_annotation_path(root, image_id)
    if not xml_path.is_file():
        findings.add(xml_path, "images_without_xml", "no XML file: image left out", DROP)
        findings.counts["images_dropped_no_vid_object"] += 1
        return None
    try:
        ann = ilsvrc.parse_annotation(xml_path)
    except ilsvrc.IlsvrcFormatError as e:
        findings.add(e.file, "xml_malformed", e.problem, REFUSE)
        return None
    kept = [o for o in ann.objects if o.label is not None]
    findings.counts["objects_other_classes_dropped"] += len(ann.objects) - len(kept)
    if not kept:
        findings.counts["images_dropped_no_vid_object"] += 1
        return None
    return ann, kept


def det_image(
    root: pathlib.Path,
    image_id: str,
    ann: ilsvrc.Annotation,
    objects: list[ilsvrc.Object],
    findings: Findings,
    *,
    decode: bool,
    header_only: bool = False,
) -> tuple[Image, list[ilsvrc.Object]] | None:
    """A DET image and its cleaned-up objects, None when it is left out (cannot be decoded,
    or no box survives the clean-up)."""
    image_path = ilsvrc.det_image_path(root, image_id)
    image = read_image(image_path, findings, decode=decode, header_only=header_only, action=DROP)
    if image is None:
        return None
    xml_path = ilsvrc.det_annotation_path(root, image_id)
    if (ann.width, ann.height) != (image.width, image.height):
        findings.add(
            xml_path, "xml_size_mismatch",
            f"<size> {ann.width}x{ann.height}, the image is {image.width}x{image.height}: boxes "
            "are read in the image's size", FIX,
        )  # fmt: skip

    def changed(kind: str, obj: ilsvrc.Object) -> None:
        action = FIX if kind == "boxes_clipped" else DROP
        findings.add(xml_path, kind, f"box {list(obj.box)} ({obj.wnid}): {kind[6:]}", action)

    kept = ilsvrc.sanitize_objects(objects, image.width, image.height, collections.Counter(),
                                   on_change=changed)  # fmt: skip
    if not kept:
        findings.counts["images_dropped_no_vid_object"] += 1
        return None
    return image, kept


# ----------------------------------------------------------------------------------------------
# A whole folder


def require_ilsvrc_root(root: str | os.PathLike) -> pathlib.Path:
    """`root` as a Path; IlsvrcFormatError unless it is a folder holding Data/VID."""
    path = pathlib.Path(root)
    if not path.is_dir():
        raise ilsvrc.IlsvrcFormatError(path, "no such folder (the ILSVRC2015 data root)")
    if not (path / "Data" / "VID").is_dir():
        raise ilsvrc.IlsvrcFormatError(
            path, "not an ILSVRC2015 folder: no Data/VID (expected Data/VID/<split>/..., "
            "Annotations/VID/<split>/... and optionally ImageSets/, Data/DET/)",
        )  # fmt: skip
    return path


@dataclasses.dataclass
class Report:
    """`check_root`'s result: the findings and what was looked at."""

    root: str
    findings: Findings
    scanned: dict[str, str]

    @property
    def refusals(self) -> list[Finding]:
        return self.findings.refusals()

    def text(self) -> str:
        """Every finding, one per line, then the counts."""
        lines = [f"checked {self.root}: " + "; ".join(f"{k} {v}" for k, v in self.scanned.items())]
        lines += [f.line() for f in self.findings.items]
        by_action = collections.Counter(f.action for f in self.findings.items)
        by_kind = collections.Counter(f"{f.kind} [{f.action}]" for f in self.findings.items)
        total = len(self.findings.items)
        counts = f"{total} problem{'s' * (total != 1)}: " + ", ".join(
            f"{by_action[a]} {a}" for a in ACTIONS
        )
        if total:
            counts += " (" + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())) + ")"
        lines.append(counts)
        if by_action[REFUSE]:
            lines.append(
                f"the build refuses this folder: fix the {by_action[REFUSE]} 'refuse' problems "
                "(drop and fix are what the build does by itself)"
            )
        else:
            lines.append("the build accepts this folder")
        return "\n".join(lines)


def check_root(
    root: str | os.PathLike,
    *,
    datasets: tuple[str, ...] = ("vid", "det"),
    use_lists: bool = True,
    decode: bool = True,
    header_only: bool = False,
    log_them: bool = False,
) -> Report:
    """Run the builders' checks over the ILSVRC folder `root` (VID train and val; DET train
    when present) and return every finding. decode: decode every JPEG (finds corrupt image
    data, as a build with verify_images does); header_only: read only image headers (the
    sizes; what a build refuses before it starts)."""
    path = require_ilsvrc_root(root)
    findings = Findings(log_them=log_them)
    scanned: dict[str, str] = {}
    if "vid" in datasets:
        for split in ("train", "val"):
            notes: list[ilsvrc.Note] = []
            try:
                videos = ilsvrc.list_vid_videos(path, split, use_lists=use_lists, notes=notes)
            except ilsvrc.IlsvrcFormatError as e:
                findings.add(e.file, "list_malformed", e.problem, REFUSE)
                scanned[f"VID {split}"] = "not read (list file)"
                continue
            for file, kind, problem in notes:
                findings.add(file, kind, problem, REFUSE if kind == "videos_missing" else FIX)
            for video in videos:
                for _ in video_frames(path, video, findings, decode=decode,
                                      header_only=header_only):  # fmt: skip
                    pass
            count = sum(v.num_frames for v in videos)
            scanned[f"VID {split}"] = f"{len(videos)} videos, {count} frames" if videos else "none"
    if "det" in datasets:
        image_ids = ilsvrc.list_det_images(path, use_lists=use_lists)
        for image_id in image_ids:
            entry = det_entry(path, image_id, findings)
            if entry is not None:
                det_image(path, image_id, *entry, findings, decode=decode, header_only=header_only)
        scanned["DET train"] = f"{len(image_ids)} images" if image_ids else "none"
    return Report(os.fspath(root), findings, scanned)
