"""Periodic jobs: schedules as rows, fired once per tick by any live worker."""

from pgjobs.schedules.api import (
    list_schedules,
    pause_schedule,
    resume_schedule,
    schedule,
    trigger_schedule,
    unschedule,
)

__all__ = [
    "list_schedules",
    "pause_schedule",
    "resume_schedule",
    "schedule",
    "trigger_schedule",
    "unschedule",
]
