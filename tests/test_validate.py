"""slmctl validate: the admission rules offline, with the same messages."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from slm_operator.cli import app
from slm_operator.validate import validate

ROOT = Path(__file__).resolve().parents[1]
INVALID = list(yaml.safe_load_all((ROOT / "tests/data/invalid-crs.yaml").read_text()))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_at_least_twenty_invalid_cases() -> None:
    assert len(INVALID) >= 20


@pytest.mark.parametrize("doc", INVALID, ids=lambda d: d["metadata"]["annotations"]["test.slm.ai/case"])
def test_invalid_cr_rejected_naming_the_field(doc: dict) -> None:
    expect = doc["metadata"]["annotations"]["test.slm.ai/expect"]
    errors = validate(doc, check_fit=False)
    assert errors, "should be rejected"
    assert any(expect in e for e in errors), errors


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert validate(doc) == []


def test_cli_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(INVALID[:3]))
    result = runner.invoke(app, ["validate", "-f", str(bad)])
    assert result.exit_code == 1
    assert "metadata.name must be at most 40" in result.output
    good = runner.invoke(app, ["validate", "-f", str(EXAMPLES[0])])
    assert good.exit_code == 0, good.output
