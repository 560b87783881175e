"""The run folder: atomic writes, the manifest, checkpoints and safe loading.

Layout of ``RUN_DIR``::

    config.yaml               the resolved config (a rerun must match it)
    manifest.json             which stages are complete, their per-epoch history and test metrics
    metrics.jsonl             one row per (stage, epoch), regenerated atomically every epoch
    stages/<stage>/checkpoint.pt       latest epoch (or the step a SIGTERM/SIGINT stopped at):
                                       model, optimizer, task state, history
    stages/<stage>/checkpoint.prev.pt  the checkpoint before it (resume falls back to it)
    stages/<stage>/model.safetensors   the stage's final weights (+ architecture metadata)
    stages/<stage>/test_predictions.npz  test scores, true sets, given labels, difficult marks
    final_metrics.json        test metrics of the last stage
    SHA256SUMS                per folder: digests of checkpoints, weights and arrays (``sha256sum
                              -c SHA256SUMS`` checks them; unhot checks them when it reads one)
    .unhot.lock               held (``flock``) by the training process writing the folder

Every file is written to a temporary name in the same folder (``.<name>.<random>.tmp``), flushed
to disk and renamed into place, so a run killed at any moment leaves only complete files (plus
perhaps a stale temporary file, which nothing reads); resume trusts the checkpoint's own epoch.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import yaml

from unhot.errors import IntegrityError, RunError

TEMP_SUFFIX = ".tmp"
SUMS_NAME = "SHA256SUMS"
LOCK_NAME = ".unhot.lock"


def one_line(err: BaseException) -> str:
    """``err``'s message on one line: its most telling line for torch's multi-line errors
    (pickle refusals, ``load_state_dict`` mismatches), whitespace collapsed, colours stripped."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    telling = [line for line in lines if "Unsupported global" in line or "size mismatch" in line
               or line.startswith(("Missing key", "Unexpected key"))]
    return " ".join((telling or lines or [type(err).__name__])[:2])


@contextmanager
def atomic_path(path: Path, record: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block ends.

    The rename is atomic on POSIX file systems, so readers see the old file or the new one.
    ``record``: also record the file's SHA-256 in the folder's ``SHA256SUMS``. The new digest
    is added before the rename and the old one dropped after it, so a kill at any moment leaves
    a record that accepts whichever file is in place.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_temp_file(path)
    except OSError as err:
        raise RunError(f"cannot write {path}: {err.strerror or one_line(err)}") from err
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
            digest = hashlib.file_digest(handle, "sha256").hexdigest() if record else ""
        if record:
            _record(path, [digest, *_recorded(path)])
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if record:
            _record(path, [digest])
    except OSError as err:
        raise RunError(f"cannot write {path}: {err.strerror or one_line(err)}") from err
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _read_sums(folder: Path) -> dict[str, list[str]]:
    """``SHA256SUMS`` of ``folder`` (``sha256sum`` format): name -> accepted digests."""
    sums: dict[str, list[str]] = {}
    path = folder / SUMS_NAME
    if not path.is_file():
        return sums
    for line in path.read_text(errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        if re.fullmatch(r"[0-9a-f]{64}", digest) and name:
            sums.setdefault(name, []).append(digest)
    return sums


def _recorded(path: Path) -> list[str]:
    return _read_sums(path.parent).get(path.name, [])


def _record(path: Path, digests: list[str]) -> None:
    """Set the accepted digests of ``path`` in its folder's ``SHA256SUMS``."""
    sums = _read_sums(path.parent)
    sums[path.name] = list(dict.fromkeys(digests))
    text = "".join(f"{d}  {name}\n" for name in sorted(sums) for d in sums[name])
    atomic_write(path.parent / SUMS_NAME, lambda h: h.write(text))


def verify_file(path: Path) -> None:
    """Raise :class:`IntegrityError` if ``path``'s SHA-256 is not the one recorded when it was
    written (files without a record, e.g. from older runs, pass)."""
    accepted = _recorded(path)
    if not accepted:
        return
    digest = file_sha256(path)
    if digest not in accepted:
        raise IntegrityError(f"{path} is corrupt: its SHA-256 ({digest[:12]}...) is not the one "
                             f"recorded when it was written ({accepted[0][:12]}... in "
                             f"{path.parent / SUMS_NAME}); a disk or copy error changed it")


def _new_temp_file(path: Path) -> Path:
    """Create an empty ``.<name>.<random>.tmp`` beside ``path`` with the permissions ``open()``
    gives (0666 minus the umask, applied by the kernel), unlike ``mkstemp``'s 0600, so run files
    stay readable to the group on a shared cluster."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise RunError(f"{path.parent}: cannot create a temporary file for {path.name}")


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable across a power cut (a killed process needs no fsync).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[Any]], None], mode: str = "w",
                 record: bool = False) -> None:
    """Write ``path`` atomically through ``write(handle)`` (``record``: see
    :func:`atomic_path`)."""
    with atomic_path(path, record) as tmp, open(tmp, mode) as handle:
        write(handle)


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN written as null)."""
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=False)
    atomic_write(path, lambda h: h.write(text + "\n"))


def read_json(path: Path) -> Any:
    """Read a JSON file, naming it in the error if it is corrupt."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunError(f"{path}: not valid JSON ({err})") from err


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomically (re)write a JSON-lines file."""
    text = "".join(json.dumps(_json_safe(r)) + "\n" for r in rows)
    atomic_write(path, lambda h: h.write(text))


def write_yaml(path: Path, obj: Any) -> None:
    """Atomically write YAML."""
    atomic_write(path, lambda h: yaml.safe_dump(obj, h, sort_keys=False))


def write_npz(path: Path, compress: bool = True, **arrays: np.ndarray) -> None:
    """Atomically write an ``.npz`` with its SHA-256 recorded (compressed unless ``compress``
    is False: large arrays rewritten every epoch are cheaper to write than to compress)."""
    save = np.savez_compressed if compress else np.savez
    atomic_write(path, lambda h: save(h, **arrays), mode="wb", record=True)


def previous_checkpoint(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept (``checkpoint.prev.pt``)."""
    return path.with_suffix(".prev" + path.suffix)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a checkpoint made of tensors and plain values only, with its
    SHA-256 recorded; the checkpoint it replaces is kept as :func:`previous_checkpoint`."""
    if path.exists():
        previous = previous_checkpoint(path)
        _record(previous, [*_recorded(path), *_recorded(previous)])
        os.replace(path, previous)
        _record(previous, _recorded(path))
    try:
        atomic_write(path, lambda h: torch.save(state, h), mode="wb", record=True)
    except RuntimeError as err:  # torch's writer reports a full disk as "unexpected pos"
        if isinstance(err, RunError):
            raise
        raise RunError(f"cannot write {path}: {one_line(err)} ({free_space(path.parent)} free "
                       f"on its file system)") from err


def free_space(folder: Path) -> str:
    """The free space of ``folder``'s file system, in words (e.g. "1.2 GB")."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown space"
    return f"{free / 1e9:.1f} GB" if free >= 1e8 else f"{free / 1e6:.1f} MB"


def load_checkpoint(path: Path, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: nothing in it can run code.

    Its SHA-256 is checked first (:func:`verify_file`). A file that needs pickle to load (any
    object other than tensors, numbers, strings, lists and dicts) is refused with an
    explanation; so is a file that is not a dict holding ``keys``.
    """
    verify_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise RunError(f"{path}: refused to load: it holds Python objects that only pickle can "
                       f"rebuild, and unpickling can run arbitrary code; unhot checkpoints hold "
                       f"tensors and plain values only ({one_line(err)})") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise RunError(f"{path}: cannot read checkpoint ({one_line(err)})") from err
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise RunError(f"{path}: not an unhot checkpoint (no {', '.join(missing)})")
    return state


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


@dataclass
class StageRecord:
    """One stage in ``manifest.json``: whether it is complete and how many epochs are done;
    once complete, its per-epoch history and its test metrics."""

    complete: bool = False
    epochs_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    test_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Manifest:
    """``manifest.json``: a record per stage started, in training order, and whether the whole
    run is complete. Written by the engine only; read by every command (unhot.finished)."""

    stages: dict[str, StageRecord] = field(default_factory=dict)
    complete: bool = False

    @classmethod
    def from_json(cls, obj: Any, path: Path) -> Manifest:
        """Parse ``obj`` (read from ``path``), a :class:`RunError` naming ``path`` if it is not
        a manifest."""
        stages = obj.get("stages") if isinstance(obj, dict) else None
        if not isinstance(stages, dict) or not all(isinstance(r, dict) for r in stages.values()):
            raise RunError(f"{path}: not an unhot manifest (no 'stages' mapping of records)")
        names = {f.name for f in fields(StageRecord)}
        return cls({name: StageRecord(**{k: v for k, v in record.items() if k in names})
                    for name, record in stages.items()}, bool(obj.get("complete", False)))

    def to_json(self) -> dict[str, Any]:
        return {"stages": {name: asdict(r) for name, r in self.stages.items()},
                "complete": self.complete}


class RunFolder:
    """Paths and manifest of one run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._made_root = False
        self._made_lock = False
        self._lock_fd: int | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def final_metrics_path(self) -> Path:
        return self.root / "final_metrics.json"

    def stage_dir(self, stage: str) -> Path:
        return self.root / "stages" / stage

    def checkpoint_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "checkpoint.pt"

    def weights_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "model.safetensors"

    def best_weights_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "best.safetensors"

    def predictions_path(self, stage: str, split: str = "test") -> Path:
        return self.stage_dir(stage) / f"{split}_predictions.npz"

    def previous_checkpoint_path(self, stage: str) -> Path:
        return previous_checkpoint(self.checkpoint_path(stage))

    def probe(self) -> None:
        """Check that the folder can be written (before any data is read): its nearest existing
        ancestor is a writable folder. Raises :class:`RunError` naming the path and cause."""
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            what = self.root if existing == self.root else f"{self.root} (below {existing})"
            raise RunError(f"cannot write the run folder {what}: {existing} is a file, not a "
                           f"folder; choose another --out")
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as err:
            raise RunError(f"cannot write the run folder {self.root}: {existing} is not "
                           f"writable ({err.strerror or one_line(err)})") from err

    def lock(self) -> None:
        """Hold an exclusive ``flock`` on ``.unhot.lock`` while this process writes the folder;
        a second live writer is refused naming the first one's PID. The kernel drops the lock
        when its process dies (even by SIGKILL), so a killed run's lock is taken over."""
        self._made_root = not self.root.exists()
        path = self.root / LOCK_NAME
        self._made_lock = not path.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise RunError(f"cannot write the run folder {self.root}: "
                           f"{err.strerror or one_line(err)}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown PID"
            os.close(fd)
            raise RunError(f"{self.root} is being written by another unhot process ({holder}); "
                           f"wait for it to end or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._lock_fd = fd
        self._remove_stale_temp_files()

    def unlock(self) -> None:
        """Release :meth:`lock` (also released when the process ends); a lock file this process
        made in a folder it did not claim (another run's, or foreign files) is removed."""
        if self._lock_fd is None:
            return
        if self._made_lock and not self.config_path.exists():
            (self.root / LOCK_NAME).unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None

    def _remove_stale_temp_files(self) -> None:
        """Temporary files of a killed writer (only the lock holder writes, so none is live)."""
        for path in [*self.root.glob(f".*{TEMP_SUFFIX}"),
                     *self.root.glob(f"stages/*/.*{TEMP_SUFFIX}")]:
            with suppress(OSError):
                path.unlink()

    def read_manifest(self) -> Manifest:
        """The folder's manifest (empty if none was written yet)."""
        if not self.manifest_path.exists():
            return Manifest()
        return Manifest.from_json(read_json(self.manifest_path), self.manifest_path)

    def write_manifest(self, manifest: Manifest) -> None:
        write_json(self.manifest_path, manifest.to_json())

    def claim(self, resolved: dict[str, Any], ignore: tuple[str, ...]) -> bool:
        """Write the config into a new (or empty) folder, or check that an existing folder holds
        this same run; True if the folder is new. Keys in ``ignore`` (dotted) may differ (they
        do not change results); an existing config file is never rewritten.
        """
        if self.config_path.exists() and self.has_progress():
            old = read_yaml(self.config_path)
            diff = _first_difference(old, resolved, ignore)
            if diff is not None:
                raise RunError(f"{self.root} holds a different run ('{diff}' differs from this "
                               f"config); choose another --out or remove that folder")
            return False
        if self.config_path.exists():  # a run that stopped before its first checkpoint
            write_yaml(self.config_path, resolved)
            return False
        if self.root.exists() and not self.root.is_dir():
            raise RunError(f"{self.root} is a file, not a run folder; choose another --out")
        # A temporary file left by a run killed while writing its config does not count.
        if self.root.exists() and any(not _is_temp(p) and p.name not in (LOCK_NAME, SUMS_NAME)
                                      for p in self.root.iterdir()):
            raise RunError(f"{self.root} is not empty and holds no unhot run (no config.yaml); "
                           f"choose another --out")
        self._made_root = self._made_root or not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        write_yaml(self.config_path, resolved)
        return True

    def has_progress(self) -> bool:
        """True once a checkpoint or a stage's weights exist (something a rerun resumes)."""
        return any(self.root.glob("stages/*/checkpoint*.pt")) or \
            any(self.root.glob("stages/*/model.safetensors"))

    def release(self) -> None:
        """Undo a :meth:`claim` that created the folder, unless a checkpoint was written since.

        Called when the run fails on bad input: the folder was empty (or absent) before, so
        everything in it is this run's, and without a checkpoint nothing in it can be resumed.
        """
        if self.has_progress():
            return
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if self._made_root:
            self.root.rmdir()


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` a file (no Python tags: nothing in it can run code), naming it on
    error."""
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise RunError(f"{path}: not a readable YAML file ({one_line(err)})") from err


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)


def _first_difference(old: Any, new: Any, ignore: tuple[str, ...], path: str = "") -> str | None:
    if path in ignore:
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            found = _first_difference(old.get(key), new.get(key), ignore, sub)
            if found is not None:
                return found
        return None
    return None if old == new else (path or "config")
