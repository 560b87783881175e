"""Tests for unhot.methods.mile: phase schedule, pseudo-labels, the frozen teacher, cost, resume."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from resume_helpers import assert_same_metrics, interrupt_run

from unhot.config import ConfigError, parse_config
from unhot.engine import Engine
from unhot.losses import assume_negative_bce
from unhot.methods.base import StepContext
from unhot.methods.mile import MileConfig, MileTask, mile_phase, pseudo_labels, snapshot
from unhot.models import Classifier, build_model
from unhot.runs import RunFolder, load_checkpoint

C = 5


def test_phase_schedule_by_hand_has_exact_phase_lengths():
    imitation = [mile_phase(s, 3, 2).imitation for s in range(12)]
    assert imitation == [False] * 3 + [True] * 2 + [False] * 3 + [True] * 2 + [False] * 2
    assert [mile_phase(s, 3, 2).cycle for s in range(12)] == [0] * 5 + [1] * 5 + [2] * 2
    assert [mile_phase(s, 3, 2).position for s in (0, 3, 4, 5, 10)] == [0, 3, 4, 0, 0]
    assert not any(mile_phase(s, 4, 0).imitation for s in range(20))  # k_s = 0: plain sigmoid


def test_config_defaults_and_errors_name_the_key():
    assert MileConfig().rho == 0.25 and not MileConfig().keep_ground_truth
    with pytest.raises(ConfigError, match="k_t"):
        MileConfig(k_t=0)
    with pytest.raises(ConfigError, match="rho"):
        MileConfig(rho=1.0)
    with pytest.raises(ConfigError, match="k_s"):
        parse_config({"method": {"name": "mile", "k_s": -1},
                      "data": {"name": "digit_grid", "source": "sklearn"}})


def test_defaults_follow_the_authors_code():
    """MILe's code: BCE summed over classes (rescale_sigmoid) and a -log C head bias."""
    task = MileTask(MileConfig())
    assert MileConfig().reduction == "sum_over_b"
    assert task.head_bias(1000) == pytest.approx(-np.log(1000))
    assert MileTask(MileConfig(head_init="default")).head_bias(1000) is None


def test_sum_reduction_equals_mean_at_lr_over_c_and_wd_times_c():
    """SGD with momentum on the class-summed loss at (lr / C, wd x C) takes exactly the steps
    of the class-mean loss at (lr, wd): the conversion the grid configs rely on."""
    images, batch = _batch(0)
    models = {}
    for reduction, lr, wd in (("mean_observed", 0.3, 5e-4), ("sum_over_b", 0.3 / C, 5e-4 * C)):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
        for _ in range(3):
            opt.zero_grad()
            assume_negative_bce(model(images).logits, batch["positive"], reduction).backward()
            opt.step()
        models[reduction] = model
    for a, b in zip(models["mean_observed"].parameters(), models["sum_over_b"].parameters(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_pseudo_labels_threshold_probabilities_not_logits():
    logits = torch.tensor([[-2.0, -0.5, 0.5, -1.2, 3.0]])
    # sigmoid: 0.119, 0.378, 0.622, 0.231, 0.953; thresholding logits at 0.25 would keep 2 only.
    assert pseudo_labels(logits, 0.25).tolist() == [[False, True, True, False, True]]
    assert pseudo_labels(logits, 0.5).tolist() == [[False, False, True, False, True]]
    sure = torch.tensor([[-30.0, 30.0]])
    assert pseudo_labels(sure, 0.99, sample=True).tolist() == [[False, True]]


def _model(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return build_model("small_cnn", 1, C, width=4, head_bias=-2.0)


def _batch(step: int, b: int = 6) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(step)
    images = torch.randn(b, 1, 12, 12, generator=g)
    target = torch.randint(0, C, (b,), generator=g)
    return images, {"positive": torch.nn.functional.one_hot(target, C).bool(), "target": target}


def _train(task: MileTask, model: Classifier, steps: int, record=None) -> None:
    """The engine's step, by hand: losses, one backward, one SGD step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for step in range(steps):
        images, batch = _batch(step)
        before = copy.deepcopy(model.state_dict())
        ctx = StepContext(model, images, batch, step, 0)
        losses = task.losses(ctx)
        if record is not None:
            record(step, ctx, losses, before)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()


def test_teacher_is_a_frozen_eval_snapshot_on_the_same_batch():
    task, model = MileTask(MileConfig(k_t=3, k_s=2, rho=0.3)), _model()
    calls: list[tuple[bool, torch.Tensor]] = []
    # Hooks are deep-copied with the module, so the teacher reports its calls here too.
    model.register_forward_pre_hook(lambda m, args: calls.append((m.training, args[0])))
    teachers: dict[int, tuple[torch.nn.Module, dict[str, torch.Tensor]]] = {}

    def record(step, ctx, losses, before):
        if step % 5 < 3:
            assert set(losses) == {"bce_interaction"} and task.teacher is None
            assert len(calls) == 1 and calls[0][0]
        else:
            teacher = task.teacher
            assert set(losses) == {"bce_imitation"} and teacher is not None
            assert not teacher.training
            assert not any(p.requires_grad for p in teacher.parameters())
            # The teacher (eval) and then the student (train) saw the very same tensor.
            assert [(t, x is ctx.images) for t, x in calls] == [(False, True), (True, True)]
            if step % 5 == 3:  # snapshot = the weights and BN statistics after k_t steps
                assert teacher is not teachers.get(step // 5 - 1, (None,))[0]
                teachers[step // 5] = (teacher, copy.deepcopy(teacher.state_dict()))
                for key, value in before.items():
                    assert torch.equal(teacher.state_dict()[key], value), key
            kept_teacher, kept_state = teachers[step // 5]
            assert teacher is kept_teacher
            for key, value in teacher.state_dict().items():
                assert torch.equal(value, kept_state[key]), key
            with torch.no_grad():
                target = torch.sigmoid(teacher(ctx.images).logits) > 0.3
            expected = assume_negative_bce(ctx.student_output().logits, target, "sum_over_b")
            assert losses["bce_imitation"].item() == pytest.approx(expected.item(), abs=1e-6)
        calls.clear()

    _train(task, model, 12, record)
    assert sorted(teachers) == [0, 1]
    # The student continued: its weights moved away from the last teacher's.
    student = model.state_dict()
    assert not all(torch.equal(student[k], v) for k, v in teachers[1][1].items())


def test_keep_ground_truth_ors_the_given_label_into_the_pseudo_label():
    images, batch = _batch(0)
    results = {}
    for keep in (False, True):
        model = _model()  # head bias -2: every p ~ 0.12, so rho 0.5 gives empty pseudo-labels
        task = MileTask(MileConfig(k_t=1, k_s=1, rho=0.5, keep_ground_truth=keep))
        task.losses(StepContext(model, images, batch, 0, 0))
        ctx = StepContext(model, images, batch, 1, 0)
        results[keep] = (task.losses(ctx)["bce_imitation"], ctx.student_output().logits)
    empty = torch.zeros_like(batch["positive"])
    assert results[False][0].item() == pytest.approx(
        assume_negative_bce(results[False][1], empty, "sum_over_b").item(), abs=1e-6)
    assert results[True][0].item() == pytest.approx(
        assume_negative_bce(results[True][1], batch["positive"], "sum_over_b").item(), abs=1e-6)


def test_resumed_state_restores_the_saved_teacher_and_a_missing_one_is_an_error():
    model = _model()
    teacher = snapshot(model)
    with torch.no_grad():
        for param in teacher.parameters():
            param.add_(0.1)
    images, batch = _batch(0)
    task = MileTask(MileConfig(k_t=2, k_s=3))
    task.load_state_dict({"teacher_cycle": 1, "teacher": teacher.state_dict()})
    assert set(task.state_dict()) == {"teacher_cycle", "teacher"}
    task.losses(StepContext(model, images, batch, 8, 0))  # cycle 1, position 3: mid-imitation
    for key, value in teacher.state_dict().items():
        assert torch.equal(task.teacher.state_dict()[key], value), key
    lost = MileTask(MileConfig(k_t=2, k_s=3))
    lost.load_state_dict({"teacher_cycle": 1})
    with pytest.raises(RuntimeError, match="no teacher"):
        lost.losses(StepContext(model, images, batch, 8, 0))


@pytest.fixture
def counted(monkeypatch):
    """Counts of backward passes and of train- / eval-mode forward passes of any Classifier."""
    counts = {"backward": 0, "train": 0, "eval": 0}
    backward, forward = torch.Tensor.backward, Classifier.forward

    def count_backward(self, *args, **kwargs):
        counts["backward"] += 1
        return backward(self, *args, **kwargs)

    def count_forward(self, x):
        counts["train" if self.training else "eval"] += 1
        return forward(self, x)

    monkeypatch.setattr(torch.Tensor, "backward", count_backward)
    monkeypatch.setattr(Classifier, "forward", count_forward)
    return counts


def test_tiny_run_costs_the_sigmoid_backward_passes_plus_teacher_forwards(tmp_path, tiny,
                                                                           counted):
    runs = {}
    for method, knobs in (("sigmoid", {}), ("mile", {"k_t": 3, "k_s": 3})):
        counted.update(backward=0, train=0, eval=0)
        metrics = Engine(parse_config(tiny(method, **knobs)), tmp_path / method).run()
        log = (tmp_path / method / "metrics.jsonl").read_text()
        rows = [json.loads(r) for r in log.splitlines()]
        runs[method] = (dict(counted), rows[-2]["step"], metrics)
    (sig_counts, sig_steps, sig_metrics), (mile_counts, mile_steps, mile_metrics) = (
        runs["sigmoid"], runs["mile"])
    assert sig_steps == mile_steps == 24  # 256 // 32 steps x 3 epochs
    assert sig_counts["backward"] == mile_counts["backward"] == 24
    assert sig_counts["train"] == mile_counts["train"] == 24
    assert mile_counts["eval"] - sig_counts["eval"] == 12  # one teacher forward per imitation
    for key in ("real_f1@0.25", "real_f1@0.5", "real_acc", "top1", "label_coverage@0.25",
                "label_recovery@0.25"):
        assert 0.0 <= mile_metrics[key] <= (9.0 if "coverage" in key else 1.0), key
    assert mile_metrics != sig_metrics


def test_resume_in_the_middle_of_an_imitation_phase_matches_a_straight_run(tmp_path, tiny,
                                                                          monkeypatch):
    cfg = parse_config(tiny("mile", k_t=3, k_s=3))
    teachers_at_16 = []
    losses = MileTask.losses

    def record_teacher(self, ctx):
        out = losses(self, ctx)
        if ctx.step == 16:
            teachers_at_16.append(copy.deepcopy(self.teacher.state_dict()))
        return out

    monkeypatch.setattr(MileTask, "losses", record_teacher)
    reference = Engine(cfg, tmp_path / "straight").run()
    # Stopped once the checkpoint of epoch 2 is written.
    interrupt_run(cfg, tmp_path / "resumed", "_save_checkpoint",
                  lambda runner, n: runner.epoch == 2, after=True)
    folder = RunFolder(tmp_path / "resumed")
    state = load_checkpoint(folder.checkpoint_path("train"))
    # 16 steps done: step 16 is position 4 of cycle 2, whose teacher was taken at step 15.
    assert state["step"] == 16 and mile_phase(16, 3, 3) == (2, 4, True)
    assert state["task"]["teacher_cycle"] == 2 and "teacher" in state["task"]
    assert_same_metrics(Engine(cfg, tmp_path / "resumed").run(), reference)
    straight, after_resume = teachers_at_16
    for key, value in straight.items():
        assert torch.equal(after_resume[key], value), key
    scores = [np.load(RunFolder(tmp_path / name).predictions_path("train"))["scores"]
              for name in ("straight", "resumed")]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-6)
