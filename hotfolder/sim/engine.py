"""The simulated GPU: one queue, one worker thread, in-memory history.

Mirrors ComfyUI's PromptQueue: a min-heap on (number, prompt_id) (so `/queue` shows the heap
array, not execution order), `status` broadcasts on every queue change, history written only
after `execution_success`/`execution_error` went out, and the final `executing {node: null}`
after that. Unlike the real server the heap never compares prompt dicts, so equal
(number, prompt_id) pairs do not kill the worker.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import threading
import time
from typing import Any

import structlog

from hotfolder.sim.api import API_0_3_64, ApiBehaviour
from hotfolder.sim.catalog import Catalog
from hotfolder.sim.executor import CacheEntry, PromptRun, history_lag
from hotfolder.sim.faults import FaultState
from hotfolder.sim.hub import SocketHub
from hotfolder.sim.models import ModelMemory

log = structlog.get_logger()

MAX_HISTORY = 10_000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


class Engine:
    def __init__(
        self,
        catalog: Catalog,
        hub: SocketHub,
        faults: FaultState,
        *,
        output_dir: str,
        input_dir: str,
        temp_dir: str,
        job_seconds: float,
        preview_method: str | None = None,
        api: ApiBehaviour = API_0_3_64,
        model_load_seconds: float = 0.0,
    ) -> None:
        self.api = api
        self.catalog = catalog
        self.hub = hub
        self.faults = faults
        self.output_dir = output_dir
        self.input_dir = input_dir
        self.temp_dir = temp_dir
        self.job_seconds = job_seconds
        self.preview_method = preview_method
        self.mutex = threading.RLock()
        self.not_empty = threading.Condition(self.mutex)
        self.queue: list[tuple[Any, str, int, list[Any]]] = []
        self.running: dict[int, list[Any]] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.cache: dict[str, CacheEntry] = {}  # oldest first (the LRU order when api keeps many)
        self.models = ModelMemory(model_load_seconds)
        self.asset_ids: dict[str, str] = {}  # output file path -> asset id (api.output_assets)
        self.number = 0
        self._seq = itertools.count()
        self._task_ids = itertools.count()
        self.interrupt_event = threading.Event()
        self.client_id: str | None = None  # client of the running prompt (reconnect replay)
        self.last_node_id: str | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.stats: dict[str, Any] = {
            "prompts_received": 0,
            "prompts_executed": 0,
            "executions_failed": 0,
            "executions_interrupted": 0,
            "max_queue_remaining": 0,
            "busy_seconds": 0.0,
            "idle_gaps": 0,
            "started_at": time.time(),
        }

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._worker, name="sim-gpu-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self.mutex:
            self._stopping = True
            self.not_empty.notify_all()
        self.interrupt_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- queue (called from HTTP threads) ---------------------------------------------------
    def next_number(self, front: bool) -> int:
        with self.mutex:
            number = -self.number if front else self.number
            self.number += 1
            return number

    def put(
        self,
        number: Any,
        prompt_id: str,
        prompt: dict[str, Any],
        extra_data: dict[str, Any],
        outputs: list[str],
    ) -> None:
        sensitive = {k: extra_data.pop(k) for k in SENSITIVE_EXTRA_DATA_KEYS if k in extra_data}
        if self.api.create_time:
            extra_data["create_time"] = int(time.time() * 1000)
        item = [number, prompt_id, prompt, extra_data, outputs, sensitive]
        with self.mutex:
            heapq.heappush(self.queue, (number, prompt_id, next(self._seq), item))
            self.stats["prompts_received"] += 1
            remaining = len(self.queue) + len(self.running)
            self.stats["max_queue_remaining"] = max(self.stats["max_queue_remaining"], remaining)
            self._queue_updated()
            self.not_empty.notify()

    def remaining(self) -> int:
        with self.mutex:
            return len(self.queue) + len(self.running)

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.remaining()}}

    def _queue_updated(self) -> None:
        self.hub.send("status", {"status": self.queue_info()}, None)

    def current_queue(self) -> tuple[list[list[Any]], list[list[Any]]]:
        with self.mutex:
            running = [copy.deepcopy(item[:5]) for item in self.running.values()]
            pending = [copy.deepcopy(entry[3][:5]) for entry in self.queue]
        return running, pending

    def delete_pending(self, prompt_id: Any) -> bool:
        with self.mutex:
            for index, entry in enumerate(self.queue):
                if entry[1] == prompt_id:
                    self.queue.pop(index)
                    heapq.heapify(self.queue)
                    self._queue_updated()
                    return True
        return False

    def clear_pending(self) -> None:
        with self.mutex:
            self.queue = []
            self._queue_updated()

    def interrupt(self, prompt_id: Any = None) -> None:
        """Global when prompt_id is falsy; otherwise only if that prompt is the running one."""
        with self.mutex:
            if prompt_id and not any(item[1] == prompt_id for item in self.running.values()):
                return
            self.interrupt_event.set()

    def interrupt_if_running(self, prompt_id: str) -> bool:
        """Interrupt that prompt only if it is the running one, atomically (a job cancel)."""
        with self.mutex:
            if any(item[1] == prompt_id for item in self.running.values()):
                self.interrupt_event.set()
                return True
        return False

    # -- history ----------------------------------------------------------------------------
    def get_history(
        self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1
    ) -> dict[str, Any]:
        with self.mutex:
            if prompt_id is not None:
                entry = self.history.get(prompt_id)
                return {} if entry is None else {prompt_id: copy.deepcopy(entry)}
            if offset < 0 and max_items is not None:
                offset = len(self.history) - max_items
            out: dict[str, Any] = {}
            for index, key in enumerate(self.history):
                if index >= offset:
                    out[key] = copy.deepcopy(self.history[key])
                    if max_items is not None and len(out) >= max_items:
                        break
            return out

    def delete_history(self, prompt_id: Any) -> None:
        with self.mutex:
            if isinstance(prompt_id, str):
                self.history.pop(prompt_id, None)

    def clear_history(self) -> None:
        with self.mutex:
            self.history.clear()

    # -- worker -----------------------------------------------------------------------------
    def _take(self) -> tuple[int, list[Any]] | None:
        with self.not_empty:
            while not self.queue and not self._stopping:
                self.not_empty.wait(1.0)
            if self._stopping:
                return None
            item = heapq.heappop(self.queue)[3]
            task_id = next(self._task_ids)
            self.running[task_id] = item
            self._queue_updated()
            return task_id, item

    def _worker(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            task_id, item = taken
            started, started_at = time.monotonic(), time.time()
            run = PromptRun(self, item)
            try:
                success, result = run.execute()
            except Exception:
                log.exception("sim.worker_crash", prompt_id=item[1])
                success, result = False, {"outputs": {}, "meta": {}}
            self._finish(task_id, item, success, result, run.messages, started)
            self.models.record(item[1], run.models, run.model_load, started_at, success)

    def _finish(
        self,
        task_id: int,
        item: list[Any],
        success: bool,
        result: dict[str, Any],
        messages: list[Any] | None,
        started: float,
    ) -> None:
        client_id = item[3].get("client_id")
        # execution_success/_error is out before the history entry exists, as in ComfyUI: a
        # client that asks /history right after it may still get {}.
        if client_id is not None:
            self.hub.flush(client_id, timeout=0.5)
        lag = history_lag(self.job_seconds)
        if lag:
            time.sleep(lag)
        with self.mutex:
            self.running.pop(task_id, None)
            if len(self.history) >= MAX_HISTORY and item[1] not in self.history:
                self.history.pop(next(iter(self.history)))
            entry: dict[str, Any] = {
                "prompt": copy.deepcopy(item[:5]),
                "outputs": {},
                "status": {
                    "status_str": "success" if success else "error",
                    "completed": success,
                    "messages": messages or [],
                },
            }
            entry.update(result)
            self.history[item[1]] = entry
            self.stats["prompts_executed"] += 1
            self.stats["busy_seconds"] += time.monotonic() - started
            if not success:
                self.stats["executions_failed"] += 1
                if any(m[0] == "execution_interrupted" for m in messages or []):
                    self.stats["executions_interrupted"] += 1
            if not self.queue:
                self.stats["idle_gaps"] += 1
            self._queue_updated()
        if "client_id" in item[3] and client_id is not None:
            self.hub.send("executing", {"node": None, "prompt_id": item[1]}, client_id)
        self.client_id = None
