"""The one training loop: stages of (model, optional frozen teacher, task), resumable per epoch.

Devices and processes go through HuggingFace Accelerate, so the same code runs on one CPU, one
GPU, or many processes under ``torchrun`` / ``accelerate launch``. Every batch carries sample
indices; evaluation gathers (index, scores) from all ranks and drops duplicates before scoring.

Determinism: the model init, the shuffling, the augmentation and torch's global RNG are reseeded
from (seed, stage, epoch) at every epoch start, so a run resumed from a checkpoint continues
exactly as an uninterrupted run would. A run stopped by SIGTERM or SIGINT (:mod:`unhot.stopping`)
saves its position inside the epoch (batches done, RNG states, the epoch's loss terms) and
resumes from there.
"""

from __future__ import annotations

import functools
import math
import operator
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from unhot.augment import augment, to_float
from unhot.config import OptimConfig, RunConfig, to_dict
from unhot.data import build_data
from unhot.data.base import LABEL_FIELDS, DataBundle, Split, collate_batch
from unhot.data.views import training_views
from unhot.errors import TrainingError
from unhot.finished import method_stages
from unhot.methods.base import EpochEnd, Stage, StepContext
from unhot.metrics import compute_metrics, metric_names
from unhot.models import Classifier, head_parameters
from unhot.pretrained import load_pretrained, pretrained_norm, read_pretrained
from unhot.runs import (
    Manifest,
    RunError,
    RunFolder,
    one_line,
    write_json,
)
from unhot.stage_files import StageFiles
from unhot.stopping import StopFlag, Stopped, ignore_stop_signals, stop_requests
from unhot.weights import Architecture, load_weights

RESULT_NEUTRAL_KEYS = ("train.progress", "train.num_workers", "train.eval_batch_size",
                       "train.device", "train.threads")
"""Config keys that may differ when resuming a run: they do not change its results."""


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from ``parts`` (stable across processes and Python runs)."""
    text = "/".join(str(p) for p in parts).encode()
    return int(np.random.SeedSequence(list(text)).generate_state(2, dtype=np.uint32)
               .view(np.uint64)[0] >> np.uint64(1))


def autocast(accelerator: Accelerator) -> AbstractContextManager[Any]:
    """Accelerate's autocast under mixed precision, else nothing (entering it costs ~35 us a
    step)."""
    return accelerator.autocast() if accelerator.mixed_precision != "no" else nullcontext()


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation every epoch, determined by (seed, epoch) alone."""

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0
        self.resumed: tuple[int, int] = (-1, 0)
        """(epoch, samples of it already trained on before a stop): those are skipped."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def skip(self) -> int:
        return self.resumed[1] if self.resumed[0] == self.epoch else 0

    def __len__(self) -> int:
        return self.num_samples - self.skip

    def order(self) -> np.ndarray:
        """This epoch's permutation of the sample indices, after the ``skip`` first ones."""
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.permutation(self.num_samples)[self.skip:]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.order().tolist())


class InProcessBatches:
    """The batches a ``DataLoader(split, batch_size, sampler, drop_last=True)`` yields, made in
    this process straight from the sampler's permutation: the same batches without the
    DataLoader's ~0.15 ms per batch (used with no worker processes and one process), holding
    only the label ``fields`` the task reads."""

    def __init__(self, split: Split, sampler: EpochShuffleSampler, batch_size: int,
                 fields: tuple[str, ...] = LABEL_FIELDS) -> None:
        self.split, self.sampler, self.batch_size = split, sampler, batch_size
        self.fields = fields

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        order, size = self.sampler.order(), self.batch_size
        for k in range(len(self)):
            yield self.split.batch(order[k * size:(k + 1) * size], self.fields)


def training_batches(split: Split, sampler: EpochShuffleSampler, cfg: RunConfig,
                     accelerator: Accelerator, fields: tuple[str, ...] = LABEL_FIELDS
                     ) -> InProcessBatches | DataLoader:
    """The training loader: :class:`InProcessBatches` with ``train.num_workers`` 0 in one
    process, else a DataLoader (worker processes decode images; Accelerate shards it)."""
    if cfg.train.num_workers == 0 and accelerator.num_processes == 1:
        return InProcessBatches(split, sampler, cfg.optim.batch_size, fields)
    return DataLoader(split, batch_size=cfg.optim.batch_size, sampler=sampler, drop_last=True,
                      collate_fn=collate_batch, num_workers=cfg.train.num_workers,
                      pin_memory=accelerator.device.type == "cuda",
                      worker_init_fn=ignore_stop_signals)


def learning_rate(step: int, steps_per_epoch: int, epochs: int, cfg: OptimConfig) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    Linear warm-up over ``warmup_epochs`` to ``lr``; then ``cosine``:
    ``lr * (1 + cos(pi * t)) / 2`` with t the fraction of post-warm-up steps done; ``step``:
    ``lr * gamma ** (#milestones <= epoch)``; ``constant``: ``lr``.
    """
    total = max(1, steps_per_epoch * epochs)
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "cosine":
        t = (step - warm) / max(1, total - warm)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    if cfg.schedule == "step":
        epoch = step / steps_per_epoch
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "constant":
        return cfg.lr
    raise RunError(f"unknown optim.schedule '{cfg.schedule}'; valid: cosine, step, constant")


def parameter_groups(model: Classifier, head_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """The trainable parameters as optimizer groups, each with an ``lr_mult`` on the scheduled
    learning rate: one group, or with ``head_lr_mult`` != 1 the backbone's and the heads' (Cole
    et al. fine-tune the classifier at 10x the backbone's rate)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if head_lr_mult == 1:
        return [{"params": trainable, "lr_mult": 1.0}]
    heads = {id(p) for p in head_parameters(model)}
    groups = [{"params": [p for p in trainable if id(p) not in heads], "lr_mult": 1.0},
              {"params": [p for p in trainable if id(p) in heads], "lr_mult": head_lr_mult}]
    return [g for g in groups if g["params"]]


def build_optimizer(params: list[nn.Parameter] | list[dict[str, Any]], cfg: OptimConfig
                    ) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW with weight decay, from ``optim``, over
    ``params`` (tensors or :func:`parameter_groups`)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas,
                                weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas,
                                 weight_decay=cfg.weight_decay)
    raise RunError(f"unknown optim.name '{cfg.name}'; valid: sgd, adam, adamw")


def make_accelerator(cfg: RunConfig) -> Accelerator:
    """One Accelerator per process on ``train.device``: ``auto`` is CUDA if present, else CPU;
    ``cuda`` without a CUDA device is an error; mixed precision on CUDA only."""
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    has_cuda = torch.cuda.is_available()
    if cfg.train.device == "cuda" and not has_cuda:
        raise RunError("train.device is 'cuda' but no CUDA device is available "
                       "(torch.cuda.is_available() is False); set train.device=auto or cpu")
    use_cpu = cfg.train.device == "cpu" or not has_cuda
    precision = cfg.train.mixed_precision
    if use_cpu and precision != "no":
        raise RunError("train.mixed_precision needs a CUDA device (bf16 on this CPU crashes); "
                       "set train.mixed_precision=no")
    return Accelerator(cpu=use_cpu, mixed_precision=precision)


@dataclass
class EpochProgress:
    """A training epoch's running totals (kept in a mid-epoch checkpoint): loss terms per step,
    images and batches done, and when it started (``time.perf_counter``)."""

    terms: dict[str, list[Tensor]] = field(default_factory=dict)
    images: int = 0
    batches: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, losses: dict[str, Tensor], images: int) -> None:
        for key, value in losses.items():
            self.terms.setdefault(key, []).append(value.detach())
        self.images += images
        self.batches += 1

    def result(self) -> EpochResult:
        # A term present in some steps only (MILe's phases) is averaged over those steps.
        means = {k: float(torch.stack(v).sum()) / len(v) for k, v in self.terms.items()}
        return EpochResult(means, time.perf_counter() - self.start, self.images)


@dataclass
class EpochResult:
    """Mean of each loss term over an epoch and the time it took."""

    losses: dict[str, float]
    seconds: float
    images: int


class Engine:
    """Runs every stage of a method on a dataset into a run folder, resuming where it stopped."""

    def __init__(self, cfg: RunConfig, out: str | Path, data: DataBundle | None = None,
                 accelerator: Accelerator | None = None) -> None:
        self.cfg = cfg
        self.folder = RunFolder(out)
        self.accelerator = accelerator or make_accelerator(cfg)
        if data is None and self.accelerator.is_main_process:
            self.folder.probe()  # before reading the data, which can take long
        self.data = data if data is not None else build_data(cfg.data)
        self.stop = StopFlag()
        self.stages: list[Stage] = method_stages(cfg)
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise RunError(f"stage names must be unique, got {names}")

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def architecture(self, stage: Stage) -> Architecture:
        """The architecture a stage trains (its own model config or the run's)."""
        model_cfg = stage.model or self.cfg.model
        shape = self.data.image_shape
        norm = pretrained_norm(model_cfg.pretrained) if model_cfg.pretrained else None
        if model_cfg.input_mean is not None:
            norm = (model_cfg.input_mean, model_cfg.input_std or ())
        return Architecture(model_cfg.backbone, model_cfg.width, shape[0],
                            tuple(self.data.class_names), stage.calibration_head, shape[1],
                            stage.cam_boost, *(norm or (None, None)))

    def run(self) -> dict[str, float]:
        """Train every stage not yet complete; return the last stage's test metrics.

        Bad input found before the first checkpoint of a new run folder (a corrupt image, a
        teacher of another class list) leaves no folder behind (:meth:`RunFolder.release`).
        """
        # Checked here, not in __init__: eval and relabel build an Engine on data (--data)
        # that need not have the validation split training used. Splits read on first use
        # (cole_features) are read here, so bad values stop the run before any folder.
        _ = self.data.train, self.data.test
        if self.cfg.train.eval_split == "val" and self.data.val is None:
            raise RunError("train.eval_split is 'val' but the dataset has no validation split")
        selecting = next((s for s in self.stages if s.keep_best), None)
        if selecting is not None and self.cfg.train.eval_split != "val":
            raise RunError(f"stage '{selecting.name}' keeps its best epoch by "
                           f"{selecting.keep_best} on train.eval_split, which "
                           f"is '{self.cfg.train.eval_split}': that would select on the test "
                           f"set; set train.eval_split=val (and give the data a validation "
                           f"split)")
        self._check_single_labels()
        self._check_selection_metrics()
        if not self.data.train.labels.positive.any():
            raise RunError("the training split has no positive label at all; check the "
                           "dataset's label files (or data.label_regime)")
        created = False
        if self.is_main:
            self.folder.lock()
        try:
            if self.is_main:
                created = self.folder.claim(to_dict(self.cfg), RESULT_NEUTRAL_KEYS)
            self.accelerator.wait_for_everyone()
            with stop_requests() as self.stop:
                return self._run_stages()
        except (ValueError, RunError, TrainingError):
            if created:
                self.folder.release()
            raise
        finally:
            self.folder.unlock()

    def _check_selection_metrics(self) -> None:
        """A ``keep_best`` metric must be one evaluation computes (checked before training, not
        after the first epoch)."""
        split = self.eval_split()
        for stage in self.stages:
            if stage.keep_best is None:
                continue
            names = metric_names(stage.task.output, bool((split.target >= 0).any()),
                                 split.difficult_or_none is not None)
            if stage.keep_best not in names:
                raise RunError(f"stage '{stage.name}' keeps its best epoch by "
                               f"'{stage.keep_best}', which evaluation does not compute; "
                               f"valid: {', '.join(names)}")

    def _check_single_labels(self) -> None:
        """A softmax stage needs one given label per training image; multi-label data (VOC,
        COCO, a CSV with label sets) is refused before any folder is made."""
        stage = next((s for s in self.stages if s.task.needs_single_label), None)
        missing = self.data.train.target < 0
        if stage is None or not missing.any():
            return
        first = self.data.train.ids[int(np.argmax(missing))]
        raise RunError(f"stage '{stage.name}' trains softmax cross-entropy on one label per "
                       f"image, but {int(missing.sum())} of {len(missing)} training images have "
                       f"none or several (first: '{first}'); set data.label_regime="
                       f"single_positive to keep one positive per image (Cole et al.'s "
                       f"protocol), or use a sigmoid method")

    def _run_stages(self) -> dict[str, float]:
        manifest = self.folder.read_manifest()
        metrics: dict[str, float] = {}
        for index, stage in enumerate(self.stages):
            done = manifest.stages.get(stage.name)
            if done is not None and done.complete:
                metrics = done.test_metrics
                continue
            if self.stop_requested():
                raise Stopped(self.stop.signum or signal.SIGTERM, f"before stage "
                              f"'{stage.name}'", None)
            metrics = StageRunner(self, stage, index, manifest).run()
        if self.is_main:
            write_json(self.folder.final_metrics_path, metrics)
            manifest.complete = True
            self.folder.write_manifest(manifest)
        self.accelerator.wait_for_everyone()
        return metrics

    def eval_split(self) -> Split:
        return self.data.val if self.cfg.train.eval_split == "val" else self.data.test

    def stop_requested(self) -> bool:
        """Whether a process got SIGTERM or SIGINT (all processes agree, so they stop at the
        same step)."""
        requested = self.stop.requested
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([float(requested)], device=self.accelerator.device)
            requested = bool(self.accelerator.reduce(flag, "sum").item() > 0)
        return requested


def _processes(count: object) -> str:
    return f"{count} process" if count == 1 else f"{count} processes"


class StageRunner:
    """Trains one stage: builds or resumes its model, loads its teacher, runs its epochs."""

    def __init__(self, engine: Engine, stage: Stage, index: int,
                 manifest: Manifest) -> None:
        self.engine = engine
        self.stage = stage
        self.index = index
        self.files = StageFiles(engine.folder, manifest, stage.name,
                                [s.name for s in engine.stages[:index]], engine.is_main)
        self.cfg = engine.cfg
        self.acc = engine.accelerator
        self.data = engine.data
        self.task = stage.task
        self.epochs = stage.epochs if stage.epochs is not None else self.cfg.optim.epochs
        self.model_cfg = stage.model or self.cfg.model
        self.arch = engine.architecture(stage)
        self.model = self._initial_model()
        self.memory_format = torch.channels_last if self.acc.device.type == "cuda" else \
            getattr(self.model, "preferred_memory_format", torch.contiguous_format)
        self.model = self.model.to(self.acc.device, memory_format=self.memory_format)
        self.teacher = self._load_teacher()
        if self.task.single_process and self.acc.num_processes > 1:
            raise RunError(f"stage '{stage.name}': a task with its own per-sample state "
                           f"(ROLE, LL-Cp) runs in one process only")
        self.task.setup(self.data.train)
        self.optimizer = build_optimizer(parameter_groups(self.model, self.cfg.optim.head_lr_mult),
                                         self.cfg.optim)
        self.sampler = EpochShuffleSampler(len(self.data.train),
                                           derive_seed(self.cfg.seed, index, "shuffle"))
        loader = training_batches(self.data.train, self.sampler, self.cfg, self.acc,
                                  self.task.batch_fields)
        if len(loader) == 0:
            raise RunError(f"training split has {len(self.data.train)} samples, fewer than "
                           f"optim.batch_size={self.cfg.optim.batch_size}")
        # Accelerate's optimizer wrapper is needed for fp16's gradient scaler only; elsewhere it
        # costs ~0.4 ms a step (it probes installed packages at every step).
        if self.acc.mixed_precision == "fp16":
            self.model, self.optimizer = self.acc.prepare(self.model, self.optimizer)
        else:
            self.model = self.acc.prepare(self.model)
        self.loader = self.acc.prepare(loader) if isinstance(loader, DataLoader) else loader
        self.steps_per_epoch = len(self.loader)
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: float | None = None
        self.position: dict[str, Any] | None = None
        self.initial_loss: float | None = None
        """The loss of the stage's first step, the yardstick of :meth:`_check_collapse`."""
        """Where in the current epoch a stopped run was (see :meth:`_position`)."""
        self._resume()

    # -- setup ---------------------------------------------------------------------------
    def _initial_model(self) -> Classifier:
        torch.manual_seed(derive_seed(self.cfg.seed, self.index, "init"))
        init = self.stage.init
        if init == "fresh":
            model = self.arch.build(self.task.head_bias(self.arch.num_classes))
            self._load_pretrained(model)
            if self.model_cfg.freeze_backbone:
                model.backbone.requires_grad_(False)
            return model
        path = self.files.weights_of(self.engine.stages[self.index - 1].name) \
            if init == "continue" else Path(init)
        model, arch = load_weights(path, self.arch)
        if arch.backbone != self.arch.backbone or arch.width != self.arch.width:
            raise RunError(f"stage '{self.stage.name}' continues from {path}, a {arch.backbone}"
                           f" (width {arch.width}), but is configured as {self.arch.backbone}")
        return model

    def _load_pretrained(self, model: Classifier) -> None:
        """Start from ``model.pretrained`` (:mod:`unhot.pretrained`), saying what stayed fresh."""
        if self.model_cfg.pretrained is None:
            return
        weights = read_pretrained(self.model_cfg.pretrained)
        fresh = load_pretrained(model, weights, self.arch.class_names)
        if self.engine.is_main and self.cfg.train.progress:
            print(f"stage '{self.stage.name}': {weights.layout} weights from {weights.path}; "
                  f"initialised afresh: {', '.join(fresh) or 'nothing'}", file=sys.stderr)

    def _load_teacher(self) -> nn.Module | None:
        source = self.stage.teacher
        if source is None:
            return None
        names = [s.name for s in self.engine.stages[: self.index]]
        stage_name, _, which = source.partition(":")
        if stage_name in names:
            path = self.files.weights_of(stage_name)
            if which == "best":
                path = self.engine.folder.best_weights_path(stage_name)
        else:
            path = Path(source)
        teacher, _ = load_weights(path, self.arch)
        teacher.requires_grad_(False)
        teacher.train(self.stage.teacher_bn == "train")
        return teacher.to(self.acc.device, memory_format=self.memory_format)

    def _resume(self) -> None:
        found = self.files.read_checkpoint()
        if found is None:
            return
        path, state = found
        self._check_resumable(path, state)
        try:
            self.acc.unwrap_model(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise RunError(f"{path}: does not fit stage '{self.stage.name}' ({self.arch.backbone}"
                           f", width {self.arch.width}, {self.arch.num_classes} classes): "
                           f"{one_line(err)}") from err
        self.task.load_state_dict(state["task"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        self.best = state.get("best")
        self.position = state.get("position")
        self.initial_loss = state.get("initial_loss")

    def _check_resumable(self, path: Path, state: dict[str, Any]) -> None:
        """Refuse a checkpoint of other classes or another number of steps per epoch (which
        would change the LR schedule); checkpoints from before these keys pass."""
        saved = state.get("class_names")
        if saved is not None and tuple(saved) != self.arch.class_names:
            raise RunError(f"{path}: trained on classes {list(saved)[:5]}... ({len(saved)}), but "
                           f"the data now has {list(self.arch.class_names)[:5]}... "
                           f"({self.arch.num_classes}); train into a new --out folder")
        steps = state.get("steps_per_epoch")
        if steps is not None and int(steps) != self.steps_per_epoch:
            raise RunError(f"{path}: this run was trained with "
                           f"{_processes(state.get('num_processes', '?'))} ({steps} steps per "
                           f"epoch); resume it with the same number of processes and "
                           f"optim.batch_size (now {_processes(self.acc.num_processes)}, "
                           f"{self.steps_per_epoch} steps per epoch)")

    # -- training ------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        """Train the remaining epochs, then save the stage's weights and test metrics."""
        while self.epoch < self.epochs and not self._out_of_patience():
            if self.engine.stop_requested():
                raise Stopped(self.engine.stop.signum or signal.SIGTERM,
                              f"at stage '{self.stage.name}', epoch {self.epoch + 1} start",
                              None)
            result = self.train_epoch()
            self._check_collapse(result)
            self.epoch += 1
            self.task.on_epoch_end(EpochEnd(
                self.data.train, self.predict, self.epoch, self.epochs,
                self.engine.folder.stage_dir(self.stage.name), self.engine.is_main))
            row = self._epoch_row(result)
            self.history.append(row)
            self._save_checkpoint()
        return self._finish()

    def train_epoch(self) -> EpochResult:
        """One pass over the training split (the rest of it after a stop); returns mean loss
        terms."""
        seed = derive_seed(self.cfg.seed, self.index, self.epoch)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        # Accelerate's loader counts its own epochs from 0 and re-sets the sampler's epoch from
        # that count; a resumed run must hand it the true epoch.
        set_epoch = getattr(self.loader, "set_epoch", self.sampler.set_epoch)
        set_epoch(self.epoch)
        self.model.train()
        if self.model_cfg.freeze_backbone:  # fixed BatchNorm statistics too
            self.acc.unwrap_model(self.model).backbone.eval()
        progress = EpochProgress() if self.position is None else \
            self._restore_position(generator)
        bar = tqdm(self.loader, desc=f"{self.stage.name} {self.epoch + 1}/{self.epochs}",
                   leave=False, disable=not (self.cfg.train.progress and self.engine.is_main))
        aug = self.cfg.augment
        with training_views(self.data.train.images, derive_seed(self.cfg.seed, self.index,
                                                                "views"),
                            self.epoch, aug.crop_scale, aug.crop_ratio, aug.flip) as per_sample:
            for batch in bar:
                losses = self.train_step(batch, generator, per_sample)
                progress.add(losses, int(batch["image"].shape[0]))
                if self.initial_loss is None:
                    self.initial_loss = float(sum(v.detach() for v in losses.values()))
                if self.step % 25 == 0 and bar.disable is False:
                    bar.set_postfix(loss=f"{sum(losses.values()).item():.4f}")
                if self.engine.stop_requested():
                    bar.close()
                    self._stop(progress, generator)
        return progress.result()

    def _stop(self, progress: EpochProgress, generator: torch.Generator) -> None:
        """Checkpoint the position inside the epoch and raise :class:`Stopped`."""
        self._save_checkpoint(self._position(progress, generator))
        raise Stopped(self.engine.stop.signum or signal.SIGTERM,
                      f"at stage '{self.stage.name}', epoch {self.epoch + 1}, step "
                      f"{progress.batches} of {self.steps_per_epoch}",
                      self.files.checkpoint)

    def _position(self, progress: EpochProgress, generator: torch.Generator) -> dict[str, Any]:
        """Where a stop left the epoch: batches done (by each process), the loss terms so far,
        and the augmentation and torch RNG states, so the rest of the epoch runs as it would
        have."""
        position = {"batches": progress.batches, "images": progress.images,
                    "seconds": time.perf_counter() - progress.start,
                    "terms": {k: torch.stack(v).cpu() for k, v in progress.terms.items()},
                    "generator": generator.get_state(), "torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            position["cuda_rng"] = torch.cuda.get_rng_state_all()
        return position

    def _restore_position(self, generator: torch.Generator) -> EpochProgress:
        """Continue a stopped epoch: skip its trained batches, restore RNGs and loss terms."""
        position, self.position = self.position, None
        assert position is not None
        batches = int(position["batches"])
        self.sampler.resumed = (self.epoch,
                                batches * self.cfg.optim.batch_size * self.acc.num_processes)
        generator.set_state(position["generator"])
        torch.set_rng_state(position["torch_rng"])
        if "cuda_rng" in position and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(position["cuda_rng"])
        device = self.acc.device
        terms = {k: list(v.to(device).unbind()) for k, v in position["terms"].items()}
        return EpochProgress(terms, int(position["images"]), batches,
                             time.perf_counter() - float(position["seconds"]))

    def train_step(self, batch: dict[str, Tensor], generator: torch.Generator,
                   per_sample: bool = False) -> dict[str, Tensor]:
        """Augment once (unless the loader cut ``per_sample`` views), ask the task for losses,
        check them, step the optimizer."""
        raw = to_float(batch["image"])
        if raw.ndim == 4:
            raw = raw.contiguous(memory_format=self.memory_format)
        images = raw if per_sample else augment(raw, self.cfg.augment, generator)
        ctx = StepContext(self.model, images, batch, self.step, self.epoch, self.teacher, raw)
        with autocast(self.acc):
            losses = self.task.losses(ctx)
        total = functools.reduce(operator.add, losses.values())
        if not math.isfinite(total.item()):
            self._fail_non_finite(losses)
        lr = learning_rate(self.step, self.steps_per_epoch, self.epochs, self.cfg.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        if self.acc.mixed_precision == "fp16":
            self.acc.backward(total)  # scales the loss for fp16's gradient scaler
        else:
            total.backward()
        if self.cfg.optim.grad_clip > 0:
            self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.task.after_step(lr)
        self.step += 1
        return losses

    def _check_collapse(self, result: EpochResult) -> None:
        """Stop when every loss term was exactly 0 over a whole epoch (saturated outputs, e.g.
        after a far too high learning rate: nothing is learned any more); warn when the loss
        is a thousand times the stage's first step's (at initialisation)."""
        total = sum(result.losses.values())
        if result.losses and all(v == 0 for v in result.losses.values()):
            raise TrainingError(
                f"stage '{self.stage.name}', epoch {self.epoch + 1}: every loss term was exactly "
                f"0 for the whole epoch, so the model's outputs have saturated and it no longer "
                f"learns. Last good checkpoint: {self.files.kept_checkpoint(self.epoch)}. "
                f"Likely cause: a learning rate far too high (optim.lr={self.cfg.optim.lr}).")
        start = self.initial_loss
        if start is not None and start > 0 and total > 1000 * start:
            print(f"unhot: warning: stage '{self.stage.name}', epoch {self.epoch + 1}: the mean "
                  f"loss ({total:.4g}) is over 1000x the loss of the stage's first step "
                  f"({start:.4g}); training is diverging (optim.lr={self.cfg.optim.lr})",
                  file=sys.stderr)

    def _fail_non_finite(self, losses: dict[str, Tensor]) -> None:
        bad = [f"{k}={v.item()}" for k, v in losses.items() if not torch.isfinite(v)]
        where = self.files.kept_checkpoint(self.epoch)
        lr = learning_rate(max(0, self.step - 1), self.steps_per_epoch, self.epochs,
                           self.cfg.optim)
        raise TrainingError(
            f"stage '{self.stage.name}', epoch {self.epoch + 1}, step {self.step + 1}: "
            f"non-finite loss term {', '.join(bad)}. Last good checkpoint: {where}. Likely "
            f"causes: a learning rate too high for this model (last step's lr {lr:.3g}, "
            f"optim.lr={self.cfg.optim.lr}), no gradient clipping (optim.grad_clip), or "
            f"labels/images with NaN values.")

    # -- evaluation ----------------------------------------------------------------------
    def predict(self, split: Split, model: nn.Module | None = None) -> np.ndarray:
        """Probabilities [N, C] for every sample of ``split`` in index order (all ranks)."""
        return predict(self.acc, model or self.model, split, self.task.scores,
                       self.cfg.train.eval_batch_size, self.memory_format,
                       self.cfg.train.num_workers)

    def evaluate(self, split: Split) -> tuple[dict[str, float], np.ndarray]:
        """Metrics of the current model on ``split`` (and the scores): against its true sets, or
        for a validation split of a stage with ``val_labels="observed"``, its observed
        positives."""
        scores = self.predict(split)
        target = split.target if (split.target >= 0).any() else None
        observed = split.name == "val" and self.stage.val_labels == "observed"
        true = split.labels.positive if observed else split.true
        metrics = compute_metrics(scores, true, target, self.cfg.train.threshold,
                                  split.difficult_or_none, self.task.output)
        return metrics, scores

    def _epoch_row(self, result: EpochResult) -> dict[str, Any]:
        row: dict[str, Any] = {"stage": self.stage.name, "epoch": self.epoch, "step": self.step,
                               "lr": learning_rate(max(0, self.step - 1), self.steps_per_epoch,
                                                   self.epochs, self.cfg.optim),
                               "train_seconds": result.seconds,
                               "train_img_per_s": result.images / max(result.seconds, 1e-9),
                               **{f"loss/{k}": v for k, v in result.losses.items()}}
        every = self.cfg.train.eval_every
        due = every > 0 and (self.epoch % every == 0 or self.epoch == self.epochs)
        if due or self.stage.keep_best:
            metrics, _ = self.evaluate(self.engine.eval_split())
            row.update({f"{self.cfg.train.eval_split}/{k}": v for k, v in metrics.items()})
            if self.stage.keep_best:
                self._track_best(metrics)
        return row

    def _out_of_patience(self) -> bool:
        """Early stop: ``patience`` epochs since the best ``keep_best`` epoch, or the last
        epoch more than ``stop_drop`` below the best (from the history, so a resumed run stops
        where the uninterrupted one would)."""
        patience, drop, key = self.stage.patience, self.stage.stop_drop, self.stage.keep_best
        if (patience is None and drop is None) or key is None:
            return False
        values = [row[f"{self.cfg.train.eval_split}/{key}"] for row in self.history]
        if not values:
            return False
        sign = 1.0 if self.stage.keep_best_mode == "max" else -1.0
        best = max(range(len(values)), key=lambda i: (sign * values[i], -i))
        waited = patience is not None and len(values) - 1 - best >= patience
        fell = drop is not None and sign * (values[best] - values[-1]) > drop
        return waited or fell

    def _track_best(self, metrics: dict[str, float]) -> None:
        """Save the weights when the ``keep_best`` metric improves (ties keep the earlier)."""
        key = self.stage.keep_best
        if key not in metrics:
            raise RunError(f"stage '{self.stage.name}': keep_best metric '{key}' is not among "
                           f"{', '.join(sorted(metrics))}")
        value = metrics[key]
        sign = 1.0 if self.stage.keep_best_mode == "max" else -1.0
        if self.best is None or sign * value > sign * self.best:
            self.best = value
            self.files.save_best(self.acc.unwrap_model(self.model), self.arch)

    # -- persistence ---------------------------------------------------------------------
    def _save_checkpoint(self, position: dict[str, Any] | None = None) -> None:
        """Checkpoint the stage after a finished epoch, or inside one at ``position`` (a stop)."""
        if self.engine.is_main:
            state = {"model": self.acc.unwrap_model(self.model).state_dict(),
                     "optimizer": self.optimizer.state_dict(), "task": self.task.state_dict(),
                     "epoch": self.epoch, "step": self.step, "history": self.history,
                     "best": self.best, "class_names": list(self.arch.class_names),
                     "num_processes": self.acc.num_processes,
                     "steps_per_epoch": self.steps_per_epoch, "initial_loss": self.initial_loss,
                     **({} if position is None else {"position": position})}
            self.files.save_checkpoint(state, self.history)
        self.acc.wait_for_everyone()

    def _finish(self) -> dict[str, float]:
        """Test the final (or best) model, save its weights and predictions, mark the stage
        complete."""
        if self.stage.test_best and self.best is not None:
            best, _ = load_weights(self.files.best_weights, self.arch)
            self.acc.unwrap_model(self.model).load_state_dict(best.state_dict())
        metrics, scores = self.evaluate(self.data.test)
        final = {"stage": self.stage.name, "epoch": self.epoch, "final": True,
                 **{f"test/{k}": v for k, v in metrics.items()}}
        self.history.append(final)
        self.files.complete(self.acc.unwrap_model(self.model), self.arch, self.data.test, scores,
                            self.history, metrics, self.epoch,
                            f"{self.cfg.name}, stage {self.stage.name}",
                            top1=self.task.output == "softmax")
        self.acc.wait_for_everyone()
        return metrics


def evaluation_batches(accelerator: Accelerator, split: Split, batch_size: int,
                       num_workers: int) -> Iterable[tuple[Tensor, slice | Tensor]]:
    """(images, their rows) for every sample: consecutive rows (a ``slice``) read in this
    process with no worker processes and one process (no labels gathered; a source with
    ``load_range(lo, hi)`` serves them as a view), else index tensors from a DataLoader."""
    if num_workers == 0 and accelerator.num_processes == 1:
        load_range = getattr(split.images, "load_range", None)
        for lo in range(0, len(split), batch_size):
            hi = min(lo + batch_size, len(split))
            yield (load_range(lo, hi) if load_range is not None
                   else split.images.load(np.arange(lo, hi))), slice(lo, hi)
        return
    loader = DataLoader(split, batch_size=batch_size, shuffle=False, collate_fn=collate_batch,
                        num_workers=num_workers, pin_memory=accelerator.device.type == "cuda")
    if accelerator.num_processes > 1:
        loader = accelerator.prepare_data_loader(loader)
    for batch in loader:
        yield batch["image"], batch["index"]


def predict(accelerator: Accelerator, model: nn.Module, split: Split, to_scores: Any,
            batch_size: int, memory_format: torch.memory_format = torch.contiguous_format,
            num_workers: int = 0) -> np.ndarray:
    """Scores [N, C] of ``model`` on ``split`` in sample-index order, gathered from all ranks
    (``num_workers`` loader processes decode file-based images; memory pinned on CUDA).

    Distributed samplers pad the last batch with repeated samples; gathering (index, scores)
    and writing each row at its index makes every sample count exactly once. Memory: the
    float32 result (4 bytes per entry) and one batch.
    """
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    seen = np.zeros(len(split), dtype=bool)
    with torch.no_grad():
        for images, rows in evaluation_batches(accelerator, split, batch_size, num_workers):
            images = to_float(images.to(accelerator.device))
            images = images.contiguous(memory_format=memory_format)
            with autocast(accelerator):
                scores = to_scores(model(images).logits.float())
            if accelerator.num_processes > 1:
                rows, scores = accelerator.gather((rows.to(accelerator.device), scores))
            if out is None:
                out = np.empty((len(split), scores.shape[1]), dtype=np.float32)
            where = rows if isinstance(rows, slice) else rows.cpu().numpy()
            out[where] = scores.float().cpu().numpy()
            seen[where] = True
    model.train(was_training)
    if out is None or not seen.all():
        raise RunError(f"evaluation saw {int(seen.sum())} distinct samples of {len(split)}")
    return out
