"""The HAM10000 image release as distributed: a metadata CSV and folders of dermatoscopic JPEGs.

Layout (Harvard Dataverse doi:10.7910/DVN/DBW86T, and the Kaggle copy)::

    HAM10000/
        HAM10000_metadata.csv           lesion_id, image_id, dx, ..., dataset
        HAM10000_images_part_1/ISIC_0024306.jpg ...   600 x 450 RGB
        HAM10000_images_part_2/ISIC_0029306.jpg ...

Images are found by ``image_id`` in the folder itself or any folder directly inside it, so a copy
with the two parts merged works too. Decoding needs Pillow (``pip install 'fedsilo[images]'``),
imported only here and only when images are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedsilo.errors import DataError

METADATA = "HAM10000_metadata.csv"
#: The seven diagnoses in alphabetical order, which is also DermaMNIST's label order (0 = akiec).
DX_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def metadata_of(root: Path) -> Path:
    """The metadata CSV of an image release folder."""
    path = Path(root) / METADATA
    if not path.is_file():
        raise DataError(
            f"{root} holds no {METADATA}",
            fix=f"pass the folder of the HAM10000 release, which holds {METADATA} and the image folders",
        )
    return path


def image_files(root: Path, image_ids: Sequence[str]) -> list[Path]:
    """The JPEG of every id, searched in ``root`` and its direct sub-folders."""
    root = Path(root)
    found = {p.stem: p for pattern in ("*.jpg", "*/*.jpg") for p in sorted(root.glob(pattern))}
    missing = [i for i in image_ids if i not in found]
    if missing:
        shown = ", ".join(f"{i}.jpg" for i in missing[:3])
        raise DataError(
            f"{len(missing)} of {len(image_ids)} images are missing under {root} (e.g. {shown})",
            fix="unpack both HAM10000_images_part_* folders next to the metadata CSV",
        )
    return [found[i] for i in image_ids]


def read_images(files: Sequence[Path], size: int) -> np.ndarray:
    """``(N, size, size, 3)`` uint8: each image squeezed to a square, as MedMNIST does.

    JPEG draft mode lets the decoder scale down by up to 8 while decoding, so a 600 x 450 image
    costs a fraction of a full decode; the rest is an area-averaging resize.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise DataError(
            "reading JPEG images needs Pillow, which is not installed", fix="pip install 'fedsilo[images]'"
        ) from exc
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as img:
                img.draft("RGB", (size, size))
                out[i] = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BOX))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"cannot read image {path}: {exc}", fix="replace the file with the released one") from exc
    return out
