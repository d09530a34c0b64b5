"""The README's five-minute tour as a list of steps a test can run.

Each fenced block of the tour section is one step:

- ``sh``: run by bash (``set -e``); a block starting ``pgjobs worker`` is the
  long-running worker, started in the background;
- ``python`` whose first line is ``# path/to/file.py``: that file is written;
  any other ``python``: run as a script from the project directory;
- ``sql``: run by psql with ``ON_ERROR_STOP``;
- an unlabelled block of ``$ command`` lines: a shell transcript; of
  ``app=# query`` lines: a psql transcript. Each command runs, and what the
  README shows after it is what it is compared with.

The only substitutions are the ones a reader makes too: the example DSN becomes
the test database's, and the metrics port a free one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parent.parent.parent / "README.md"
EXAMPLE_DSN = "host=127.0.0.1 user=postgres dbname=app"
EXAMPLE_METRICS_PORT = "9464"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass
class Command:
    """One ``$`` or ``app=#`` line of a transcript and the output shown after it."""

    text: str
    output: list[str] = field(default_factory=list)


@dataclass
class Step:
    kind: str  # sh, worker, file, python, sql, shell-transcript, psql-transcript
    text: str
    path: str | None = None
    commands: list[Command] = field(default_factory=list)


def tour_text(readme: Path = README) -> str:
    text = readme.read_text()
    start = text.index("## A five-minute tour")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def steps(section: str | None = None) -> list[Step]:
    found = []
    for match in _FENCE.finditer(section if section is not None else tour_text()):
        lang, body = match.group(1), match.group(2)
        found.append(_step(lang, body))
    return found


def _step(lang: str, body: str) -> Step:
    if lang == "sh":
        kind = "worker" if body.lstrip().startswith("pgjobs worker") else "sh"
        return Step(kind, body)
    if lang == "python":
        first = body.splitlines()[0]
        if first.startswith("# ") and first.endswith(".py"):
            return Step("file", body, path=first[2:].strip())
        return Step("python", body)
    if lang == "sql":
        return Step("sql", body)
    if body.startswith("$ "):
        return Step("shell-transcript", body, commands=_transcript(body, "$ ", None))
    if body.startswith("app=# "):
        return Step("psql-transcript", body, commands=_transcript(body, "app=# ", "app-# "))
    raise AssertionError(f"a tour block the test cannot run: {body[:60]!r}")


def _transcript(body: str, prompt: str, continuation: str | None) -> list[Command]:
    commands: list[Command] = []
    for line in body.splitlines():
        if line.startswith(prompt):
            commands.append(Command(line[len(prompt) :]))
        elif continuation is not None and line.startswith(continuation):
            commands[-1].text += "\n" + line[len(continuation) :]
        else:
            commands[-1].output.append(line)
    for command in commands:
        while command.output and not command.output[-1].strip():
            command.output.pop()
    return commands


def normalized(line: str) -> str:
    """A line with its numbers and runs of blanks made comparable: timings,
    sizes and pids differ from run to run, the shape of the output does not."""
    line = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "9", line)
    return " ".join(line.split())
