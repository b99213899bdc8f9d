"""The simulated GPU's loaded models: what switching checkpoints costs.

A real server keeps the models of the last prompt in VRAM; a prompt naming other model files
waits while they load, often longer than it computes. Schedulers that group jobs by model are
judged by that cost, so the simulator charges it: a prompt whose set of model files differs
from the loaded set spends `load_seconds` first and counts a load. A prompt naming no model
file needs none and leaves the loaded set alone. The default, 0 s, is free switching.

Each run is logged (`GET /sim/runs`) with its model set, whether it loaded, and its start and
end, so benchmarks can count loads and see the order in which jobs really ran.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from hotfolder.sim.graph import is_link

MAX_RUNS = 10_000  # the run log keeps the latest, like the history
MAX_NODES = 10_000  # a prompt is walked no further than this (it is untrusted input)

# inputs that name a model file, on nodes whose class is a loader
MODEL_INPUTS = frozenset({
    "ckpt_name", "unet_name", "vae_name", "lora_name", "model_name", "control_net_name",
})


def _is_model_input(name: str) -> bool:
    return name in MODEL_INPUTS or name.startswith("clip_name")


def models_needed(prompt: dict[str, Any], outputs: Iterable[str]) -> frozenset[str]:
    """The model files named by the loader nodes the outputs depend on (what would run)."""
    seen: set[str] = set()
    todo = [o for o in outputs if isinstance(o, str)]
    found: set[str] = set()
    while todo and len(seen) < MAX_NODES:
        node_id = todo.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        node = prompt.get(node_id)
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        loader = "Loader" in str(node.get("class_type", ""))
        for name, value in inputs.items():
            if is_link(value):
                todo.append(value[0])
            elif loader and isinstance(value, str) and _is_model_input(name):
                found.add(value)
    return frozenset(found)


class ModelMemory:
    """The loaded set, the load counter and the run log; shared by the worker and HTTP threads."""

    def __init__(self, load_seconds: float = 0.0) -> None:
        self.load_seconds = float(load_seconds)
        self.loaded: frozenset[str] = frozenset()
        self.loads = 0
        self.seconds_loading = 0.0
        self.runs: deque[dict[str, Any]] = deque(maxlen=MAX_RUNS)
        self._lock = threading.Lock()

    def begin(self, models: frozenset[str]) -> float | None:
        """Seconds this prompt must spend loading first; None when its models are in place.

        The loaded set is emptied while loading: an interrupted load leaves nothing usable.
        """
        with self._lock:
            if not models or models == self.loaded:
                return None
            self.loads += 1
            self.loaded = frozenset()
            return self.load_seconds

    def loaded_now(self, models: frozenset[str], seconds: float) -> None:
        with self._lock:
            self.loaded = models
            self.seconds_loading += seconds

    def unload(self) -> None:
        """POST /free with unload_models: the next prompt loads whatever it needs."""
        with self._lock:
            self.loaded = frozenset()

    def record(self, prompt_id: str, models: frozenset[str], loaded: bool, started: float,
               success: bool) -> None:
        with self._lock:
            self.runs.append({"prompt_id": prompt_id, "models": sorted(models),
                              "model_load": loaded, "started_at": round(started, 4),
                              "finished_at": round(time.time(), 4), "success": success})

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {"model_loads": self.loads,
                    "model_load_seconds_spent": round(self.seconds_loading, 3),
                    "loaded_models": sorted(self.loaded)}

    def report(self) -> dict[str, Any]:
        out = self.counters()
        with self._lock:
            out["model_load_seconds"] = self.load_seconds
            out["runs"] = list(self.runs)
        return out
