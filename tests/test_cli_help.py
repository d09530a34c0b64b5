"""Every command's --help teaches: a purpose that fits the command list, a
description per option, and examples. Commands added later are walked too."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from pgjobs.cli import main

# What `pgjobs --help` shows of a purpose before it cuts it with "...".
PURPOSE_WIDTH = 60


def every_command(
    group: click.Group = main, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))


COMMANDS = list(every_command())


def test_the_walk_finds_the_commands_of_the_spec() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"migrate", "worker", "register", "enqueue", "server status", "server url"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_has_a_purpose_option_descriptions_and_an_example(
    path: tuple[str, ...], command: click.Command
) -> None:
    purpose = (command.help or "").strip().splitlines()[0] if command.help else ""
    assert purpose, f"{path}: no one-line purpose"
    assert len(purpose) <= PURPOSE_WIDTH, f"{path}: purpose longer than {PURPOSE_WIDTH}"
    undescribed = [
        p.name for p in command.params if isinstance(p, click.Option) and not (p.help or "").strip()
    ]
    assert not undescribed, f"{path}: options without a description: {undescribed}"

    shown = CliRunner().invoke(main, [*path, "--help"])
    assert shown.exit_code == 0, shown.output
    assert purpose in shown.output
    examples = shown.output.split("Examples:", 1)
    assert len(examples) == 2, f"{path}: no Examples section"
    lines = [line.strip() for line in examples[1].splitlines() if line.strip()]
    assert lines and all("pgjobs" in line for line in lines), lines
    assert any(line.startswith(f"pgjobs {path[0]}") for line in lines) or any(
        " ".join(path) in line for line in lines
    ), lines
