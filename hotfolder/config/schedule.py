"""The `schedule:` section: how waiting jobs are matched to free servers (daemon/schedule.py).

`schedule: fifo` is short for `{policy: fifo}`.
"""

from __future__ import annotations

from typing import Any

from hotfolder.config.model import ScheduleConfig
from hotfolder.config.problems import Problems

POLICIES = ("models", "fifo")


def parse_schedule(value: Any, p: Problems) -> ScheduleConfig:
    d = ScheduleConfig()
    if isinstance(value, str):
        value = {"policy": value}
    data = p.mapping(value, "schedule", tuple(ScheduleConfig.__dataclass_fields__))
    return ScheduleConfig(
        policy=p.choice(data, "policy", "schedule", d.policy, POLICIES),
        max_reorder_seconds=p.number(data, "max_reorder_seconds", "schedule",
                                     d.max_reorder_seconds),
        max_overtaken=p.number(data, "max_overtaken", "schedule", d.max_overtaken,
                               integer=True),
        switch_wait_seconds=p.number(data, "switch_wait_seconds", "schedule",
                                     d.switch_wait_seconds, maximum=30),
    )
