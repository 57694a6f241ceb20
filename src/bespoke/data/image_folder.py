"""ImageFolder layout: ``DIR/train/<class>/*``, ``DIR/test/<class>/*``, optional ``DIR/val/<class>/*``.

Scanning is cheap and up front (folder names and file extensions only, nothing decoded), so a bad layout
fails before any training starts. Hidden files and folders (names starting with ``.``) are ignored; class
folders may hold sub-folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bespoke.errors import BespokeError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
_LAYOUT_HINT = "lay out images as DIR/train/<class>/*, DIR/test/<class>/* and optionally DIR/val/<class>/*"


@dataclass(frozen=True)
class FolderSplit:
    """Image paths of one split with their class indices."""

    paths: list[Path]
    labels: np.ndarray


@dataclass(frozen=True)
class FolderLayout:
    """A scanned ImageFolder: class names (sorted train folder names) and the splits found."""

    name: str
    classes: list[str]
    train: FolderSplit
    val: FolderSplit | None
    test: FolderSplit


def is_image_folder(root: Path) -> bool:
    """Whether ``root`` looks like an ImageFolder (it has a ``train`` sub-folder)."""
    return (root / "train").is_dir()


def _visible(path: Path, base: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(base).parts)


def _class_folders(split_dir: Path) -> dict[str, Path]:
    if not split_dir.is_dir():
        raise BespokeError(f"ImageFolder split {split_dir} is missing", _LAYOUT_HINT)
    folders: dict[str, Path] = {}
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise BespokeError(
                f"{entry} is a file directly in {split_dir.name}/, where only class folders belong",
                f"move it into a class folder or out of the data set; {_LAYOUT_HINT}",
            )
        folders[entry.name] = entry
    if not folders:
        raise BespokeError(f"ImageFolder split {split_dir} has no class folders", _LAYOUT_HINT)
    return folders


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(p for p in class_dir.rglob("*") if _visible(p, class_dir) and p.is_file())
    for p in files:
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise BespokeError(
                f"{p} is not an image (unknown extension {p.suffix or '<none>'!r})",
                "remove it or move it out of the data set; images must end in "
                + ", ".join(sorted(IMAGE_EXTENSIONS)),
            )
    if not files:
        raise BespokeError(f"class folder {class_dir} holds no images", "add images or remove the folder")
    return files


def _check_same_classes(split: str, found: set[str], classes: list[str], root: Path) -> None:
    missing, extra = sorted(set(classes) - found), sorted(found - set(classes))
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"extra {', '.join(extra)}"] if extra else []
        )
        raise BespokeError(
            f"class folders of {root / split} differ from train/: {'; '.join(parts)}",
            "every split must have the same class folders; add or rename the folders so they match",
        )


def _scan_split(folders: dict[str, Path], classes: list[str]) -> FolderSplit:
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        files = _image_files(folders[name])
        paths.extend(files)
        labels.extend([index] * len(files))
    return FolderSplit(paths, np.asarray(labels, dtype=np.int64))


def scan_image_folder(root: Path) -> FolderLayout:
    """Validate and index an ImageFolder directory (names and extensions only); ``BespokeError`` if bad."""
    train_folders = _class_folders(root / "train")
    classes = sorted(train_folders)
    test_folders = _class_folders(root / "test")
    _check_same_classes("test", set(test_folders), classes, root)
    val = None
    if (root / "val").exists():
        val_folders = _class_folders(root / "val")
        _check_same_classes("val", set(val_folders), classes, root)
        val = _scan_split(val_folders, classes)
    return FolderLayout(
        root.resolve().name,
        classes,
        _scan_split(train_folders, classes),
        val,
        _scan_split(test_folders, classes),
    )
