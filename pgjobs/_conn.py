"""The one door every public function's connection argument goes through.

Today pgjobs speaks psycopg 3 only, so a connection passes unchanged. Adapters
for other ways of holding a connection (a SQLAlchemy ``Connection`` or
``Session``, Django's connection) belong here, and nowhere else: each public
function calls :func:`raw` once and works on what it returns.
"""

from __future__ import annotations

from typing import Any

import psycopg


def raw(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The psycopg connection behind ``conn``, on the caller's transaction."""
    return conn
