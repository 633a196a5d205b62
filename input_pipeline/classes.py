"""The 30 ImageNet VID classes: names, WordNet ids and label numbers, in one place.

Order is the ILSVRC2015_VID_ID order (alphabetical by name), which is also FGFA's `classes_map`
and the release's `CLASSES_MAP` (VID_PROTOCOL §5). Labels here are 0-based (0 = airplane); the
ILSVRC result-file format and FGFA use 1-based ids (1 = airplane, 0 = background), so add 1 when
writing result files.
"""

from __future__ import annotations

# (name, WordNet id), label = position.
_VID_CLASSES: tuple[tuple[str, str], ...] = (
    ("airplane", "n02691156"),
    ("antelope", "n02419796"),
    ("bear", "n02131653"),
    ("bicycle", "n02834778"),
    ("bird", "n01503061"),
    ("bus", "n02924116"),
    ("car", "n02958343"),
    ("cattle", "n02402425"),
    ("dog", "n02084071"),
    ("domestic_cat", "n02121808"),
    ("elephant", "n02503517"),
    ("fox", "n02118333"),
    ("giant_panda", "n02510455"),
    ("hamster", "n02342885"),
    ("horse", "n02374451"),
    ("lion", "n02129165"),
    ("lizard", "n01674464"),
    ("monkey", "n02484322"),
    ("motorcycle", "n03790512"),
    ("rabbit", "n02324045"),
    ("red_panda", "n02509815"),
    ("sheep", "n02411705"),
    ("snake", "n01726692"),
    ("squirrel", "n02355227"),
    ("tiger", "n02129604"),
    ("train", "n04468005"),
    ("turtle", "n01662784"),
    ("watercraft", "n04530566"),
    ("whale", "n02062744"),
    ("zebra", "n02391049"),
)

NUM_CLASSES: int = len(_VID_CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(name for name, _ in _VID_CLASSES)
WNIDS: tuple[str, ...] = tuple(wnid for _, wnid in _VID_CLASSES)
WNID_TO_LABEL: dict[str, int] = {wnid: i for i, wnid in enumerate(WNIDS)}
NAME_TO_LABEL: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}


def label_of_wnid(wnid: str) -> int | None:
    """0-based VID label of a WordNet id, or None when it is not one of the 30 VID classes."""
    return WNID_TO_LABEL.get(wnid)
