"""Every command's --help teaches: a purpose that fits the command list, a
description per option, and examples. Commands added later are walked too."""

from __future__ import annotations

import re
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
    # The purpose is what `pgjobs --help` lists: it must not be cut with "...".
    purpose = command.get_short_help_str(limit=PURPOSE_WIDTH)
    assert purpose, f"{path}: no one-line purpose"
    assert not purpose.endswith("..."), f"{path}: purpose longer than {PURPOSE_WIDTH}: {purpose}"
    undescribed = [
        p.name for p in command.params if isinstance(p, click.Option) and not (p.help or "").strip()
    ]
    assert not undescribed, f"{path}: options without a description: {undescribed}"

    shown = CliRunner().invoke(main, [*path, "--help"])
    assert shown.exit_code == 0, shown.output
    assert purpose in " ".join(shown.output.split())
    examples = re.split(r"^\s*Examples?:$", shown.output, maxsplit=1, flags=re.MULTILINE)
    assert len(examples) == 2, f"{path}: no Example section"
    lines = [line.strip() for line in examples[1].splitlines() if line.strip()]
    assert lines and "pgjobs" in lines[0], lines
    assert " ".join(path) in examples[1] or f"pgjobs {path[0]}" in examples[1], lines
