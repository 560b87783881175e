"""The README and docs stay true: every YAML example parses, every config file parses, and the
first two README lines are the install-and-demo and install-and-test commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from unhot.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def yaml_blocks(path: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_yaml_examples_parse(path):
    for block in yaml_blocks(path):
        raw = yaml.safe_load(block)
        full = {"method": {"name": "sigmoid"}, "data": {"name": "digit_grid"}, **raw}
        parse_config(full)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    parse_config(yaml.safe_load(path.read_text()))


def test_readme_opens_with_the_two_commands():
    first = [line for line in (ROOT / "README.md").read_text().splitlines()[:6]
             if line.startswith("pip install")]
    assert first[0].split("#")[0].strip().endswith("&& unhot demo")
    assert first[1].split("#")[0].strip().endswith("&& python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in ci and "python -m pytest" in ci


def test_local_links_exist():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#]+)\)", path.read_text()):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{path.name}: broken link {target}"
