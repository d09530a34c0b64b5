"""structlog setup: pretty on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys

import structlog

_level = logging.INFO


def enabled(level: int) -> bool:
    """Whether events at ``level`` are written: lets hot paths skip building them."""
    return level >= _level


def configure(level: str = "info", json_lines: bool | None = None) -> None:
    global _level
    _level = logging.getLevelNamesMapping()[level.upper()]
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
