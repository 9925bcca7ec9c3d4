"""README's CLI reference names every command and option the CLI has."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from bridge import cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
REFERENCE = README.split("## CLI reference", 1)[1].split("\n## ", 1)[0]
# Options every command has, described once above the table rather than in each row.
_COMMON = {"-h", "--help", "-c", "--config", "--version"}
# Options whose values README lists in their own sections ("Enrichment states", "Delivery states").
_CHOICES_ELSEWHERE = {"--state"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _commands(
    parser: argparse.ArgumentParser, prefix: str = "lance-bridge"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for name, sub in _subparsers(parser).items():
        yield f"{prefix} {name}", sub
        yield from _commands(sub, f"{prefix} {name}")


def _rows(command: str) -> list[str]:
    return [line for line in REFERENCE.splitlines() if line.startswith(f"| `{command}")]


def test_every_command_has_a_row() -> None:
    leaves = [name for name, sub in _commands(cli._parser()) if not _subparsers(sub)]
    assert [name for name in leaves if not _rows(name)] == []


def test_every_option_and_choice_is_in_its_commands_row() -> None:
    missing: list[str] = []
    for name, sub in _commands(cli._parser()):
        row = " ".join(_rows(name))
        if _subparsers(sub) or not row:
            continue
        for action in sub._actions:
            flags = set(action.option_strings)
            missing.extend(
                f"{name} {flag}"
                for flag in flags - _COMMON
                if flag.startswith("--") and flag not in row
            )
            if flags and not flags & _CHOICES_ELSEWHERE:
                missing.extend(
                    f"{name} {action.option_strings[0]} {choice}"
                    for choice in action.choices or ()
                    if str(choice) not in row
                )
    assert missing == []


def test_the_common_options_are_described() -> None:
    assert "Every command takes `-c FILE`" in REFERENCE
    assert "`lance-bridge --version`" in REFERENCE
