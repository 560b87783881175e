"""The SPML methods published after EM + APL: LL-R / LL-Ct / LL-Cp (Kim et al., CVPR 2022),
BoostLU (Kim et al., CVPR 2023) and the GR loss (Chen et al., IJCAI 2024): hand-computed values,
the authors' code's outputs on the same tensors (tests/data, produced by running their modules
unchanged), and end-to-end runs (every loss trains to better than chance in
tests/test_every_method.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unhot.config import ConfigError, parse_config
from unhot.engine import Engine, StageRunner
from unhot.losses import gr_loss, gr_schedule, large_loss, large_loss_mask
from unhot.methods.spml import DELTA_REL, SpmlConfig
from unhot.models.heads import Classifier
from unhot.runs import RunFolder
from unhot.weights import load_weights

REFERENCE = json.loads((Path(__file__).parent / "data" / "spml_library_reference.json")
                       .read_text())


def _inputs(block: dict) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.tensor(block["logits"], dtype=torch.float64)
    positive = torch.zeros_like(logits, dtype=torch.bool)
    positive[torch.arange(len(logits)), torch.tensor(block["positive_class"])] = True
    return logits, positive


# -- large-loss methods ---------------------------------------------------------------------------
def test_large_loss_by_hand():
    """Two unknown entries with AN losses ~2.13 and ~0.13 and one positive: at rate 1/3 (k = 1 of
    3 entries) LL-R drops the larger loss, LL-Ct replaces it by -log p; the mean keeps B*C."""
    logits = torch.tensor([[2.0, 1.0, -2.0]])
    positive = torch.tensor([[False, True, False]])
    modified = large_loss_mask(logits, positive, ~positive, 1 / 3)
    assert modified.tolist() == [[True, False, False]]
    an = [math.log1p(math.exp(2.0)), math.log1p(math.exp(-1.0)), math.log1p(math.exp(-2.0))]
    assert large_loss(logits, positive, modified, False).item() == pytest.approx(
        (0 + an[1] + an[2]) / 3)
    assert large_loss(logits, positive, modified, True).item() == pytest.approx(
        (math.log1p(math.exp(-2.0)) + an[1] + an[2]) / 3)
    assert not large_loss_mask(logits, positive, ~positive, 0.0).any()


@pytest.mark.parametrize("case", REFERENCE["large_loss"]["cases"],
                         ids=lambda c: f"{c['scheme']}-d{c['delta_rel']}-e{c['epochs_completed']}")
def test_large_loss_equals_the_authors_code(case):
    """LargeLossMatters' compute_batch_loss on the same logits: k and the loss value, for every
    scheme, rate and epoch (rate = epochs done x delta_rel; LL-Cp's constant after epoch 1)."""
    logits, positive = _inputs(REFERENCE["large_loss"])
    epochs = case["epochs_completed"]
    rate = case["delta_rel"] * (min(epochs, 1) if case["scheme"] == "LL-Cp" else epochs)
    modified = large_loss_mask(logits, positive, ~positive, rate)
    assert int(modified.sum()) == (case["k"] or 0)
    loss = large_loss(logits, positive, modified, correct=case["scheme"] != "LL-R")
    # Float32, not float64 agreement: their corrected BCE takes float32 targets (.float()),
    # which changes float64 results at 1e-10 (and nothing in float32 training).
    assert loss.item() == pytest.approx(case["loss"], rel=1e-8)


def test_ll_cp_corrections_become_positives_for_good(tiny):
    """LL-Cp's corrected entries are kept per sample and trained as positives afterwards (they
    are in the checkpoint, so a resume keeps them)."""
    raw = tiny("spml", loss="ll_cp", delta_rel=0.05)
    raw["data"]["label_regime"] = "single_positive"
    engine = Engine(parse_config(raw), Path("unused"))
    runner = StageRunner(engine, engine.stages[0], 0, {"stages": {}})
    task = runner.task
    runner.train_epoch()
    assert task.corrected is not None and not task.corrected.any()  # epoch 1: plain AN
    runner.epoch = 1
    runner.train_epoch()
    corrected = task.corrected.copy()
    batches = len(runner.data.train) // 32
    assert corrected.sum() == batches * math.ceil(32 * 10 * 0.05)
    assert not (corrected & runner.data.train.labels.positive).any()
    assert np.array_equal(task.state_dict()["corrected"].numpy(), corrected)


# -- GR loss ---------------------------------------------------------------------------------------
def test_gr_loss_by_hand():
    """One positive (p = 0.5) and one unknown entry at z = 0 with w = 0, b = 0, mu = 0.5: K = 0.5,
    V = 1, q2 = q3 = 1: the unknown term is (1 - p) / 2 + p / 2 = 0.5."""
    logits = torch.zeros(1, 2)
    positive = torch.tensor([[True, False]])
    loss = gr_loss(logits, positive, ~torch.ones_like(positive), 0.0, 0.0, 0.5, 1.0, 1.0, 1.0)
    assert loss.item() == pytest.approx((-math.log(0.5 + 1e-7) + 0.5) / 2)


def test_gr_schedule_and_loss_equal_the_authors_code():
    gr = REFERENCE["gr"]
    for epoch, expected in gr["schedule"].items():
        got = gr_schedule(tuple(gr["beta"]), tuple(gr["alpha"]), int(epoch), gr["epochs"])
        assert got == pytest.approx(expected, abs=1e-12)
    logits, positive = _inputs(gr)
    for epoch, expected in gr["by_epoch"].items():
        z = logits.clone().requires_grad_(True)
        hyper = gr_schedule(tuple(gr["beta"]), tuple(gr["alpha"]), int(epoch), gr["epochs"])
        loss = gr_loss(z, positive, torch.zeros_like(positive), *hyper, *gr["q"])
        loss.backward()
        assert loss.item() == pytest.approx(expected["loss"], abs=1e-12)
        torch.testing.assert_close(z.grad, torch.tensor(expected["grad_logits"],
                                                        dtype=torch.float64), rtol=0, atol=1e-12)


# -- BoostLU ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 5.0])
def test_boost_lu_logits_equal_the_authors_model(alpha):
    """The authors' CAM head (1x1 conv with bias, positive activations x alpha, then GAP) on
    the same feature maps and weights."""
    ref = REFERENCE["boost_lu"]
    features = torch.tensor(ref["feats"], dtype=torch.float64)
    model = Classifier(torch.nn.Identity(), features.shape[1], len(ref["bias"]),
                       cam_boost=alpha).double()
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor(ref["weight"], dtype=torch.float64).reshape(
            model.head.weight.shape))
        model.head.bias.copy_(torch.tensor(ref["bias"], dtype=torch.float64))
    expected = ref["logits_alpha1"] if alpha == 1 else ref["logits_alpha5"]
    for mode in (model.train, model.eval):
        mode()
        torch.testing.assert_close(model(features).logits,
                                   torch.tensor(expected, dtype=torch.float64),
                                   rtol=0, atol=1e-12)


def test_boost_lu_is_stored_with_the_weights_and_used_in_evaluation(tmp_path, tiny):
    raw = tiny("spml", loss="ll_r", boost_lu=5.0)
    raw["data"]["label_regime"] = "single_positive"
    raw["optim"]["epochs"] = 1
    Engine(parse_config(raw), tmp_path / "run").run()
    model, arch = load_weights(RunFolder(tmp_path / "run").weights_path("train"))
    assert arch.cam_boost == 5.0 and model.cam_boost == 5.0


# -- config and early stop (every loss end to end: test_every_method.py) ---------------------------
def test_delta_rel_defaults_are_kim_et_al_follow_up_table():
    assert {loss: SpmlConfig(loss=loss).large_loss_rate for loss in DELTA_REL} == {
        "ll_r": 0.005, "ll_ct": 0.002, "ll_cp": 0.001}
    assert SpmlConfig(loss="ll_r", delta_rel=0.01).large_loss_rate == 0.01


@pytest.mark.parametrize(("knobs", "message"), [
    ({"delta_rel": 5}, r"delta_rel must be in \[0, 1\]"),
    ({"boost_lu": 0.5}, r"boost_lu must be >= 1"),
    ({"gr_q": [0, 1]}, r"gr_q must be"),
    ({"stop_drop": 0.03}, r"stop_drop must be >= 0 and needs method.select"),
])
def test_bad_knobs_are_config_errors(knobs, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"method": {"name": "spml", "loss": "ll_r", **knobs},
                      "data": {"name": "digit_grid"}})


def test_stop_drop_stops_when_validation_falls_below_the_best(tmp_path, tiny, monkeypatch):
    """Kim et al.'s early stop: after an epoch more than stop_drop below the best."""
    raw = tiny("spml", loss="an", select="mAP", stop_drop=0.0)
    raw["data"].update(label_regime="single_positive", n_val=64)
    raw["train"]["eval_split"] = "val"
    raw["optim"]["epochs"] = 6
    values = iter([0.5, 0.6, 0.55, 0.7, 0.7, 0.7])
    original = StageRunner.evaluate

    def scripted(self, split):
        metrics, scores = original(self, split)
        if split.name == "val":
            metrics["mAP"] = next(values)
        return metrics, scores

    monkeypatch.setattr(StageRunner, "evaluate", scripted)
    Engine(parse_config(raw), tmp_path / "run").run()
    manifest = RunFolder(tmp_path / "run").read_manifest()
    assert manifest.stages["train"].epochs_done == 3


def test_large_loss_mask_never_selects_positives_or_observed_negatives():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(1)) * 3
    positive = F.one_hot(torch.arange(6) % 5, 5).bool()
    negative = torch.zeros_like(positive)
    negative[:, 0] = ~positive[:, 0]
    modified = large_loss_mask(logits, positive, ~(positive | negative), 0.5)
    assert not (modified & (positive | negative)).any()
    assert int(modified.sum()) == 15
