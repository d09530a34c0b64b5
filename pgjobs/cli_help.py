"""Examples shown at the end of each command's ``--help``.

Kept apart from the click declarations so that cli.py stays about parsing. A
command declared with an ``epilog`` of its own keeps it; every command needs
one or the other (tests/test_cli_help.py walks them all).
"""

from __future__ import annotations

import click

EXAMPLES: dict[str, list[str]] = {
    "migrate": [
        "pgjobs migrate",
        'pgjobs migrate --dsn "host=db.internal user=owner dbname=app"',
    ],
    "worker": [
        "pgjobs worker --import myapp.jobs",
        "pgjobs worker -p 4 --queues default,reports --import myapp.jobs --metrics-port 9464",
        "pgjobs worker --import myapp.jobs --exit-when-idle   # drain, then stop",
    ],
    "register": [
        "pgjobs register --import myapp.jobs",
    ],
    "enqueue": [
        'pgjobs enqueue send_report --payload \'{"org_id": "acme", "month": "2026-12"}\' '
        "--org acme",
        "pgjobs enqueue send_report --org acme --delay 5m --dedup-key acme:2026-12",
    ],
    "status": ["pgjobs status 42", "pgjobs status 42 --org acme"],
    "list": [
        "pgjobs list --org acme --state dead",
        "pgjobs list --type send_report --since 2026-10-01 --json",
    ],
    "history": ["pgjobs history 42", "pgjobs history 42 --json"],
    "cancel": ["pgjobs cancel 42", "pgjobs cancel 42 --org acme"],
    "retry": ["pgjobs retry 42", "pgjobs retry --all-dead --type send_report"],
    "demo": ["pgjobs demo", "pgjobs demo --jobs 10000 --processes 4"],
    "metrics": ["pgjobs metrics", "pgjobs metrics --format prometheus"],
    "dead-letter": ["pgjobs dead-letter", "pgjobs dead-letter --org acme --json"],
    "listen": ["pgjobs listen --org acme", "pgjobs listen --job 42 --timeout 60"],
    "watch": ["pgjobs watch 42"],
    "prune": ["pgjobs prune --older-than 30d"],
    "dashboard": [
        "pgjobs dashboard",
        "pgjobs dashboard --port 8465 --allow-actions",
    ],
    "server": [
        "pgjobs server status",
        'psql "$(pgjobs server url)"',
        "pgjobs server stop",
    ],
    "server status": ["pgjobs server status"],
    "server stop": ["pgjobs server stop"],
    "server url": [
        'psql "$(pgjobs server url)"',
        'psql "$(pgjobs server url --database pgjobs_demo)"',
    ],
}


def epilog(lines: list[str]) -> str:
    # \b keeps click from rewrapping the examples into one paragraph.
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def add_examples(group: click.Group, prefix: str = "") -> None:
    """Gives every command of ``group`` (and of its subgroups) its examples."""
    for name, command in group.commands.items():
        key = f"{prefix}{name}"
        if not command.epilog and key in EXAMPLES:
            command.epilog = epilog(EXAMPLES[key])
        if isinstance(command, click.Group):
            add_examples(command, prefix=f"{key} ")
