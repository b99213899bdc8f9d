"""What an HTTP route handler may use of the running simulator.

`server.SimServer` dispatches requests to the route modules, so those cannot import it back;
they are written against this Protocol instead, which `SimServer` satisfies as it stands.
"""

from __future__ import annotations

from typing import Any, Protocol

from hotfolder.sim.api import ApiBehaviour
from hotfolder.sim.catalog import Catalog
from hotfolder.sim.engine import Engine
from hotfolder.sim.faults import FaultState


class SimContext(Protocol):
    """The parts of `SimServer` the routes read and update."""

    api: ApiBehaviour  # which ComfyUI is imitated
    host: str
    port: int
    output_dir: str
    input_dir: str
    temp_dir: str
    catalog: Catalog
    engine: Engine
    fault_state: FaultState
    counters: dict[str, int]  # prompts_rejected, http_5xx_injected, uploads

    def stats(self) -> dict[str, Any]: ...
