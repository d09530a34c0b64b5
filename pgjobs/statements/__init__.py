"""The typed statement layer: one Python function per named query of ``sql/queries``.

Library code and tests run statements through these, never by query name with
a hand-built dict. See :mod:`pgjobs.statements.base` for the shape (logic
without I/O, one thin executor per kind of connection).
"""

from pgjobs.statements.base import Bound, Statement, arun, run, run_writes
from pgjobs.statements.claim import ClaimedJob
from pgjobs.statements.outcomes import Completed, Failed, Lease, Leased, Outcome

__all__ = [
    "Bound",
    "ClaimedJob",
    "Completed",
    "Failed",
    "Lease",
    "Leased",
    "Outcome",
    "Statement",
    "arun",
    "run",
    "run_writes",
]
