"""The README stays true to the code: every setting and every command is documented."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from libs.settings import describe
from libs.stack.dev import DevSettings
from services.cli import COMMANDS

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"^\| `(MF_[A-Z_]+)` \|", README, flags=re.M))
    assert documented == {name for name, _, _ in describe(DevSettings)}


def test_every_command_is_in_the_command_table() -> None:
    built = [name for name, (module, _) in COMMANDS.items() if importlib.util.find_spec(module) is not None]
    assert {"dev", "status", "frame", "simulate"} <= set(built)
    for name in built:
        assert f"`meterflow {name}" in README, name


def test_readme_shows_the_two_commands() -> None:
    assert "make run" in README and "make test" in README
