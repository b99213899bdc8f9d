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
    jobs_api: bool  # /api/jobs… exists (else: 404 empty body / 405, as recorded from 0.3.64)
    uuid_prompt_ids: bool  # a client prompt_id must be a canonical lowercase UUID
    missing_node_type: bool  # unknown/missing class_type: error.type missing_node_type
    create_time: bool  # extra_data.create_time (epoch ms) at enqueue
    output_assets: bool  # output entries gain metadata, id, preview_id
    cache_entries: int  # 0: CLASSIC cache (the last prompt's nodes); N: LRU of N node results
    system_stats_extras: bool  # comfy_package_versions, deploy_environment, os = sys.platform
    view_nosniff: bool  # /view answers a file with X-Content-Type-Options: nosniff


API_0_3_64 = ApiBehaviour(
    name="0.3.64",
    comfyui_version="0.3.64",
    jobs_api=False,
    uuid_prompt_ids=False,
    missing_node_type=False,
    create_time=False,
    output_assets=False,
    cache_entries=0,
    system_stats_extras=False,
    view_nosniff=False,
)

# The real default cache (RAM_PRESSURE) keeps results until memory runs short; a bound on the
# number of node results (images included, so kept modest) stands in for that.
API_NEWER = ApiBehaviour(
    name="newer",
    comfyui_version="0.38.1",
    jobs_api=True,
    uuid_prompt_ids=True,
    missing_node_type=True,
    create_time=True,
    output_assets=True,
    cache_entries=64,
    system_stats_extras=True,
    view_nosniff=True,
)

APIS = {api.name: api for api in (API_0_3_64, API_NEWER)}


def api_behaviour(name: str) -> ApiBehaviour:
    """The behaviour for `SimServer(api=name)`; a ValueError names the known ones."""
    try:
        return APIS[name]
    except KeyError:
        raise ValueError(f"unknown api {name!r}: expected one of {', '.join(APIS)}") from None
