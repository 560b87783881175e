"""The shipped full-scale MILe recipe (configs/mile_imagenet.yaml) trains end to end, as a GPU
user would run it, on a tiny ImageNet-layout fixture with ReaL labels: only its size knobs are
overridden, so its reader, ReaL handling, method and schedule are what runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from readers_fixtures import write_image, write_text

from unhot.cli import main
from unhot.metrics import real_accuracy
from unhot.weights import read_architecture

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mile_imagenet.yaml"
COLOURS = {"n01": (220, 30, 30), "n02": (30, 200, 40), "n03": (40, 60, 220)}
# ReaL sets of the 6 validation images; the empty set (entry 4) must be left out of ReaL scores.
REAL = [[0], [0, 1], [1], [2], [], [2, 0]]


def imagenet_fixture(root: Path) -> Path:
    """train/<wnid>/ with 8 images per class; val/<wnid>/ILSVRC2012_val_*.JPEG; real.json."""
    rng = np.random.default_rng(0)
    for wnid, colour in COLOURS.items():
        for i in range(8):
            shade = tuple(int(c * rng.uniform(0.7, 1.0)) for c in colour)
            write_image(root / "train" / wnid / f"{wnid}_{i}.JPEG", shade, fmt="JPEG")
    for i, real in enumerate(REAL):
        wnid = sorted(COLOURS)[real[0] if real else 1]
        write_image(root / "val" / wnid / f"ILSVRC2012_val_{i + 1:08d}.JPEG", COLOURS[wnid],
                    fmt="JPEG")
    write_text(root / "real.json", json.dumps(REAL))
    return root


def test_recipe_is_the_paper_setting():
    raw = yaml.safe_load(CONFIG.read_text())
    assert raw["method"] == {"name": "mile", "k_t": 2000, "k_s": 2000, "rho": 0.25,
                             "reduction": "sum_over_b", "head_init": "minus_log_c"}
    # The authors' optimiser: with the loss summed over classes their lr carries over.
    optim = raw["optim"]
    assert (optim["name"], optim["nesterov"], optim["schedule"]) == ("sgd", True, "constant")
    assert optim["lr"] == pytest.approx(0.1 * 8 * optim["batch_size"] / 256)
    assert raw["model"]["backbone"] == "resnet50"
    assert raw["data"]["name"] == "image_folder" and raw["data"]["real_json"] == "real.json"


def test_recipe_trains_on_an_imagenet_layout_with_real_labels(tmp_path, capsys):
    root = imagenet_fixture(tmp_path / "imagenet")
    out = tmp_path / "run"
    small = ["data.root=" + str(root), "data.image_size=16", "data.val_fraction=0.25",
             "model.width=4", "method.k_t=3", "method.k_s=2",
             "optim.epochs=2", "optim.batch_size=6", "optim.warmup_epochs=0",
             "train.num_workers=0", "train.mixed_precision=no", "train.eval_every=1",
             "train.progress=false", "train.threads=1"]
    args = ["train", "--config", str(CONFIG), "--out", str(out)]
    assert main([*args, *(x for s in small for x in ("--set", s))]) == 0
    capsys.readouterr()
    final = json.loads((out / "final_metrics.json").read_text())
    saved = np.load(out / "stages" / "train" / "test_predictions.npz")
    # rows follow the sorted class folders: n01 (val 1, 2), n02 (val 3, 5), n03 (val 4, 6)
    order = [0, 1, 2, 4, 3, 5]
    assert [int(i[-13:-5]) - 1 for i in saved["ids"]] == order
    assert saved["true"].tolist() == [[c in REAL[i] for c in range(3)] for i in order]
    assert saved["target"].tolist() == [0, 0, 1, 1, 2, 2]
    # ReaL accuracy over the 5 images with a non-empty set, recomputed from the saved scores.
    assert final["real_acc"] == pytest.approx(real_accuracy(saved["scores"], saved["true"]))
    kept = saved["true"].any(axis=1)
    top1 = saved["scores"].argmax(axis=1)
    assert final["real_acc"] == pytest.approx(saved["true"][kept, top1[kept]].mean())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if not r.get("final")] == [3, 6]  # 18 train images / 6
    arch = read_architecture(out / "stages" / "train" / "model.safetensors")
    assert (arch.backbone, arch.class_names) == ("resnet50", tuple(sorted(COLOURS)))
    assert all("val/real_acc" in r for r in rows if not r.get("final"))
