"""Running one prompt: cache, node order, timing, WebSocket messages, faults.

The message sequence is what clients are written against, so it follows the captures:
`execution_start`, `execution_cached`, then per node `progress_state` / `executing` /
(`progress`) / (`executed`) / `progress_state`, and `execution_success`, `execution_error` or
`execution_interrupted`. Routing follows the real server: most messages only reach the socket
whose sid is the prompt's client_id; progress messages reach everyone when there is none.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from hotfolder.sim.api import ApiBehaviour
from hotfolder.sim.assets import registered, with_media_metadata
from hotfolder.sim.catalog import Catalog
from hotfolder.sim.failures import (
    current_inputs,
    node_failure,
    out_of_memory,
    type_and_traceback,
)
from hotfolder.sim.faults import FaultState
from hotfolder.sim.graph import ExecutionList, is_link, signatures, trim_cache
from hotfolder.sim.hub import SocketHub
from hotfolder.sim.imagefiles import encode_jpeg
from hotfolder.sim.imaging import ImageBatch, blend_towards_grey, resize
from hotfolder.sim.models import ModelMemory, models_needed
from hotfolder.sim.nodes import SAMPLERS, planned_steps, run_node
from hotfolder.sim.outputs import OUTPUT_NODES


class Interrupted(Exception):
    """POST /interrupt reached this node (or the simulator is stopping)."""


def history_lag(job_seconds: float) -> float:
    """The pause between `execution_success` and the history entry; part of job_seconds."""
    return min(0.02, max(0.0, float(job_seconds)) * 0.1)


@dataclass
class CacheEntry:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None


class EngineState(Protocol):
    """What a run uses of the engine (`engine.Engine`, which imports this module)."""

    api: ApiBehaviour
    catalog: Catalog
    hub: SocketHub
    faults: FaultState
    input_dir: str
    output_dir: str
    temp_dir: str
    job_seconds: float
    preview_method: str | None
    cache: dict[str, CacheEntry]
    models: ModelMemory
    asset_ids: dict[str, str]
    interrupt_event: threading.Event
    client_id: str | None  # client of the running prompt, for a reconnect's replay
    last_node_id: str | None


class PromptRun:
    """Executes one queue item on the engine's single worker thread."""

    def __init__(self, engine: EngineState, item: list[Any]) -> None:
        self.engine = engine
        self.hub = engine.hub
        self.catalog = engine.catalog
        self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute = item[
            :5
        ]
        self.client_id = (
            self.extra_data.get("client_id") if "client_id" in self.extra_data else None
        )
        self.messages: list[list[Any]] = []
        self.executed: list[str] = []
        self.ui: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}
        self.progress: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self.inputs: dict[str, Any] = {}
        self.fail_node: str | None = None
        self.fail_step = 0
        self.step_seconds = 0.0
        self.node_seconds = 0.0
        self.clock = time.monotonic()
        self.models = models_needed(self.prompt, self.outputs_to_execute)
        self.model_load = False  # whether this run had to load its models first
        # NodeContext / OutputContext attributes
        self.input_dir = engine.input_dir
        self.output_dir = engine.output_dir
        self.temp_dir = engine.temp_dir

    # -- messages ---------------------------------------------------------------------------
    def _add_message(self, event: str, data: dict[str, Any], broadcast: bool = False) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.hub.send(event, data, self.client_id)

    def _to_client(self, event: str, data: dict[str, Any]) -> None:
        if self.client_id is not None:
            self.hub.send(event, data, self.client_id)

    def _progress_state(self, node_id: str, value: Any, maximum: Any, state: str) -> None:
        self.progress[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        nodes = {k: dict(v) for k, v in self.progress.items()}
        self.hub.send(
            "progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, self.client_id
        )

    # -- timing -----------------------------------------------------------------------------
    def _spend(self, seconds: float) -> None:
        """Sleep towards a running deadline so thousands of tiny steps do not drift."""
        if seconds > 0:
            self.clock = max(self.clock, time.monotonic() - 0.05) + seconds
            remaining = self.clock - time.monotonic()
            if remaining > 0:
                self.engine.interrupt_event.wait(remaining)
        if self.engine.interrupt_event.is_set():
            raise Interrupted()

    # -- NodeContext / OutputContext API ----------------------------------------------------
    def random_letters(self, count: int) -> str:
        return self.engine.faults.random_letters(count)

    def sample(self, steps: int, final: ImageBatch | None) -> None:
        node_id = self.current or ""
        preview_source = None
        if final is not None and final.frames and self.engine.preview_method:
            width, height = min(final.width, 64), min(final.height, 64)
            preview_source = (
                width,
                height,
                resize(final.frames[0], final.width, final.height, width, height),
            )
        for step in range(1, steps + 1):
            self._spend(self.step_seconds)
            if node_id == self.fail_node and step >= self.fail_step:
                raise out_of_memory()
            self._progress_state(node_id, step, steps, "running")
            preview = None
            if preview_source is not None:
                width, height, pixels = preview_source
                preview = (
                    "JPEG",
                    encode_jpeg(width, height, blend_towards_grey(pixels, step / steps), 75),
                )
            self._send_progress(node_id, step, steps, preview)

    def send_images(self, pngs: list[bytes]) -> None:
        node_id = self.current or ""
        for index, png in enumerate(pngs):
            self._progress_state(node_id, index, len(pngs), "running")
            self._send_progress(node_id, index, len(pngs), ("PNG", png))

    def _send_progress(
        self, node_id: str, value: int, maximum: int, image: tuple[str, bytes] | None
    ) -> None:
        data = {"value": value, "max": maximum, "prompt_id": self.prompt_id, "node": node_id}
        meta = {
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        self.hub.send_progress(data, image, meta, self.client_id)

    # -- execution --------------------------------------------------------------------------
    def execute(self) -> tuple[bool, dict[str, Any]]:
        engine = self.engine
        engine.interrupt_event.clear()
        engine.client_id = self.client_id
        self._add_message("execution_start", {"prompt_id": self.prompt_id})
        sigs = signatures(self.prompt, self.input_dir)
        cache = engine.cache
        trim_cache(cache, set(sigs.values()), engine.api.cache_entries)
        cached_nodes = [n for n in self.prompt if sigs[n] in cache]
        self._add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": self.prompt_id})

        def is_cached(node_id: str) -> bool:
            return sigs.get(node_id) in cache and node_id != self.fail_node

        order = ExecutionList(
            self.prompt, lambda n: self.catalog.is_output(self._class(n)), is_cached
        )
        for output in self.outputs_to_execute:
            order.add_node(output)
        self._plan(order)
        success = True
        try:
            self._load_models()
            while not order.is_empty():
                node_id = order.stage()
                if is_cached(node_id):
                    self._emit_cached(node_id, cache[sigs[node_id]])
                else:
                    cache[sigs[node_id]] = self._run(node_id, sigs)
                order.complete(node_id)
        except Interrupted:
            success = False
            self._add_message(
                "execution_interrupted",
                {
                    "prompt_id": self.prompt_id,
                    "node_id": self.current,
                    "node_type": self._class(self.current),
                    "executed": list(self.executed),
                },
                broadcast=True,
            )
        except Exception as exc:  # noqa: BLE001 - a node failure, reported like ComfyUI does
            success = False
            self._report_error(exc)
        else:
            self._add_message("execution_success", {"prompt_id": self.prompt_id})
        engine.last_node_id = None
        trim_cache(cache, set(sigs.values()), engine.api.cache_entries)
        order_keys = [n for n in self.prompt if n in self.ui]
        return success, {
            "outputs": {n: self.ui[n] for n in order_keys},
            "meta": {n: self.meta[n] for n in order_keys},
        }

    def _load_models(self) -> None:
        """Before the first node, as the GPU time of a model switch (no message of its own)."""
        seconds = self.engine.models.begin(self.models)
        if seconds is not None:
            self.model_load = True
            self._spend(seconds)
            self.engine.models.loaded_now(self.models, seconds)

    def _class(self, node_id: str | None) -> str:
        node = self.prompt.get(node_id) if node_id is not None else None
        return node.get("class_type", "") if isinstance(node, dict) else ""

    def _plan(self, order: ExecutionList) -> None:
        """Spread job_seconds over the sampler steps (or the nodes) that will really run."""
        # the history lag after success is part of the simulated GPU time, so a prompt keeps
        # the worker busy for job_seconds in all, as the benchmarks assume
        job_seconds = max(0.0, float(self.engine.job_seconds)
                          - history_lag(self.engine.job_seconds))
        will_run = order.will_run()
        if self.engine.faults.take_execution_failure():
            samplers = [n for n in will_run if self._class(n) in SAMPLERS]
            if samplers:
                self.fail_node = samplers[0]
                self.fail_step = max(1, planned_steps(self.prompt, samplers[0]) // 2)
            elif will_run:
                self.fail_node = max(will_run, key=list(self.prompt).index)
            elif self.outputs_to_execute:
                self.fail_node = self.outputs_to_execute[0]
        steps = sum(planned_steps(self.prompt, n) for n in will_run if self._class(n) in SAMPLERS)
        if steps:
            self.step_seconds = job_seconds / steps
        elif will_run:
            self.node_seconds = job_seconds / len(will_run)
        self.clock = time.monotonic()

    def _emit_cached(self, node_id: str, entry: CacheEntry) -> None:
        if entry.ui is not None:
            self._record_ui(node_id, entry.ui)
        self._progress_state(node_id, 1, 1, "finished")

    def _folders(self) -> dict[str, str]:
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}

    def _record_ui(self, node_id: str, ui: dict[str, Any]) -> None:
        """An output node's result, fresh or cached, into history and `executed`."""
        if self.engine.api.output_assets:
            ui = registered(ui, self._folders(), self.engine.asset_ids)
        self.ui[node_id] = ui
        self.meta[node_id] = {
            "node_id": node_id,
            "display_node": node_id,
            "parent_node": None,
            "real_node_id": node_id,
        }
        self._to_client(
            "executed",
            {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.prompt_id},
        )

    def _resolve(self, node_id: str, sigs: dict[str, str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, value in self.prompt[node_id].get("inputs", {}).items():
            if is_link(value):
                entry = self.engine.cache.get(sigs.get(value[0], ""))
                values[name] = (
                    entry.outputs[value[1]] if entry and value[1] < len(entry.outputs) else None
                )
            else:
                values[name] = value
        return values

    def _run(self, node_id: str, sigs: dict[str, str]) -> CacheEntry:
        class_type = self._class(node_id)
        self.current = node_id
        self._progress_state(node_id, 0.0, 1.0, "running")
        self.inputs = self._resolve(node_id, sigs)
        if self.client_id is not None:
            self.engine.last_node_id = node_id
        self._to_client(
            "executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id}
        )
        self._spend(0.0)  # interrupt check at the node boundary
        if node_id == self.fail_node and class_type not in SAMPLERS:
            raise node_failure(class_type)
        if class_type not in SAMPLERS:
            self._spend(self.node_seconds)
        ui = None
        if class_type in OUTPUT_NODES:
            ui = OUTPUT_NODES[class_type](self.inputs, self)
            outputs: tuple[Any, ...] = ()
        else:
            outputs = run_node(class_type, self.inputs, self.catalog.outputs(class_type), self)
        if ui and self.engine.api.output_assets:
            ui = with_media_metadata(ui, self._folders())  # what the cache keeps
        if ui:
            self._record_ui(node_id, ui)
        state = self.progress.get(node_id, {})
        if class_type in SAMPLERS or class_type == "SaveImageWebsocket":
            value = maximum = state.get("max", 1.0)  # a stepped node finishes at its last step
        else:
            value = maximum = 1.0
        self._progress_state(node_id, value, maximum, "finished")
        self.executed.append(node_id)
        return CacheEntry(outputs, ui)

    def _report_error(self, exc: Exception) -> None:
        class_type = self._class(self.current)
        type_name, frames = type_and_traceback(exc, class_type)
        node_id = self.current or ""
        inputs_class = self._class(node_id)
        hidden = self.catalog.hidden(inputs_class) if inputs_class in self.catalog else {}
        self._add_message(
            "execution_error",
            {
                "prompt_id": self.prompt_id,
                "node_id": self.current,
                "node_type": class_type,
                "executed": list(self.executed),
                "exception_message": str(exc),
                "exception_type": type_name,
                "traceback": frames,
                "current_inputs": current_inputs(
                    node_id, self.inputs, hidden, self.prompt, self.extra_data
                ),
                "current_outputs": list(self.prompt),
            },
        )
