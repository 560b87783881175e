"""What one stage of a run keeps on disk, and its entries in the manifest (unhot.runs).

:class:`StageFiles` is the engine's persistence half: the training loop (unhot.engine) builds
checkpoint states and metrics; this class writes and reads them: checkpoints (the latest and
the one before it, verified by SHA-256 on reading), best and final weights, test predictions,
the reliability diagram, ``metrics.jsonl`` and the stage's :class:`~unhot.runs.StageRecord`.
Only the main process of a multi-process launch writes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from unhot.data.base import Split
from unhot.errors import IntegrityError, RunError
from unhot.models import Classifier
from unhot.plots import reliability_diagram
from unhot.runs import (
    Manifest,
    RunFolder,
    StageRecord,
    load_checkpoint,
    save_checkpoint,
    write_jsonl,
    write_npz,
)
from unhot.weights import Architecture, save_weights

CHECKPOINT_KEYS = ("model", "optimizer", "task", "epoch", "step", "history")
"""What every checkpoint holds (besides optional keys: position, best, class_names, ...)."""


class StageFiles:
    """The files of stage ``stage`` in ``folder``; ``earlier`` names the stages trained before
    it (their logs come first in ``metrics.jsonl``); ``writes``: this is the main process."""

    def __init__(self, folder: RunFolder, manifest: Manifest, stage: str, earlier: list[str],
                 writes: bool) -> None:
        self.folder, self.manifest, self.stage = folder, manifest, stage
        self.earlier, self.writes = earlier, writes

    @property
    def checkpoint(self) -> Path:
        return self.folder.checkpoint_path(self.stage)

    @property
    def best_weights(self) -> Path:
        return self.folder.best_weights_path(self.stage)

    def weights_of(self, stage: str) -> Path:
        """The final weights of an earlier stage this one builds on (a one-line error if
        missing)."""
        path = self.folder.weights_path(stage)
        if not path.exists():
            raise RunError(f"stage '{self.stage}' needs the weights of stage '{stage}', which "
                           f"are missing ({path})")
        return path

    def kept_checkpoint(self, epoch: int) -> str:
        """The last good checkpoint, in words, for error messages."""
        return f"{self.checkpoint} (epoch {epoch})" if self.checkpoint.exists() else "none yet"

    def read_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        """The latest checkpoint whose SHA-256 verifies: ``checkpoint.pt``, or the one before it
        when that is corrupt (set aside as ``checkpoint.corrupt.pt``, with a warning) or missing
        (a kill between the two renames of :func:`unhot.runs.save_checkpoint`)."""
        path = self.checkpoint
        previous = self.folder.previous_checkpoint_path(self.stage)
        if path.exists():
            try:
                return path, load_checkpoint(path, CHECKPOINT_KEYS)
            except IntegrityError as err:
                state = _sound_checkpoint(previous)
                if state is None:
                    raise IntegrityError(f"{err}; no sound earlier checkpoint is kept: delete "
                                         f"{path.parent} to retrain stage '{self.stage}' from "
                                         f"the start") from err
                path.replace(path.with_suffix(".corrupt.pt"))
                print(f"unhot: warning: {err}; set it aside as checkpoint.corrupt.pt and "
                      f"resuming from {previous.name} (epoch {state['epoch']})",
                      file=sys.stderr)
                return previous, state
        if previous.exists():
            return previous, load_checkpoint(previous, CHECKPOINT_KEYS)
        return None

    def save_checkpoint(self, state: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Write a checkpoint; after a finished epoch (no ``position`` in ``state``) also the
        log and the stage's manifest record (a stop inside an epoch leaves them at the last
        finished epoch)."""
        if not self.writes:
            return
        save_checkpoint(self.checkpoint, state)
        if "position" not in state:
            self.write_log(history)
            self.manifest.stages[self.stage] = StageRecord(False, int(state["epoch"]))
            self.folder.write_manifest(self.manifest)

    def save_best(self, model: Classifier, arch: Architecture) -> None:
        if self.writes:
            save_weights(model, arch, self.best_weights)

    def write_log(self, history: list[dict[str, Any]]) -> None:
        """``metrics.jsonl``: the earlier stages' rows, then this stage's ``history``."""
        rows: list[dict[str, Any]] = []
        for stage in self.earlier:
            rows += self.manifest.stages.get(stage, StageRecord()).history
        write_jsonl(self.folder.metrics_path, rows + history)

    def complete(self, model: Classifier, arch: Architecture, test: Split, scores: np.ndarray,
                 history: list[dict[str, Any]], metrics: dict[str, float], epoch: int,
                 title: str, top1: bool) -> None:
        """Write the stage's final weights, test predictions and reliability diagram, then mark
        it complete (``history`` ends with the final test row)."""
        if not self.writes:
            return
        save_weights(model, arch, self.folder.weights_path(self.stage))
        difficult = test.difficult_or_none
        write_npz(self.folder.predictions_path(self.stage), scores=scores, true=test.true,
                  target=test.target, ids=np.asarray(test.ids, dtype=str),
                  **({} if difficult is None else {"difficult": difficult}))
        reliability_diagram(scores, test.true, self.folder.stage_dir(self.stage) /
                            "reliability.png", title, top1=top1)
        self.manifest.stages[self.stage] = StageRecord(True, epoch, history, metrics)
        self.write_log(history)
        self.folder.write_manifest(self.manifest)


def _sound_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it exists and verifies, else None."""
    try:
        return load_checkpoint(path, CHECKPOINT_KEYS) if path.exists() else None
    except IntegrityError:
        return None
