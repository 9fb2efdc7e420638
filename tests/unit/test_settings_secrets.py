"""Settings from the environment: an empty variable means unset; no example file holds a usable secret,
and a placeholder left in place stops the service at start-up, naming the setting, not printing it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from dotenv import dotenv_values
from pydantic import ValidationError

from app.settings import PLACEHOLDER_MARK, Settings
from worker.cli import main

REPO = Path(__file__).resolve().parents[2]
SECRET_SETTINGS = ("SHOW1_API_KEYS", "SHOW1_WEBHOOK_SECRET", "SHOW1_S3_SECRET_ACCESS_KEY", "SHOW1_REDIS_URL")


def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env from the working directory
    for name in list(__import__("os").environ):
        if name.startswith("SHOW1_"):
            monkeypatch.delenv(name)


def test_an_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    clean_env(monkeypatch, tmp_path)
    defaults = Settings()
    for name in Settings.model_fields:
        monkeypatch.setenv(f"SHOW1_{name.upper()}", "")
    empty = Settings()
    assert empty.model_dump() == defaults.model_dump()
    assert empty.models_dir is None  # was Path("."): "checkpoint folder(s) missing under ."
    (tmp_path / ".env").write_text("SHOW1_MODELS_DIR=\nSHOW1_LOCAL_STORAGE_DIR=\n")
    assert Settings().models_dir is None and Settings().local_storage_dir == Path("var/storage")


@pytest.mark.parametrize("name", SECRET_SETTINGS)
def test_a_placeholder_secret_stops_the_service_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
):
    clean_env(monkeypatch, tmp_path)
    value = f"redis://:{PLACEHOLDER_MARK}-pw@redis:6379/0" if name == "SHOW1_REDIS_URL" else "change-me"
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = str(refused.value)
    assert name.removeprefix("SHOW1_").lower() in message and "placeholder" in message
    assert "show1 secrets" in message
    assert value not in message  # a refused setting is named, never printed


def test_example_files_hold_no_usable_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    example = dotenv_values(REPO / ".env.example")
    assert not any(value and value.startswith("whsec_") for value in example.values())
    for name in SECRET_SETTINGS:
        if name in example:
            assert not example[name] or PLACEHOLDER_MARK in example[name], name
    documents = list(yaml.safe_load_all((REPO / "deploy" / "secret.yaml").read_text()))
    for document in documents:
        for name, value in document["stringData"].items():
            assert PLACEHOLDER_MARK in value, (name, value)
    # A copied .env.example does not start the service until its placeholders are replaced.
    clean_env(monkeypatch, tmp_path)
    (tmp_path / ".env").write_text((REPO / ".env.example").read_text())
    with pytest.raises(ValidationError, match="placeholder"):
        Settings()
    # ... and with `show1 secrets`' values in their place, it does.
    fresh = CliRunner().invoke(main, ["secrets"]).output
    kept = [line for line in (REPO / ".env.example").read_text().splitlines() if PLACEHOLDER_MARK not in line]
    (tmp_path / ".env").write_text("\n".join([*kept, fresh]))
    settings = Settings()
    assert settings.webhook_secret.startswith("whsec_") and len(settings.api_keys) == 1
    assert re.fullmatch(r"[0-9a-f]{64}", settings.s3_secret_access_key)


def test_deploy_docs_list_every_secret():
    readme = (REPO / "deploy" / "README.md").read_text()
    for name in (*SECRET_SETTINGS, "REDIS_PASSWORD", "HF_TOKEN"):
        assert name in readme, name
