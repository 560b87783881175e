"""One way to open a trained run folder, shared by ``unhot eval | relabel | features | report``.

Which stage a command reads: the one it is asked for by name, else the run's **final stage**,
the last stage of its method (the stage list its config builds, in training order, as the
engine trains them). Either way the manifest must mark that stage complete; if it does not,
the command stops with one line naming the stages that are complete. So every command reads
the same model of a run, and none falls back silently to an earlier stage of an unfinished
run (resume it with ``unhot train``, or name a complete stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unhot.config import ConfigError, RunConfig, apply_overrides, parse_config
from unhot.errors import RunError
from unhot.methods import Stage
from unhot.registry import METHODS, block_name
from unhot.runs import Manifest, RunFolder, read_yaml


def run_config(run: Path) -> dict[str, Any]:
    """The resolved config stored in a run folder (raw); :class:`RunError` naming the folder if
    it holds none."""
    folder = RunFolder(run)
    if not folder.config_path.is_file():
        raise RunError(f"{run} is not an unhot run folder (no config.yaml)")
    return read_yaml(folder.config_path)


def load_run(run: Path, data_file: str | None = None,
             overrides: list[str] | None = None) -> RunConfig:
    """A run's config, with its data block optionally replaced (``--data``) or overridden."""
    raw = run_config(run)
    if data_file is not None:
        path = Path(data_file)
        if not path.is_file():
            raise ConfigError(f"--data: file not found: {path}")
        block = read_yaml(path)
        raw["data"] = block.get("data", block) if isinstance(block, dict) else block
    return parse_config(apply_overrides(raw, overrides or []))


def method_stages(cfg: RunConfig) -> list[Stage]:
    """The stages ``cfg``'s method trains, in order (the engine's ``Engine.stages``)."""
    return METHODS[block_name(cfg.method, METHODS)][1](cfg.method, cfg)


@dataclass(frozen=True)
class FinishedRun:
    """A run folder opened for reading: its config (with ``--data``/``--set`` applied), its
    method's stages, those the manifest marks complete, and the stage chosen to read."""

    folder: RunFolder
    config: RunConfig
    stages: tuple[Stage, ...]
    complete: tuple[str, ...]
    stage: str
    manifest: Manifest
    source: str
    """The file holding the data block (the ``--data`` file, else the run's config.yaml)."""

    @property
    def root(self) -> Path:
        return self.folder.root

    @property
    def final_stage(self) -> str:
        """The method's last stage (the default one)."""
        return self.stages[-1].name

    @property
    def finished(self) -> bool:
        """Whether every stage of the method is complete."""
        return len(self.complete) == len(self.stages)

    @property
    def method_stage(self) -> Stage:
        """The chosen stage as the method defines it (its task, output, architecture)."""
        return next(s for s in self.stages if s.name == self.stage)

    @property
    def weights_path(self) -> Path:
        """The chosen stage's final weights (its best epoch's for a ``test_best`` stage)."""
        return self.folder.weights_path(self.stage)

    @property
    def predictions_path(self) -> Path:
        """The chosen stage's test predictions, written when it completed."""
        return self.folder.predictions_path(self.stage)

    def stage_metrics(self) -> dict[str, dict[str, float]]:
        """Test metrics of every complete stage, in training order."""
        return {name: self.manifest.stages[name].test_metrics for name in self.complete}


def _complete_list(complete: tuple[str, ...]) -> str:
    return f"complete: {', '.join(complete)}" if complete else "no stage is complete yet"


def choose_stage(root: Path, names: list[str], complete: tuple[str, ...],
                 stage: str | None) -> str:
    """``stage``, or the final one of ``names`` if None, provided it is complete; else a
    :class:`RunError` naming the stages there are and those that are complete."""
    done = _complete_list(complete)
    if stage is not None and stage not in names:
        raise RunError(f"{root}: no stage '{stage}'; the run's stages: {', '.join(names)} "
                       f"({done})")
    if stage is None and names[-1] not in complete:
        raise RunError(f"{root} is an unfinished run: its final stage '{names[-1]}' is not "
                       f"complete ({done}); resume it with unhot train, or name a complete "
                       f"stage")
    if stage is not None and stage not in complete:
        raise RunError(f"{root}: stage '{stage}' is not complete ({done})")
    return stage or names[-1]


def open_run(run: Path, stage: str | None = None, data_file: str | None = None,
             overrides: list[str] | None = None) -> FinishedRun:
    """Open the run folder ``run`` to read stage ``stage`` (default: the final stage; see the
    module docstring), its config with ``data_file`` (``--data``) and ``overrides``
    (``--set``) applied. Raises a one-line :class:`RunError` for a folder without a run, a
    stage the method does not have, or one that is not complete."""
    run = Path(run)
    cfg = load_run(run, data_file, overrides)
    folder = RunFolder(run)
    manifest = folder.read_manifest()
    stages = tuple(method_stages(cfg))
    names = [s.name for s in stages]
    complete = tuple(n for n in names if n in manifest.stages and manifest.stages[n].complete)
    chosen = choose_stage(run, names, complete, stage)
    source = data_file if data_file is not None else str(folder.config_path)
    return FinishedRun(folder, cfg, stages, complete, chosen, manifest, source)


__all__ = ["FinishedRun", "choose_stage", "load_run", "method_stages", "open_run", "run_config"]
