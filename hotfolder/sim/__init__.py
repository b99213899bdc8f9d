"""A simulator of the ComfyUI HTTP + WebSocket API (no GPU, no ComfyUI), faithful to captures.

Used by the test suite, the benchmarks and `hotfolder demo` (no GPU needed)::

    from hotfolder.sim import SimServer, Faults
    sim = SimServer(port=0, job_seconds=0.2, faults=Faults()).start()
    ...  # talk to sim.url
    sim.stop()

`SimServer(api="newer")` (`hotfolder sim --api newer`) imitates a current ComfyUI instead of
the recorded 0.3.64: see `hotfolder.sim.api`.
"""

from hotfolder.sim.cli import main
from hotfolder.sim.faults import Faults
from hotfolder.sim.server import SimServer

__all__ = ["Faults", "SimServer", "main"]
