"""Cole et al.'s precomputed-feature layout (CVPR 2021), for the linear-on-features mode.

A folder holding, per split ``train`` and ``val`` (their ``val`` is the official validation set,
which serves as the test set):

- ``formatted_{split}_labels.npy``: N x C full labels (0/1);
- ``formatted_{split}_labels_obs.npy``: N x C observed labels, 1 positive / 0 unknown / -1
  negative (optional: without it, one positive per image is drawn with ``seed``);
- ``formatted_{split}_images.npy``: N image names (optional, used as ids);
- ``{split}_features_{features}.npy``: N x D features (``features`` default
  ``imagenet_resnet50``, Cole et al.'s file names).

Their official train split is divided 80/20 into train / val with ``seed`` (1200). Features feed
the ``linear`` or ``mlp`` backbone as [D, 1, 1] "images". Example::

    data: {name: cole_features, root: /data/voc_features}
    model: {backbone: linear}
    method: {name: spml, loss: em_apl}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unhot.data.base import DataBundle, DataError, Split
from unhot.labels import (
    COLE_SEED,
    LabelMatrix,
    from_ternary,
    single_positive_matrix,
    train_val_split,
)


@dataclass
class ColeFeaturesConfig:
    """``data: {name: cole_features, root, features, val_fraction, seed}``."""

    root: str = "."
    features: str = "imagenet_resnet50"
    val_fraction: float = 0.2
    seed: int = COLE_SEED

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class FeatureVectors:
    """Float features [N, D] served as [N, D, 1, 1] images."""

    vectors: torch.Tensor

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def load(self, indices: np.ndarray) -> torch.Tensor:
        rows = self.vectors[torch.as_tensor(indices, dtype=torch.long)]
        return rows[:, :, None, None]


def _load(path: Path, required: bool = True) -> np.ndarray | None:
    if not path.is_file():
        if required:
            raise DataError(f"{path}: file not found (Cole et al.'s feature layout)")
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable .npy array ({err})") from err


def _check_numeric(path: Path, array: np.ndarray) -> None:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(f"{path}: expected numbers, got dtype {array.dtype}")


def _check_shape(path: Path, array: np.ndarray, expected: tuple[int | None, ...],
                 what: str) -> None:
    """Refuse ``array`` unless its shape is ``expected`` (None: any size)."""
    fits = array.ndim == len(expected) and all(
        want is None or want == got for want, got in zip(expected, array.shape, strict=True))
    if not fits:
        want = " x ".join("any" if size is None else str(size) for size in expected)
        raise DataError(f"{path}: shape {array.shape}, expected {want} ({what})")


def _check_values(path: Path, array: np.ndarray, valid: tuple[int, ...], what: str) -> None:
    """Refuse entries outside ``valid``, naming the first bad index and its value."""
    _check_numeric(path, array)
    bad = ~np.isin(array, valid)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{path}: {what}; index {index} holds {array[index].item()!r}")


def _split_paths(cfg: ColeFeaturesConfig, split: str) -> dict[str, Path]:
    names = {"labels": f"formatted_{split}_labels.npy",
             "features": f"{split}_features_{cfg.features}.npy",
             "labels_obs": f"formatted_{split}_labels_obs.npy",
             "images": f"formatted_{split}_images.npy"}
    return {key: Path(cfg.root) / name for key, name in names.items()}


def _read_split(cfg: ColeFeaturesConfig, split: str) -> dict[str, np.ndarray | None]:
    """The split's arrays (optional ones None), checked: 2-D features, N x C 0/1 labels,
    N x C -1/0/1 observed labels, N image names."""
    paths = _split_paths(cfg, split)
    arrays = {key: _load(path, key in ("labels", "features")) for key, path in paths.items()}
    features, true = arrays["features"], arrays["labels"]
    _check_shape(paths["features"], features, (None, None), "N images x D features")
    _check_numeric(paths["features"], features)
    rows = f"one row per row of {paths['features'].name}"
    _check_shape(paths["labels"], true, (len(features), None), f"N x C labels, {rows}")
    _check_values(paths["labels"], true, (0, 1), "full labels must be 0 or 1")
    if arrays["labels_obs"] is not None:
        _check_shape(paths["labels_obs"], arrays["labels_obs"], true.shape,
                     f"the shape of {paths['labels'].name}")
        _check_values(paths["labels_obs"], arrays["labels_obs"], (-1, 0, 1), "observed labels "
                      "must be 1 (positive), 0 (unknown) or -1 (negative)")
    if arrays["images"] is not None:
        _check_shape(paths["images"], arrays["images"], (len(features),),
                     f"one image name, {rows}")
    return arrays


def _split_arrays(cfg: ColeFeaturesConfig, split: str) -> tuple[np.ndarray, LabelMatrix,
                                                               np.ndarray, list[str]]:
    arrays = _read_split(cfg, split)
    true, observed, names = arrays["labels"].astype(bool), arrays["labels_obs"], arrays["images"]
    labels = (from_ternary(observed.astype(np.int64)) if observed is not None
              else single_positive_matrix(true, cfg.seed))
    ids = ([str(n) for n in names] if names is not None
           else [f"{split}/{i}" for i in range(len(true))])
    return arrays["features"].astype(np.float32), labels, true, ids


def _check_same_widths(root: str, train: np.ndarray, train_true: np.ndarray,
                       test: np.ndarray, test_true: np.ndarray) -> None:
    if test.shape[1] != train.shape[1] or test_true.shape[1] != train_true.shape[1]:
        raise DataError(f"{root}: the val split has {test.shape[1]} features and "
                        f"{test_true.shape[1]} classes per image, the train split "
                        f"{train.shape[1]} and {train_true.shape[1]}; both must come from the "
                        f"same feature extractor and class list")


def _split(name: str, features: np.ndarray, labels: LabelMatrix, true: np.ndarray,
           ids: list[str]) -> Split:
    return Split(FeatureVectors(torch.from_numpy(features)), labels, true,
                 np.full(len(true), -1), ids, name)


def build_cole_features(cfg: ColeFeaturesConfig) -> DataBundle:
    """Train / val (80/20 of Cole's train, seeded) and test (Cole's val) feature splits."""
    features, labels, true, ids = _split_arrays(cfg, "train")
    test_arrays = _split_arrays(cfg, "val")
    _check_same_widths(cfg.root, features, true, test_arrays[0], test_arrays[2])
    train_rows, val_rows = train_val_split(len(true), cfg.val_fraction, cfg.seed)
    test = _split("test", *test_arrays)
    train = _split("train", features[train_rows], labels.subset(train_rows), true[train_rows],
                   [ids[r] for r in train_rows])
    val = (_split("val", features[val_rows], labels.subset(val_rows), true[val_rows],
                  [ids[r] for r in val_rows]) if len(val_rows) else None)
    return DataBundle(train, test, [str(c) for c in range(true.shape[1])], val)
