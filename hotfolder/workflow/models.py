"""The model files a workflow loads: what a ComfyUI server must have in memory to run it.

Loading a different checkpoint costs seconds to tens of seconds on a real GPU, so the daemon
keeps each server on the models it has (daemon/schedule.py). Loader nodes name their files in
inputs ending in `_name` (`ckpt_name`, `unet_name`, `lora_name`, `clip_name1`, ...), or
`name` alone (ModelPatchLoader); only literal strings count: a name fed by a link is not
known before the graph runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_MODEL_INPUT = re.compile(r"(?:^|_)name\d*$")


def models_of(workflow: Mapping[str, Any]) -> frozenset[str]:
    """The model files named by the loader nodes of an API-format workflow."""
    found = set()
    for node in workflow.values():
        if not isinstance(node, Mapping):
            continue
        cls, inputs = node.get("class_type"), node.get("inputs")
        if not isinstance(cls, str) or "Loader" not in cls or not isinstance(inputs, Mapping):
            continue
        for key, value in inputs.items():
            if isinstance(value, str) and value and isinstance(key, str) \
                    and _MODEL_INPUT.search(key):
                found.add(value)
    return frozenset(found)


def is_model_input(name: str) -> bool:
    """Whether an input of a loader node names a model file (a `set:` that changes models)."""
    return bool(_MODEL_INPUT.search(name))
