import pytest

from unhot.config import ConfigError, apply_overrides, load_config, parse_config, to_dict


def base():
    return {"method": {"name": "sigmoid"}, "data": {"name": "digit_grid", "n_train": 50}}


def test_parse_and_round_trip():
    cfg = parse_config(base())
    assert cfg.data.n_train == 50 and cfg.optim.epochs == 10
    again = parse_config(to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {**base(), "optim": {"lrr": 0.1}},
            "unknown config key 'optim.lrr'; valid keys here: .*lr",
        ),
        ({**base(), "method": {"name": "nope"}}, "unknown method 'nope'; valid: .*sigmoid"),
        ({**base(), "data": {"name": "digit_grid", "bogus": 1}}, r"data\(digit_grid\).bogus"),
        ({**base(), "optim": {"epochs": "ten"}}, "optim.epochs: expected an integer"),
        ({**base(), "augment": {"crop_scale": [0.1]}}, "augment.crop_scale"),
        ({"data": {"name": "digit_grid"}}, "'method' needs a 'name'"),
        ({**base(), "train": {"device": "gpu"}},
         r"unknown train.device 'gpu'; valid: auto, cpu, cuda$"),
        ({**base(), "train": {"mixed_precision": "fp8"}},
         r"unknown train.mixed_precision 'fp8'; valid: no, fp16, bf16$"),
    ],
)
def test_bad_configs_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_overrides_parse_yaml_values():
    raw = apply_overrides(base(), ["optim.lr=0.2", "augment.crop_scale=[0.08, 1.0]",
                                   "method.reduction=sum_over_bc"])
    cfg = parse_config(raw)
    assert cfg.optim.lr == 0.2 and cfg.augment.crop_scale == (0.08, 1.0)
    assert cfg.method.reduction == "sum_over_bc"
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(base(), ["optim.lr"])


def test_yaml_1_1_quirks_read_as_meant():
    # PyYAML reads `1e-3` (no dot) as a string and a bare `no` as False.
    raw = apply_overrides(base(), ["optim.lr=1e-3", "train.mixed_precision=no"])
    cfg = parse_config(raw)
    assert cfg.optim.lr == 0.001 and cfg.train.mixed_precision == "no"
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number, got 'fast'"):
        parse_config(apply_overrides(base(), ["optim.lr=fast"]))


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError):
        load_config(unsafe)


@pytest.mark.parametrize(("key", "values"), [("device", ["auto", "cpu", "cuda"]),
                                             ("mixed_precision", ["no", "fp16", "bf16"])])
def test_device_and_precision_choices_parse(key, values):
    for value in values:
        cfg = parse_config({**base(), "train": {key: value}})
        assert getattr(cfg.train, key) == value


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=-1", r"optim.lr must be a finite number > 0, got -1.0"),
    ("optim.lr=.nan", r"optim.lr must be a finite number > 0"),
    ("optim.batch_size=0", r"optim.batch_size must be >= 1, got 0"),
    ("optim.epochs=0", r"optim.epochs must be >= 1, got 0"),
    ("optim.schedule=cosin", r"unknown optim.schedule 'cosin'; valid: cosine, step, constant"),
    ("optim.name=sgdd", r"unknown optim.name 'sgdd'; valid: sgd, adam, adamw"),
    ("train.eval_split=valid", r"unknown train.eval_split 'valid'; valid: test, val"),
])
def test_optim_and_train_values_are_checked_when_parsed(override, message):
    raw = apply_overrides({"method": "sigmoid", "data": {"name": "digit_grid"}}, [override])
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)
