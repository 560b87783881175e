"""``unhot report`` from run folders alone: every file exists, the HTML stays local."""

from __future__ import annotations

import re

import pytest

from unhot.cli import main
from unhot.config import parse_config
from unhot.engine import Engine


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from conftest import tiny_raw

    root = tmp_path_factory.mktemp("runs")
    for method in ("softmax", "mile"):
        raw = tiny_raw(method, **({"k_t": 4, "k_s": 4} if method == "mile" else {}))
        raw["optim"]["epochs"] = 2
        raw["train"]["eval_every"] = 1
        Engine(parse_config(raw), root / method).run()
    return root


def test_report_files_exist_and_html_is_offline(two_runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(two_runs / "softmax"), str(two_runs / "mile"), "--out",
                 str(out)]) == 0
    assert f"report: {out / 'index.html'}" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    sources = re.findall(r"(?:src|href)=['\"]([^'\"]+)['\"]", page)
    assert len(sources) >= 10
    for source in sources:
        assert "://" not in source and not source.startswith("/")
        assert (out / source).read_bytes()[:4] == b"\x89PNG"
    assert "mile_examples.png" in sources and "f1_threshold.png" in sources
    readme = (out / "README.md").read_text()
    assert "| softmax |" in readme and "| mile |" in readme
    assert not list(out.glob(".*.tmp"))


def test_report_of_an_unfinished_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a finished unhot run" in err and len(err.splitlines()) == 1
