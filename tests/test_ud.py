"""Tests for unhot.methods.ud: configs, stage schedules, tasks, and tiny end-to-end runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from readers_fixtures import coco_dataset, coco_document
from resume_helpers import as_if_killed

from unhot.cli import main
from unhot.config import ConfigError, ModelConfig, parse_config
from unhot.engine import Engine
from unhot.losses import grad_cam, masked_bce, pal_n_loss, uncertainty
from unhot.methods.base import StepContext
from unhot.methods.ud import (
    CalibratedBceTask,
    DistillTask,
    KdConfig,
    UdConfig,
    calibrated_bce_stages,
    kd_stages,
    observed_labels,
    teacher_uncertainty_map,
    ud_stages,
)
from unhot.models import build_model
from unhot.runs import RunError
from unhot.weights import read_architecture

TINY_DATA = {"name": "digit_grid", "source": "sklearn", "grid": 2, "n_train": 64, "n_val": 32,
             "n_test": 32, "label_regime": "full", "difficult_prob": 0.3}


def _batch(b: int = 4, c: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    positive = torch.rand(b, c, generator=g) < 0.4
    difficult = positive & (torch.rand(b, c, generator=g) < 0.5)
    return {"positive": positive, "negative": ~positive, "difficult": difficult}


def _model(calibration: bool = True, width: int = 4, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("small_cnn", 1, 5, width=width, calibration_head=calibration)


def test_defaults_follow_the_authors_code_and_bad_values_name_the_key():
    cfg = UdConfig()
    # LcDog/ud selective_fc_kd_att.py:67-89 (+ the engine's /B) in unhot's per-sample means.
    assert (cfg.lam, cfg.temperature, cfg.kd_weight, cfg.alpha, cfg.beta, cfg.attention,
            cfg.cls_balance) == (0.1, 3.0, 0.25, 0.5, 0.1, "reference", 0.0)
    assert KdConfig().lam == 0.0 and KdConfig().kd_weight == 1.0
    with pytest.raises(ConfigError, match=r"method\.difficult"):
        UdConfig(difficult="hard")
    with pytest.raises(ConfigError, match=r"method\.temperature"):
        KdConfig(temperature=0.0)
    with pytest.raises(ConfigError, match="lam must be > 0"):
        UdConfig(lam=0.0)
    with pytest.raises(ConfigError, match="self_distill"):
        UdConfig(self_distill=True, teacher_model=ModelConfig("resnet18"))
    with pytest.raises(ConfigError, match="alpha"):
        parse_config({"method": {"name": "ud", "alpha": -1}, "data": TINY_DATA})


def test_stage_schedules():
    teacher_arch = ModelConfig("small_cnn", width=8)
    teacher, student = ud_stages(UdConfig(teacher_model=teacher_arch, teacher_epochs=3), None)
    assert (teacher.name, teacher.model, teacher.epochs, teacher.calibration_head) == (
        "teacher", teacher_arch, 3, True)
    assert (student.teacher, student.init, student.calibration_head) == ("teacher", "fresh",
                                                                         True)
    (only,) = ud_stages(UdConfig(teacher_checkpoint="t.safetensors"), None)
    assert only.teacher == "t.safetensors"
    first, second = ud_stages(UdConfig(self_distill=True, keep_best="OF1"), None)
    assert (first.keep_best, first.calibration_head) == ("OF1", True)
    assert (second.init, second.teacher, second.calibration_head) == (
        "continue", "first_half:best", True)
    kd_teacher, kd_student = kd_stages(KdConfig(), None)
    assert not kd_teacher.calibration_head and not kd_student.calibration_head
    (cal,) = calibrated_bce_stages(UdConfig(), None)
    assert cal.calibration_head and isinstance(cal.task, CalibratedBceTask)


def test_difficult_entries_positive_or_ignored():
    batch = _batch()
    batch["positive"] = batch["positive"] & ~batch["difficult"]  # a reader that left them out
    batch["negative"] = ~(batch["positive"] | batch["difficult"])
    pos, neg = observed_labels(batch, "positive")
    assert (pos == (batch["positive"] | batch["difficult"])).all() and not (neg & pos).any()
    pos, neg = observed_labels(batch, "ignore")
    assert not ((pos | neg) & batch["difficult"]).any()


def test_calibrated_bce_task_terms():
    model, batch = _model(), _batch()
    images = torch.rand(4, 1, 16, 16)
    ctx = StepContext(model, images, batch, 0, 0)
    terms = CalibratedBceTask(0.1, "positive").losses(ctx)
    out = ctx.student_output()
    pos, neg = observed_labels(batch, "positive")
    assert terms["bce"].item() == pytest.approx(masked_bce(out.logits, pos, neg).item())
    assert terms["paln"].item() == pytest.approx(0.1 * pal_n_loss(out.calibration, pos,
                                                                  neg).item())
    with pytest.raises(RunError, match="calibration head"):
        CalibratedBceTask(0.1, "positive").losses(StepContext(_model(False), images, batch, 0, 0))


def test_distillation_terms_vanish_when_student_equals_teacher():
    teacher = _model().eval().requires_grad_(False)
    student = copy.deepcopy(teacher).requires_grad_(True)
    ctx = StepContext(student, torch.rand(4, 1, 16, 16), _batch(), 0, 0, teacher=teacher)
    terms = DistillTask(UdConfig(), alpha=0.5, beta=0.5).losses(ctx)
    assert set(terms) == {"kd", "kd_cal", "attention"}
    for name, value in terms.items():
        assert value.item() == pytest.approx(0.0, abs=1e-5), name


@pytest.mark.parametrize("attention", ["reference", "normalized"])
def test_ud_student_gets_gradients_and_the_teacher_none(attention):
    teacher = _model(width=8, seed=1).eval().requires_grad_(False)
    student = _model(seed=2)
    batch = _batch()
    batch["positive"][:, 0] = True
    ctx = StepContext(student, torch.rand(4, 1, 16, 16), batch, 0, 0, teacher=teacher)
    terms = DistillTask(UdConfig(cls_balance=0.3), alpha=0.5, beta=0.5,
                        attention=attention).losses(ctx)
    assert set(terms) == {"kd", "kd_cal", "attention", "bce"}
    assert all(v.item() > 0 for v in terms.values())
    terms["attention"].backward()
    stem = student.backbone.features[0][0].weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    # normalized: a second-order path through the channel weights into the heads; reference
    # (the authors' code): the weights are detached, only the feature map gets a gradient.
    head_grad = student.head.weight.grad
    if attention == "normalized":
        assert head_grad.abs().sum() > 0
    else:
        assert head_grad is None
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("channel_softmax", [False, True])
def test_teacher_map_matches_a_differentiable_reference_and_unhooks(channel_softmax):
    teacher = _model(width=8, seed=3).eval().requires_grad_(False)
    images = torch.rand(3, 1, 16, 16)
    out, cam = teacher_uncertainty_map(teacher, images, relu=False,
                                       channel_softmax=channel_softmax)
    assert cam.shape == out.feature_map.shape[:1] + out.feature_map.shape[2:]
    assert not cam.requires_grad and not out.logits.requires_grad
    reference = copy.deepcopy(teacher).requires_grad_(True)
    ref_out = reference(images)
    ref_cam = grad_cam(uncertainty(ref_out.calibration, ref_out.logits).sum(),
                       ref_out.feature_map, create_graph=False,
                       channel_softmax=channel_softmax)
    assert torch.allclose(cam, ref_cam, atol=1e-6)
    assert not teacher(images).feature_map.requires_grad  # the hook is gone


def test_ud_needs_calibration_heads():
    teacher = _model(calibration=False).eval().requires_grad_(False)
    ctx = StepContext(_model(), torch.rand(2, 1, 16, 16), _batch(2), 0, 0, teacher=teacher)
    with pytest.raises(RunError, match="teacher has no calibration head"):
        DistillTask(UdConfig(), alpha=0.5, beta=0.5).losses(ctx)


def _write_config(tmp_path, method: dict) -> str:
    raw = {"seed": 0, "method": method, "data": TINY_DATA,
           "model": {"backbone": "small_cnn", "width": 4},
           "optim": {"epochs": 1, "batch_size": 32, "lr": 0.05},
           "train": {"eval_every": 0, "progress": False, "eval_split": "val"}}
    path = tmp_path / f"{method['name']}.json"  # JSON is YAML
    path.write_text(json.dumps(raw))
    return str(path)


def test_end_to_end_teacher_then_student_then_kd_from_its_checkpoint(tmp_path):
    method = {"name": "ud", "teacher_model": {"backbone": "small_cnn", "width": 8}}
    out = tmp_path / "ud"
    assert main(["train", "--config", _write_config(tmp_path, method), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [manifest["stages"][s]["complete"] for s in ("teacher", "student")] == [True, True]
    assert "mAP_difficult" in manifest["stages"]["student"]["test_metrics"]
    teacher_weights = out / "stages" / "teacher" / "model.safetensors"
    arch = read_architecture(teacher_weights)
    assert (arch.width, arch.calibration_head) == (8, True)
    assert read_architecture(out / "stages" / "student" / "model.safetensors").width == 4
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    student_row = next(r for r in logged if r["stage"] == "student" and not r.get("final"))
    assert {"loss/kd", "loss/kd_cal", "loss/attention"} <= set(student_row)
    kd = {"name": "kd", "teacher_checkpoint": str(teacher_weights)}
    assert main(["train", "--config", _write_config(tmp_path, kd), "--out",
                 str(tmp_path / "kd")]) == 0


def test_end_to_end_self_distillation(tmp_path):
    method = {"name": "ud", "self_distill": True, "teacher_epochs": 1}
    out = tmp_path / "self"
    assert main(["train", "--config", _write_config(tmp_path, method), "--out", str(out)]) == 0
    assert (out / "stages" / "first_half" / "best.safetensors").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["second_half"]["complete"]


def test_coco_teacher_and_student_keep_the_class_list_and_refuse_another(tmp_path):
    root = coco_dataset(tmp_path / "coco")
    raw = {"seed": 0, "method": {"name": "ud", "teacher_epochs": 1},
           "data": {"name": "coco", "root": str(root), "image_size": 16, "channels": 3},
           "model": {"backbone": "small_cnn", "width": 4},
           "optim": {"epochs": 1, "batch_size": 2, "lr": 0.01},
           "train": {"eval_every": 0, "progress": False}}
    out = tmp_path / "run"
    config = tmp_path / "coco.json"
    config.write_text(json.dumps(raw))
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    classes = ("person", "car", "dog")  # ascending category id 1, 3, 18
    for stage in ("teacher", "student"):
        assert read_architecture(out / "stages" / stage / "model.safetensors").class_names == \
            classes
        saved = torch.load(out / "stages" / stage / "checkpoint.pt", weights_only=True)
        assert tuple(saved["class_names"]) == classes
    # Resuming (as after a kill in the teacher stage) on data whose categories were renamed is
    # refused by the epoch checkpoint.
    as_if_killed(out, teacher={"complete": False, "epochs_done": 1})
    renamed = coco_document(categories=[{"id": 18, "name": "wolf"}, {"id": 1, "name": "person"},
                                        {"id": 3, "name": "car"}])
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(renamed))
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(renamed))
    with pytest.raises(RunError, match=r"checkpoint\.pt: trained on classes \['person', 'car', "
                                       r"'dog'\]\.\.\. \(3\), but the data now has"):
        Engine(parse_config(raw), out).run()


@pytest.mark.parametrize("name", ["ud_grid", "ud_self_grid", "ud_coco", "ud_csv"])
def test_shipped_configs_parse(name):
    root = Path(__file__).resolve().parents[1] / "configs"
    raw = yaml.safe_load((root / f"{name}.yaml").read_text())
    assert parse_config(raw).method.lam == pytest.approx(0.1)
