"""The gate: how many of one supervisor's processes may be inside a claim or a
completion write at once.

With many more processes than cores, every process that claims or writes at
once is a server session doing it beside the others, and one descheduled
mid-statement holds its rows locked meanwhile. At 64 processes on 2 cores the
server's CPU per job was 1.3-1.8x that at 8 and the claims smaller (issue 19,
docs/scaling.md section 1). The gate lets one process per CPU in; the rest
wait their turn outside, holding nothing; their outcomes wait in the buffer
meanwhile, so their writes, like their claims, carry more jobs.

The slots are POSIX record locks (``lockf``) on the bytes of one unlinked file
the supervisor opens before it forks: the kernel drops a process's locks when
it ends, however it ends, so a process killed while inside never holds a slot
its siblings wait for. A process waits for a slot only between statements
(the claim and the write are autocommit statements of its control session,
and a handler's own transaction is never gated), so no wait happens while it
holds a row lock or a snapshot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator

# A gate opens once the processes outnumber the CPUs this many times. On 2
# cores (docs/scaling.md section 1) one slot per CPU raised 16, 32 and 64
# processes' completions/s 1.1-3x, but cost 8 processes about a tenth; two
# slots per CPU left 64 processes where they were in some runs.
_PROCESSES_PER_CPU = 4
# Tests and benchmarks only: a width whatever the processes (0: no gate).
WIDTH_ENV = "PGJOBS_GATE_WIDTH"


def width_for(processes: int) -> int:
    """How many processes may be inside at once, 0 for no gate: one per CPU
    this process may run on, once the processes are many more than those."""
    forced = os.environ.get(WIDTH_ENV)
    if forced is not None:
        return int(forced)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return cpus if processes > _PROCESSES_PER_CPU * cpus else 0


class Gate:
    """``width`` slots shared by the processes forked after it is made."""

    def __init__(self, width: int) -> None:
        self.width = width
        fd, path = tempfile.mkstemp(prefix="pgjobs-gate-")
        os.unlink(path)  # nothing left behind, however the supervisor ends
        self.fd = fd
        self.held = -1  # the slot this process holds

    def close(self) -> None:
        os.close(self.fd)

    @contextlib.contextmanager
    def passage(self, index: int) -> Iterator[None]:
        """Inside while a slot is held; a passage nested in one is free."""
        if self.held >= 0:
            yield
            return
        self.held = self._take(index)
        try:
            yield
        finally:
            self._give()

    def _take(self, index: int) -> int:
        """A free slot if there is one, else waits (asleep, in the kernel) for
        the one this process is given, which a sibling leaves within its
        statement, or at its death."""
        for i in range(self.width):
            slot = (index + i) % self.width
            if self._try(slot):
                return slot
        slot = index % self.width
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, slot)
        return slot

    def _try(self, slot: int) -> bool:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
        except OSError:  # EAGAIN or EACCES: a sibling holds it
            return False
        return True

    def _give(self) -> None:
        slot, self.held = self.held, -1
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, slot)


def passage(gate: Gate | None, index: int) -> contextlib.AbstractContextManager[None]:
    """``gate``'s passage, or none without a gate."""
    return contextlib.nullcontext() if gate is None else gate.passage(index)
