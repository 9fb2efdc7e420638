"""The README documents every setting and starts with the run and test commands."""

from __future__ import annotations

from pathlib import Path

from app.settings import ENV_PREFIX, Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [name for name in Settings.model_fields if f"`{ENV_PREFIX}{name.upper()}`" not in README]
    assert not missing, f"settings missing from README.md: {missing}"


def test_readme_opens_with_the_two_commands():
    head = README[:1500]
    assert "pip install -e . && show1 up" in head
    assert "python -m pytest" in head
