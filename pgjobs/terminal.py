"""Text from the database made safe to print on a terminal.

History messages, tracebacks, progress messages and names are written by
handlers and tenants; printed raw, an escape sequence among them could move
the cursor, rewrite what an operator reads, or set the window title. Every
control character (C0, DEL, C1) is shown escaped instead (``\\x1b``).
"""

from __future__ import annotations

_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0)]
_ESCAPED = {c: f"\\x{c:02x}" for c in _CONTROLS}
# Multi-line text (a traceback) keeps its line breaks and indentation.
_ESCAPED_KEEP_LINES = {c: e for c, e in _ESCAPED.items() if chr(c) not in "\n\t"}


def printable(text: str, *, keep_lines: bool = False) -> str:
    return text.translate(_ESCAPED_KEEP_LINES if keep_lines else _ESCAPED)
