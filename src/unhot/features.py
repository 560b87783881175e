"""``unhot features``: a run's pooled features in Cole et al.'s layout, for linear probes.

Our train split (with val, if any) becomes Cole's ``train`` and our test split their ``val``:
``formatted_{train,val}_{labels,labels_obs,images}.npy`` and ``{train,val}_features_{tag}.npy``,
read back by ``data: {name: cole_features, root: OUT, features: TAG}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from unhot.augment import to_float
from unhot.data import build_data
from unhot.data.base import Split, collate_batch
from unhot.finished import open_run
from unhot.runs import atomic_path
from unhot.weights import load_weights


def pooled_features(model: torch.nn.Module, split: Split, batch_size: int = 256) -> np.ndarray:
    """The globally pooled last feature map (what the head sees) of every sample, [N, F]."""
    loader = DataLoader(split, batch_size=batch_size, shuffle=False, collate_fn=collate_batch)
    model.eval()
    with torch.no_grad():
        chunks = [model(to_float(batch["image"])).pooled.float().numpy() for batch in loader]
    return np.concatenate(chunks)


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def write_split(out: Path, name: str, tag: str, model: torch.nn.Module,
                splits: list[Split]) -> tuple[int, ...]:
    """The features and labels of ``splits`` (concatenated) as Cole et al.'s split ``name``;
    returns the feature array's shape."""
    features = np.concatenate([pooled_features(model, s) for s in splits])
    true = np.concatenate([s.true for s in splits])
    observed = np.concatenate([s.labels.to_ternary() for s in splits])
    ids = np.asarray([i for s in splits for i in s.ids], dtype=str)
    _save(out / f"formatted_{name}_labels.npy", true.astype(np.float32))
    _save(out / f"formatted_{name}_labels_obs.npy", observed.astype(np.float32))
    _save(out / f"formatted_{name}_images.npy", ids)
    _save(out / f"{name}_features_{tag}.npy", features.astype(np.float32))
    return features.shape


def extract_features(run: Path, out: Path, data_file: str | None = None, tag: str = "unhot",
                     stage_name: str | None = None) -> dict[str, tuple[int, ...]]:
    """Write the features of ``run``'s stage ``stage_name`` (default: the final one, see
    :mod:`unhot.finished`) on its (or ``--data``'s) splits to ``out``; return each written
    split's feature shape."""
    opened = open_run(run, stage_name, data_file)
    data = build_data(opened.config.data)
    model, _ = load_weights(opened.weights_path)
    train = [s for s in (data.train, data.val) if s is not None]
    return {"train": write_split(out, "train", tag, model, train),
            "val": write_split(out, "val", tag, model, [data.test])}
