"""The state relay (``sql/queries/relay.sql``): sends the state events the
worker's sessions left in the outbox, as pgjobs_state NOTIFYs."""

from __future__ import annotations

from typing import Any

from pgjobs.statements.base import Params, statement


def _ids(found: list[Any]) -> list[int]:
    return [row[0] for row in found]


@statement("state_relay", _ids)
def state_relay(*, after: int, n: int) -> Params:
    """Sends and deletes up to ``n`` outbox rows past id ``after``; their ids
    (none while another session relays)."""
    return {"after": after, "n": n}
