"""`.env.example` is the operators' list of settings: it names each one, with its default."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings

EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"


def _example_names() -> set[str]:
    lines = EXAMPLE.read_text().splitlines()
    return {line.partition("=")[0] for line in lines if line.startswith("MSGSYNC_")}


def test_the_example_names_every_setting_and_nothing_else() -> None:
    assert _example_names() == {f"MSGSYNC_{name.upper()}" for name in Settings.model_fields}


def test_the_example_states_the_defaults() -> None:
    from_example = Settings(_env_file=EXAMPLE)
    defaults = Settings(_env_file=None)
    assert from_example.model_dump() == defaults.model_dump()
