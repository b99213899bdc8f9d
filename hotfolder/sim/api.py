"""Which ComfyUI the simulator imitates: one frozen set of behaviour flags per API version.

`"0.3.64"` is the server the captures in tests/fixtures/comfy-api/ were recorded from (the
default). `"newer"` is a current ComfyUI (0.38.1) as described by
tests/fixtures/comfy-api/newer/: derived from ComfyUI's source, not recorded. Every place that
behaves differently reads one flag of `SimServer.api`, never the version string.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApiBehaviour:
    name: str
    comfyui_version: str


API_0_3_64 = ApiBehaviour(
    name="0.3.64",
    comfyui_version="0.3.64",
)

API_NEWER = ApiBehaviour(
    name="newer",
    comfyui_version="0.38.1",
)

APIS = {api.name: api for api in (API_0_3_64, API_NEWER)}


def api_behaviour(name: str) -> ApiBehaviour:
    """The behaviour for `SimServer(api=name)`; a ValueError names the known ones."""
    try:
        return APIS[name]
    except KeyError:
        raise ValueError(f"unknown api {name!r}: expected one of {', '.join(APIS)}") from None
