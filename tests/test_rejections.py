"""Rejections that name the fix: the server's node definitions fill in what ComfyUI 0.3.64
leaves out of its answer (the choices of a list of over 20, the class an unknown one meant)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hotfolder.comfy.explain import explain_rejection
from hotfolder.errors import JobError, Kind, ServerError
from hotfolder.job.submit import with_node_info

FIXTURES = Path(__file__).parent / "fixtures" / "comfy-api"


def test_a_misspelt_sampler_and_an_unknown_class_are_named_with_their_fix(hot):
    hot.start()
    hot.drop("sampler.yaml", "prompt: a cat\nsampler: euler_ancestrial\n")
    workflow = json.loads(Path(hot.base / "workflows" / "sdxl.json").read_text())
    workflow["4"]["class_type"] = "CheckpointSimple"  # from a tutorial; not a real node
    hot.drop("tutorial.json", json.dumps(workflow))
    assert hot.finished("sampler.yaml") == "failed"
    error = hot.error("sampler.yaml")
    assert error["kind"] == "rejected"
    assert "input sampler_name: 'euler_ancestrial' is not one of the server's choices; did " \
           "you mean 'euler_ancestral'?" in error["error"]
    assert hot.finished("tutorial.json") == "failed"
    error = hot.error("tutorial.json")
    assert error["kind"] == "rejected"
    assert "uses class_type 'CheckpointSimple', which does not exist on this server" \
           in error["error"]
    assert "Did you mean 'CheckpointLoaderSimple'?" in error["error"]


class _Unreachable:
    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise ServerError("connection refused", server="gpu1")


def test_definitions_that_cannot_be_had_change_the_wording_only() -> None:
    capture = json.loads((FIXTURES / "prompt_error_combo_sampler_not_in_list.json").read_text())
    answer, workflow = capture["response_json"], capture["request"]["json_body"]["prompt"]
    message, problems = explain_rejection(answer, workflow)
    rejected = JobError(message, kind=Kind.REJECTED,
                        details={"problems": problems, "comfyui": answer})
    server = SimpleNamespace(name="gpu1", client=None, epoch=("ws", 0))
    ctx = SimpleNamespace(object_info=_Unreachable())
    assert with_node_info(ctx, server, workflow, rejected) is rejected  # type: ignore[arg-type]
    assert "did not send the list of choices (it has 42 entries)" in rejected.message
