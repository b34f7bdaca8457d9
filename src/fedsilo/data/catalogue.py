"""The datasets fedsilo knows by name: their files, published checksums, sources and licences.

:mod:`fedsilo.data.datasets` finds, checks and fetches them; this module is only the catalogue.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from fedsilo.errors import ConfigError

_MEDMNIST = "https://zenodo.org/records/10519652/files/{}.npz?download=1"
_MEDMNIST_CITATION = "J. Yang et al., MedMNIST v2, Scientific Data 10, 41 (2023), doi:10.1038/s41597-022-01721-8"


@dataclass(frozen=True)
class DatasetInfo:
    """One known file. ``sha256`` (when known) decides, else ``md5``; ``alt_sha256`` lists
    other byte layouts of the same data that are accepted too (``note`` says why)."""

    name: str
    filename: str
    url: str | None
    md5: str | None
    sha256: str | None
    licence: str
    citation: str
    alt_sha256: tuple[str, ...] = ()
    homepage: str = ""
    note: str = ""
    bundled_in: str = ""  # "package/sub/folder" of an installed package that ships the file

    def bundled_dirs(self) -> list[Path]:
        """Where an installed package ships this file; the package is located, never imported."""
        if not self.bundled_in:
            return []
        package, _, sub = self.bundled_in.partition("/")
        spec = importlib.util.find_spec(package)
        roots = list(spec.submodule_search_locations or []) if spec is not None else []
        return [Path(root) / sub for root in roots]

    def __post_init__(self) -> None:
        if not (self.md5 or self.sha256):
            raise ValueError(f"dataset {self.name!r} needs an md5 or a sha256 to be verifiable")

    def expected(self) -> str:
        """The checksum(s) a file must have, as a user reads them."""
        main = f"sha256 {self.sha256}" if self.sha256 else f"md5 {self.md5}"
        return " or ".join([main, *(f"sha256 {alt}" for alt in self.alt_sha256)])

    def accepts(self, md5: str, sha256: str) -> bool:
        if sha256 in self.alt_sha256:
            return True
        return sha256 == self.sha256 if self.sha256 else md5 == self.md5


_KNOWN = (
    DatasetInfo(
        name="pneumoniamnist",
        filename="pneumoniamnist.npz",
        url=_MEDMNIST.format("pneumoniamnist"),
        md5="28209eda62fecd6e6a2d98b1501bb15f",  # medmnist 3.0.2, medmnist/info.py
        sha256="e1792d3f03751cb101e99f19a63b3c1941436c988665f47853417b05be250cd8",
        licence="CC BY 4.0",
        citation=_MEDMNIST_CITATION + "; D. S. Kermany et al., Cell 172(5):1122-1131 (2018)",
        homepage="https://zenodo.org/records/10519652",
    ),
    DatasetInfo(
        name="breastmnist",
        filename="breastmnist.npz",
        url=_MEDMNIST.format("breastmnist"),
        md5="750601b1f35ba3300ea97c75c52ff8f6",  # medmnist 3.0.2, medmnist/info.py
        sha256=None,
        # The project's shared copy is a re-save that stores labels as (N,) instead of (N, 1);
        # its split sizes and class counts equal the official release, so it is accepted too.
        alt_sha256=("5e68d79723fb3a63a399b0a66b66451799fc2eb3651f469cec0b679cfd743b68",),
        note="also accepts the shared re-save whose labels are 1-D (same splits and counts)",
        licence="CC BY 4.0",
        citation=_MEDMNIST_CITATION + "; W. Al-Dhabyani et al., Data in Brief 28 (2020)",
        homepage="https://zenodo.org/records/10519652",
    ),
    DatasetInfo(
        name="dermamnist",
        filename="dermamnist.npz",
        url=_MEDMNIST.format("dermamnist"),
        md5="0744692d530f8e62ec473284d019b0c7",  # medmnist 3.0.2, medmnist/info.py
        sha256=None,
        # Not shipped: 28x28 RGB HAM10000 images, 7007 / 1003 / 2005 (train / val / test), labels
        # 0-6 = akiec, bcc, bkl, df, mel, nv, vasc. Its splits ignore lesion and site.
        note="not shipped; split by image, not by lesion or site",
        licence="CC BY-NC 4.0 (non-commercial)",
        citation=_MEDMNIST_CITATION + "; P. Tschandl, C. Rosendahl, H. Kittler, Scientific Data 5, 180161 (2018)",
        homepage="https://zenodo.org/records/10519652",
    ),
    DatasetInfo(
        name="mnist",
        filename="mnist.npz",
        url="https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
        md5="8a61469f7ea1b51cbae51d4f78837e45",
        sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",  # Keras'
        # The shared copy was rebuilt from the official idx files and re-saved: the same
        # arrays in a different zip container.
        alt_sha256=("06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",),
        note="also accepts the shared re-save holding the official arrays",
        licence="CC BY-SA 3.0",
        citation="Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, Proc. IEEE 86(11) (1998)",
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    DatasetInfo(
        name="ham10000_metadata",
        filename="HAM10000_metadata.csv",
        url=None,  # the Dataverse DOI is a landing page, not a file
        md5=None,
        sha256="4df1a05042e1672316edd78bb6b4bfe8f64f1c8cf3cc33c3435a43de3bdbe8ee",
        licence="CC BY-NC 4.0 (non-commercial)",
        citation="P. Tschandl, C. Rosendahl, H. Kittler, Scientific Data 5, 180161 (2018)",
        homepage="https://doi.org/10.7910/DVN/DBW86T",
    ),
    DatasetInfo(
        name="breast_cancer_wisconsin",
        filename="breast_cancer.csv",
        url=None,  # never downloaded: scikit-learn ships it (569 tumours, 30 features, 0 malignant / 1 benign)
        md5=None,
        sha256="fed3eb72d0575ef6192293f5093c6e801b1476b577d0386bf4455504522172ed",  # scikit-learn 1.9.1's copy
        bundled_in="sklearn/datasets/data",
        note="the copy scikit-learn ships; install fedsilo[sklearn] to have it",
        licence="CC BY 4.0",
        citation="W. H. Wolberg, W. N. Street, O. L. Mangasarian, Breast Cancer Wisconsin (Diagnostic), "
        "UCI Machine Learning Repository (1995)",
        homepage="https://archive.ics.uci.edu/dataset/17/breast+cancer+wisconsin+diagnostic",
    ),
)
DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({info.name: info for info in _KNOWN})


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``, or a ConfigError listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}", fix=f"use one of: {', '.join(sorted(DATASETS))}") from None
