"""What ComfyUI 0.3.64 answers to the jobs API of newer servers (`/api/jobs…`).

It has no such routes: its catch-all static route answers a GET with a 404 and an empty
`application/octet-stream` body and any other method with a 405, as the captures show.
"""

from __future__ import annotations

import uuid
from typing import Any

from hotfolder.sim.context import SimContext
from hotfolder.sim.web import Request, Response


def get_jobs_absent(sim: SimContext, req: Request) -> Response:
    """0.3.64: GET (and HEAD) of any /api/jobs… path."""
    return Response(404, b"", "application/octet-stream")


def valid_job_id(value: Any) -> bool:
    """A canonical lowercase hyphenated UUID string, the only id form the server takes."""
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
