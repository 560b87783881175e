"""Label CSV files: the plain multi-label format unhot reads and ``unhot relabel`` writes.

One file per split, UTF-8, comma-delimited with standard CSV quoting, a header row first::

    path,labels,negatives,unknown,difficult
    images/0001.jpg,cat dog,car,,
    images/0002.jpg,person,,bird,bicycle

Columns (any order, no others):

* ``path`` (required): the image path relative to the dataset root.
* ``labels`` (required): the classes present (positives), joined by ``separator`` (default one
  space; use e.g. ``|`` or ``;`` if class names contain spaces). May be empty.
* ``negatives`` (optional): classes known to be absent.
* ``unknown`` (optional): classes whose presence is not known (e.g. not annotated for this image).
* ``difficult`` (optional): classes whose entry is difficult (skipped by average precision).

Blank lines are skipped; a path may appear once. Errors name the file and the line as an editor
shows it (the header is line 1).

State of entry (image, class):

* listed in ``labels`` -> positive; in ``negatives`` -> negative; in ``unknown`` -> unknown
  (neither), also under ``unlabelled_policy: negative``; in two of these three -> error;
* listed only in ``difficult`` -> positive if ``difficult_as_positive`` (default), else unknown;
  in ``difficult`` and ``unknown`` -> unknown, still marked difficult;
* not listed -> ``unlabelled_policy``: ``"negative"`` (fully labelled data, the default) or
  ``"unknown"`` (partial labels).

``true`` (what evaluation scores against) = the classes listed in ``labels`` or in
``difficult`` but not in ``negatives``; ``target`` = the positive class if there is exactly
one, else -1.

Class order: the file ``classes`` (one name per line, relative to the root) if given, and then an
unknown name is an error; otherwise the sorted union of the names in all requested splits.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unhot.config import choice
from unhot.data.base import DataBundle, DataError, Split
from unhot.data.files import (
    FileDataConfig,
    check_one_of,
    file_split,
    make_bundle,
    read_class_list,
    requested_splits,
    single_target,
)
from unhot.labels import LabelMatrix
from unhot.runs import atomic_path

COLUMNS = ("path", "labels", "negatives", "unknown", "difficult")
REQUIRED_COLUMNS = ("path", "labels")
UNLABELLED_POLICIES = ("negative", "unknown")


@dataclass
class CsvConfig(FileDataConfig):
    """``data: {name: csv}``: label CSV files (module docstring) under ``root``.

    ``train`` / ``test`` / ``val``: CSV file names; ``classes``: optional class-list file.
    """

    train: str = "train.csv"
    test: str = "test.csv"
    classes: str | None = None
    separator: str = " "
    unlabelled_policy: str = choice("negative", UNLABELLED_POLICIES)
    difficult_as_positive: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.separator or self.separator in "\r\n":
            raise DataError(f"config key 'separator' must be a non-empty string other than a "
                            f"line break, got {self.separator!r}")


@dataclass(frozen=True)
class CsvRow:
    """One data row: its line number, image path and the class names of each label column."""

    line: int
    path: str
    labels: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    difficult: tuple[str, ...] = ()


def split_names(text: str, separator: str) -> tuple[str, ...]:
    """Class names in a label field: split on ``separator``, stripped, empties dropped."""
    return tuple(dict.fromkeys(t.strip() for t in text.split(separator) if t.strip()))


def _header(fields: list[str], source: str) -> list[str]:
    columns = [f.strip() for f in fields]
    for column in columns:
        if column not in COLUMNS:
            raise DataError(f"{source} line 1: unknown column '{column}'; valid columns: "
                            f"{', '.join(COLUMNS)}")
        if columns.count(column) > 1:
            raise DataError(f"{source} line 1: column '{column}' appears twice")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{source} line 1: missing column(s) {', '.join(missing)}; the header "
                        f"must name path and labels (optionally negatives, unknown, difficult)")
    return columns


def parse_label_csv(lines: Iterable[str], source: str, separator: str = " ") -> list[CsvRow]:
    """The data rows of a label CSV given as text lines; ``source`` names it in errors.

    Raises :class:`DataError` for a missing or bad header, a row with the wrong number of fields,
    an empty path, a repeated path, malformed CSV, or no data rows at all.
    """
    if not separator:
        raise DataError("the label separator must not be empty")
    reader = csv.reader(lines)
    rows: list[CsvRow] = []
    seen: dict[str, int] = {}
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{source}: the file is empty; expected a header row "
                            f"'path,labels[,negatives][,unknown][,difficult]'")
        columns = _header(header, source)
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(columns):
                raise DataError(f"{source} line {line}: expected {len(columns)} fields "
                                f"({','.join(columns)}), got {len(fields)}")
            record = dict(zip(columns, fields, strict=True))
            path = record["path"].strip()
            if not path:
                raise DataError(f"{source} line {line}: empty path")
            if path in seen:
                raise DataError(f"{source} line {line}: path '{path}' already on line "
                                f"{seen[path]}")
            seen[path] = line
            names = (split_names(record.get(c, ""), separator) for c in COLUMNS[1:])
            rows.append(CsvRow(line, path, *names))
    except csv.Error as err:
        raise DataError(f"{source} line {reader.line_num}: malformed CSV: {err}") from err
    if not rows:
        raise DataError(f"{source}: no data rows after the header, so the split would be empty")
    return rows


def read_label_csv(path: Path, separator: str = " ") -> list[CsvRow]:
    """:func:`parse_label_csv` on a file (UTF-8, a byte-order mark is ignored)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return parse_label_csv(handle, str(path), separator)
    except FileNotFoundError:
        raise DataError(f"{path}: label file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the label file: {err}") from err


def label_matrix(rows: Sequence[CsvRow], class_names: Sequence[str], source: str,
                 unlabelled_policy: str = "negative", difficult_as_positive: bool = True
                 ) -> tuple[LabelMatrix, np.ndarray, np.ndarray]:
    """(observed labels, true sets, targets) of parsed rows, by the rules in the module docstring.

    A class name not in ``class_names`` or listed both as label and negative raises, naming
    ``source``, the line and the class.
    """
    check_one_of("unlabelled_policy", unlabelled_policy, UNLABELLED_POLICIES)
    if not class_names:
        raise DataError(f"{source}: no classes to label")
    index = {name: c for c, name in enumerate(class_names)}
    listed = np.zeros((4, len(rows), len(class_names)), dtype=bool)
    for r, row in enumerate(rows):
        for k, names in enumerate((row.labels, row.negatives, row.unknown, row.difficult)):
            for name in names:
                if name not in index:
                    raise DataError(f"{source} line {row.line}: unknown class '{name}' (not in "
                                    f"the class list of {len(class_names)} classes)")
                listed[k, r, index[name]] = True
    labelled, negative, unknown, difficult = listed
    for (a, name_a), (b, name_b) in (((labelled, "labels"), (negative, "negatives")),
                                     ((labelled, "labels"), (unknown, "unknown")),
                                     ((negative, "negatives"), (unknown, "unknown"))):
        if (a & b).any():
            r, c = np.argwhere(a & b)[0]
            raise DataError(f"{source} line {rows[r].line}: class '{class_names[c]}' is listed "
                            f"both in {name_a} and in {name_b}")
    difficult_only = difficult & ~labelled & ~negative
    positive = labelled | (difficult_only & ~unknown) if difficult_as_positive else labelled
    if unlabelled_policy == "negative":
        negative = negative | ~(labelled | unknown | difficult)
    true = labelled | difficult_only
    target = single_target(positive)
    diff = difficult if difficult.any() else None
    return LabelMatrix(positive, negative, diff), true, target


def _check_class_names(class_names: Sequence[str], separator: str, source: str) -> None:
    for name in class_names:
        if separator in name:
            raise DataError(f"{source}: class '{name}' contains the label separator "
                            f"{separator!r}; choose another separator")


def build_csv(cfg: CsvConfig) -> DataBundle:
    """The splits named by ``cfg`` (see :class:`CsvConfig` and the module docstring)."""
    root = Path(cfg.root)
    files = {name: root / file for name, file in requested_splits(cfg).items()}
    rows = {name: read_label_csv(path, cfg.separator) for name, path in files.items()}
    if cfg.classes is not None:
        class_names = read_class_list(root / cfg.classes)
        _check_class_names(class_names, cfg.separator, str(root / cfg.classes))
    else:
        class_names = sorted({n for split in rows.values() for row in split
                              for n in (*row.labels, *row.negatives, *row.unknown,
                                        *row.difficult)})
        if not class_names:
            raise DataError(f"{files['train']}: no class names in any split and no class list")
    splits: dict[str, Split] = {}
    for name, path in files.items():
        labels, true, target = label_matrix(rows[name], class_names, str(path),
                                            cfg.unlabelled_policy, cfg.difficult_as_positive)
        origins = [f"{path} line {row.line}" for row in rows[name]]
        splits[name] = file_split(name, root, [row.path for row in rows[name]], origins, labels,
                                  true, target, cfg, str(path))
    return make_bundle(splits, class_names, cfg)


def write_label_csv(path: str | Path, ids: Sequence[str], labels: LabelMatrix,
                    class_names: Sequence[str], separator: str = " ",
                    unlabelled_policy: str = "unknown") -> None:
    """Write ``labels`` as a label CSV that :func:`build_csv` reads back (module docstring).

    With ``unlabelled_policy="unknown"`` negatives are written explicitly and unknown entries are
    left out; with ``"negative"`` the ``negatives`` column is omitted and unknown entries that are
    not difficult go to an ``unknown`` column (present only if there are any). The ``difficult``
    column appears when any entry is difficult; a difficult entry that is neither positive nor
    negative reads back by the reader's ``difficult_as_positive``. The file is replaced
    atomically.
    """
    check_one_of("unlabelled_policy", unlabelled_policy, UNLABELLED_POLICIES)
    _check_class_names(class_names, separator, str(path))
    if len(ids) != labels.num_samples or len(class_names) != labels.num_classes:
        raise DataError(f"{path}: {len(ids)} ids and {len(class_names)} class names for labels "
                        f"of shape {labels.positive.shape}")
    difficult = labels.difficult if labels.difficult is not None else np.zeros_like(
        labels.positive)
    columns = {"labels": labels.positive}
    if unlabelled_policy == "unknown":
        columns["negatives"] = labels.negative
    elif (labels.unknown & ~difficult).any():
        columns["unknown"] = labels.unknown & ~difficult
    if difficult.any():
        columns["difficult"] = difficult
    names = np.asarray(class_names, dtype=object)
    with atomic_path(Path(path)) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", *columns])
        for r, image in enumerate(ids):
            writer.writerow([image, *(separator.join(names[m[r]]) for m in columns.values())])
