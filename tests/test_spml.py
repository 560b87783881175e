"""SPML losses by hand and by law, the APL label store, and the spml method end to end."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from resume_helpers import assert_same_metrics, interrupt_run

from unhot.config import ConfigError, parse_config
from unhot.engine import Engine, StageRunner
from unhot.label_store import PseudoLabelStore, apl_update, lowest_k
from unhot.labels import LabelMatrix
from unhot.losses import (
    an_label_smoothing,
    assume_negative_bce,
    binary_entropy,
    entropy_maximisation,
    expected_positive_regulariser,
    soft_negative_bce,
    weighted_an,
)
from unhot.methods.spml import SpmlConfig
from unhot.runs import RunFolder

Z = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])  # p = [[.5, .75], [.75, .5]]
POS = torch.tensor([[True, False], [False, False]])


def test_em_by_hand():
    # Entry (0,0) positive: -log .5; the three unknowns: -alpha * H(p).
    h = {0.5: math.log(2), 0.75: -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))}
    expected = (math.log(2) - 0.2 * (h[0.75] + h[0.75] + h[0.5])) / 4
    got = entropy_maximisation(Z, POS, ~POS, alpha=0.2)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert binary_entropy(torch.zeros(1)).item() == pytest.approx(math.log(2))


def test_wan_and_epr_by_hand():
    wan = (math.log(2) + math.log(4) + math.log(4) + math.log(2)) / 4  # C-1 = 1
    assert weighted_an(Z, POS).item() == pytest.approx(wan, rel=1e-6)
    # positives: -log .5 over B*C = 4 entries; expected counts 1.25 each, k = 1.
    epr = math.log(2) / 4 + (0.25 ** 2) / 4
    assert expected_positive_regulariser(Z, POS, k=1.0).item() == pytest.approx(epr, rel=1e-6)


def test_epr_penalises_the_batch_mean_count_not_each_image():
    # Counts 1.25 and 0.75 average to k = 1: Cole et al.'s penalty is 0 (a mean of per-image
    # squares would give 0.0625 / C^2).
    z = torch.tensor([[0.0, math.log(3.0)], [0.0, -math.log(3.0)]])  # p rows sum 1.25, 0.75
    positive = torch.tensor([[True, False], [True, False]])
    assert expected_positive_regulariser(z, positive, k=1.0).item() == pytest.approx(
        math.log(2) / 2, rel=1e-6)


def test_soft_negative_bce_only_on_pseudo_negatives():
    mask = torch.tensor([[False, True], [False, False]])
    target = torch.full((2, 2), 0.25)
    expected = -(0.25 * math.log(0.75) + 0.75 * math.log(0.25)) / 4
    assert soft_negative_bce(Z, mask, target).item() == pytest.approx(expected, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(2, 6), st.integers(0, 10_000))
def test_label_smoothing_zero_is_assume_negative(batch, classes, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, generator=g) * 3
    positive = torch.rand(batch, classes, generator=g) < 0.3
    for reduction in ("sum_over_bc", "mean_observed"):
        assert torch.allclose(an_label_smoothing(logits, positive, 0.0, reduction),
                              assume_negative_bce(logits, positive, reduction), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.floats(-6, 6))
def test_em_unknown_term_is_smallest_at_one_half(z):
    unknown = torch.ones(1, 1, dtype=torch.bool)
    at = entropy_maximisation(torch.tensor([[z]]), ~unknown, unknown, alpha=1.0)
    half = entropy_maximisation(torch.zeros(1, 1), ~unknown, unknown, alpha=1.0)
    assert at.item() >= half.item() - 1e-7


def test_apl_marks_lowest_unknowns_cumulatively_never_positives():
    scores = np.array([[0.9, 0.1], [0.2, 0.3], [0.05, 0.6], [0.4, 0.02]])
    unknown = np.array([[False, True], [True, True], [True, True], [True, False]])
    labels = LabelMatrix(~unknown, np.zeros_like(unknown))
    store = PseudoLabelStore.empty(4, 2)
    # U = (3, 3); epochs - warmup = 2; theta 1 -> floor(3 / 2) = 1 per class per epoch.
    # Zhou et al.'s timing: the first marks at the end of epoch `warmup` (here 2 of 3).
    assert apl_update(store, scores, labels, 1.0, 3, 2, epochs_done=1) == 0
    store = PseudoLabelStore.empty(4, 2)
    assert apl_update(store, scores, labels, 1.0, 3, 1, epochs_done=1) == 2
    assert store.negative[2, 0] and store.negative[0, 1]
    assert store.target[2, 0] == pytest.approx(0.05)
    apl_update(store, scores, labels, 1.0, 3, 1, epochs_done=2)
    assert store.negative[1, 0] and store.negative[1, 1]
    assert not (store.negative & ~unknown).any()
    restored = PseudoLabelStore.empty(0, 0)
    restored.load_state_dict(store.state_dict())
    np.testing.assert_array_equal(restored.negative, store.negative)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=40), st.integers(1, 45))
def test_lowest_k_is_the_stable_sorts_first_k(values, k):
    """Partial selection marks exactly the entries a full stable sort would (ties to the
    earlier sample), so APL's marks are unchanged by the O(n) selection."""
    array = np.array(values, dtype=np.float32) / 5
    expected = np.sort(np.argsort(array, kind="stable")[:k])
    np.testing.assert_array_equal(lowest_k(array, k), expected)


def test_label_smoothing_targets_follow_cole_ls_coef():
    """Cole et al.'s ls_coef c: BCE against 1 - c on the positive and c elsewhere."""
    logits = torch.tensor([[0.3, -1.2]])
    positive = torch.tensor([[True, False]])
    p = torch.sigmoid(logits)[0]
    bce = lambda q, x: -(q * math.log(x) + (1 - q) * math.log(1 - x))  # noqa: E731
    expected = (bce(0.9, p[0].item()) + bce(0.1, p[1].item())) / 2
    assert an_label_smoothing(logits, positive, 0.1).item() == pytest.approx(expected, rel=1e-6)


def test_unknown_loss_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown method\(spml\).loss 'nope'"):
        SpmlConfig(loss="nope")
    with pytest.raises(ConfigError, match=r"select_labels 'dirty'; valid: clean, single_pos"):
        parse_config({"method": {"name": "spml", "select_labels": "dirty"},
                      "data": {"name": "digit_grid"}})


def test_em_apl_run_resumes_with_its_label_store(tmp_path, tiny):
    raw = tiny("spml", loss="em_apl", warmup=1)
    raw["data"]["label_regime"] = "single_positive"
    cfg = parse_config(raw)
    straight = Engine(cfg, tmp_path / "a").run()
    store = np.load(tmp_path / "a" / "stages" / "train" / "label_store.npz")
    assert store["negative"].sum() > 0
    interrupt_run(cfg, tmp_path / "b", "train_epoch", lambda runner, n: n == 3)
    assert_same_metrics(Engine(cfg, tmp_path / "b").run(), straight)
    again = np.load(RunFolder(tmp_path / "b").stage_dir("train") / "label_store.npz")
    np.testing.assert_array_equal(again["negative"], store["negative"])


def test_role_loss_by_hand_and_its_stop_gradients():
    from unhot.losses import role_loss

    z = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)  # p = (.5, .75)
    e = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)  # q = (.75, .5)
    positive = torch.tensor([[True, False]])

    def bce(p, t):
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    observed = (math.log(2) + -math.log(0.75)) / 2  # entry (0, 0) for p and q; mean over 2
    cross = (bce(0.5, 0.75) + bce(0.75, 0.5) + bce(0.75, 0.5) + bce(0.5, 0.75)) / 2
    regulariser = ((1.25 - 1) ** 2 + (1.25 - 1) ** 2) / 4
    loss = role_loss(z, e, positive, k=1.0)
    assert loss.item() == pytest.approx(observed / 2 + cross / 2 + regulariser / 2, rel=1e-6)
    loss.backward()
    assert z.grad is not None and e.grad is not None


def test_role_run_learns_estimates_and_resumes_them(tmp_path, tiny):
    raw = tiny("spml", loss="role", k=2.0)
    raw["data"]["label_regime"] = "single_positive"
    cfg = parse_config(raw)
    straight = Engine(cfg, tmp_path / "a").run()
    interrupt_run(cfg, tmp_path / "b", "train_epoch", lambda runner, n: n == 3)
    assert_same_metrics(Engine(cfg, tmp_path / "b").run(), straight)
    # The estimates learn at role_lr_mult (10) times the model's scheduled learning rate.
    state = torch.load(RunFolder(tmp_path / "b").checkpoint_path("train"), weights_only=True)
    (model_group,) = state["optimizer"]["param_groups"]
    estimates = state["task"]["estimates"]
    assert estimates["lr_history"][-1].item() == pytest.approx(10 * model_group["lr"])
    assert model_group["lr"] > 0 and estimates["steps"] == len(estimates["lr_history"])


@pytest.mark.parametrize("select_labels", ["clean", "single_positive"])
def test_model_selection_tests_the_best_validation_epoch(tmp_path, tiny, select_labels):
    from unhot.data import build_data
    from unhot.engine import make_accelerator, predict
    from unhot.metrics import compute_metrics
    from unhot.weights import load_weights

    raw = tiny("spml", loss="an", select="mAP", select_labels=select_labels)
    raw["data"].update(label_regime="single_positive", n_val=64)
    raw["train"]["eval_split"] = "val"
    raw["optim"]["epochs"] = 4
    cfg = parse_config(raw)
    final = Engine(cfg, tmp_path).run()
    folder = RunFolder(tmp_path)
    rows = [r for r in folder.read_manifest().stages["train"].history if "val/mAP" in r]
    assert len(rows) == 4
    data = build_data(cfg.data)
    val = data.val
    assert (val.labels.positive.sum(axis=1) == 1).all() and (val.true.sum(axis=1) >= 1).all()
    # The tested weights are the best epoch's: their val mAP is the best row's, scored against
    # the labels select_labels names.
    model, _ = load_weights(folder.weights_path("train"))
    acc = make_accelerator(cfg)
    scores = predict(acc, model, val, torch.sigmoid, 64)
    val_true = val.true if select_labels == "clean" else val.labels.positive
    best = max(r["val/mAP"] for r in rows)
    assert compute_metrics(scores, val_true)["mAP"] == pytest.approx(best, abs=1e-6)
    test_scores = predict(acc, model, data.test, torch.sigmoid, 64)
    assert compute_metrics(test_scores, data.test.true)["mAP"] == pytest.approx(final["mAP"],
                                                                               abs=1e-6)


def test_selection_never_uses_the_test_split(tmp_path, tiny):
    from unhot.runs import RunError

    raw = tiny("spml", loss="an", select="mAP")
    with pytest.raises(RunError, match=r"select on the test set; set train\.eval_split=val"):
        Engine(parse_config(raw), tmp_path / "run").run()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("method", "knobs", "expected"), [
    ("spml", {"loss": "em_apl"}, None),  # Cole's / Zhou's code: nn.Linear's default init
    ("spml", {"loss": "an", "head_init": "minus_log_c"}, -math.log(10)),
    ("sigmoid", {}, -math.log(10)),  # MILe's baseline: MILe's adjust_bias
    ("mile", {}, -math.log(10)),
    ("bce", {}, None),
    ("ud", {}, None),
])
def test_head_bias_follows_each_methods_reference(tmp_path, tiny, method, knobs, expected):
    """The engine builds every stage's head with its own method's init (10 digit classes)."""
    raw = tiny(method, **knobs)
    if method == "spml":
        raw["data"]["label_regime"] = "single_positive"
    engine = Engine(parse_config(raw), tmp_path)
    runner = StageRunner(engine, engine.stages[0], 0, engine.folder.read_manifest())
    bias = runner.acc.unwrap_model(runner.model).head.bias.detach()
    if expected is None:
        assert not torch.allclose(bias, torch.full_like(bias, -math.log(10)))
        assert bias.abs().max() <= 1 / math.sqrt(runner.model.feature_dim) + 1e-6
    else:
        assert torch.allclose(bias, torch.full_like(bias, expected))


def test_role_without_estimates_is_an_error_not_em():
    from unhot.methods.base import StepContext
    from unhot.methods.spml import SpmlTask
    from unhot.models import ModelOutput
    from unhot.runs import RunError

    ctx = StepContext(lambda x: ModelOutput(x, None, x, x), torch.zeros(2, 3),
                      {"positive": torch.eye(2, 3, dtype=torch.bool),
                       "negative": torch.zeros(2, 3, dtype=torch.bool),
                       "index": torch.arange(2)}, 0, 0)
    with pytest.raises(RunError, match="label estimates were never created"):
        SpmlTask(SpmlConfig(loss="role")).losses(ctx)


def test_early_stop_after_patience_epochs_without_gain_and_resume(tmp_path, tiny):
    """patience 1 (Zhou et al.'s code) stops at the first epoch whose validation mAP does not
    improve, tests the best epoch, and a run killed after that decision stops the same way."""
    raw = tiny("spml", loss="an", select="mAP", patience=1)
    raw["data"].update(label_regime="single_positive", n_val=64)
    raw["train"]["eval_split"] = "val"
    raw["optim"].update(epochs=12, lr=0.5)
    cfg = parse_config(raw)
    final = Engine(cfg, tmp_path / "a").run()
    rows = [r for r in RunFolder(tmp_path / "a").read_manifest().stages["train"].history
            if "val/mAP" in r]
    values = [r["val/mAP"] for r in rows]
    assert len(values) < 12, "the run should have stopped early"
    assert values[-1] <= max(values[:-1])  # the last epoch brought no gain ...
    assert all(b > a for a, b in itertools.pairwise(values[:-1]))  # ... the others did
    interrupt_run(cfg, tmp_path / "b", "_finish", lambda runner, n: True)
    assert_same_metrics(Engine(cfg, tmp_path / "b").run(), final)
    with pytest.raises(ConfigError, match="patience"):
        SpmlConfig(patience=1)  # needs select
