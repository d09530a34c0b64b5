"""``async with pgjobs.aio.tenant(aconn, org)``: :func:`pgjobs.tenant` awaitable.

The checks and the statements are the blocking ``tenant``'s own
(:func:`pgjobs.tenancy.entering`, :func:`pgjobs.tenancy.still_scoped`); the
block joins the caller's transaction and restores the previous scope.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from pgjobs import _conn
from pgjobs.statements import arun
from pgjobs.statements import tenancy as statements
from pgjobs.tenancy import entering, still_scoped


@contextlib.asynccontextmanager
async def tenant(conn: Any, organization: str, *, actor: str | None = None) -> AsyncIterator[Any]:
    """Scopes the caller's transaction to one organization for the block
    (see :func:`pgjobs.tenant`). Yields ``conn`` as given."""
    pg = await _conn.araw(conn)
    entered = await arun(pg, statements.tenant_enter.bind(**entering(pg, organization, actor)))
    try:
        yield conn
    finally:
        if still_scoped(pg):
            await arun(pg, statements.tenant_restore.bind(entered))
