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


def _split_arrays(cfg: ColeFeaturesConfig, split: str) -> tuple[np.ndarray, LabelMatrix,
                                                               np.ndarray, list[str]]:
    root = Path(cfg.root)
    true = _load(root / f"formatted_{split}_labels.npy")
    features = _load(root / f"{split}_features_{cfg.features}.npy")
    observed = _load(root / f"formatted_{split}_labels_obs.npy", required=False)
    names = _load(root / f"formatted_{split}_images.npy", required=False)
    if true.ndim != 2 or features.ndim != 2 or len(true) != len(features):
        raise DataError(f"{root}: {split} labels {true.shape} and features {features.shape} "
                        f"must be N x C and N x D with the same N")
    true = true.astype(bool)
    labels = (from_ternary(observed.astype(np.int64)) if observed is not None
              else single_positive_matrix(true, cfg.seed))
    ids = ([str(n) for n in names] if names is not None
           else [f"{split}/{i}" for i in range(len(true))])
    return features.astype(np.float32), labels, true, ids


def _split(name: str, features: np.ndarray, labels: LabelMatrix, true: np.ndarray,
           ids: list[str]) -> Split:
    return Split(FeatureVectors(torch.from_numpy(features)), labels, true,
                 np.full(len(true), -1), ids, name)


def build_cole_features(cfg: ColeFeaturesConfig) -> DataBundle:
    """Train / val (80/20 of Cole's train, seeded) and test (Cole's val) feature splits."""
    features, labels, true, ids = _split_arrays(cfg, "train")
    train_rows, val_rows = train_val_split(len(true), cfg.val_fraction, cfg.seed)
    test = _split("test", *_split_arrays(cfg, "val"))
    train = _split("train", features[train_rows], labels.subset(train_rows), true[train_rows],
                   [ids[r] for r in train_rows])
    val = (_split("val", features[val_rows], labels.subset(val_rows), true[val_rows],
                  [ids[r] for r in val_rows]) if len(val_rows) else None)
    return DataBundle(train, test, [str(c) for c in range(true.shape[1])], val)
