"""Why a prompt failed while running, in words a user can act on: which node, what ComfyUI
said, and a hint where the cause is common (out of memory, a filename_prefix outside the
output folder). Tensor dumps and all but the last three traceback frames are left out: the
error file is for a person, not a debugger. (Rejections at submission are explain.py's.)"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hotfolder.comfy.explain import clip, fmt_value, title_or_none
from hotfolder.workflow.graph import Workflow, inputs_of, node_label, node_of


def explain_execution_error(data: Mapping[str, Any],
                            workflow: Workflow) -> tuple[str, dict[str, Any]]:
    """Explain `execution_error`, leaving out `current_inputs` (tensor dumps) and all but the
    last 3 traceback frames: the error file is for a person, not a debugger."""
    node_id = str(data.get("node_id"))
    class_type = data.get("node_type") if isinstance(data.get("node_type"), str) else None
    label = node_label(workflow, node_id, class_type) if "node_id" in data else "a node"
    exc_type = str(data.get("exception_type") or "error")
    lines = [ln.strip().lstrip("*").strip() for ln in str(data.get("exception_message") or "")
             .splitlines()]
    lines = [re.sub(r"^ERROR:\s*", "", ln, flags=re.IGNORECASE) for ln in lines if ln]
    short = clip("; ".join(ln.rstrip(".") for ln in lines[:3]) or "no message")
    summary = (f"ComfyUI failed while running {label}: {exc_type}: {short}."
               f"{_hint(exc_type, short, workflow, node_id)}")
    return summary, {
        "node_id": node_id, "node_title": title_or_none(workflow, node_id),
        "class_type": class_type,
        "exception_type": exc_type, "exception_message": "\n".join(lines[:10]),
        "traceback": _short_traceback(data.get("traceback")),
        "executed": list(data.get("executed") or []), "prompt_id": data.get("prompt_id")}


def explain_interrupted(data: Mapping[str, Any], workflow: Workflow) -> tuple[str, dict[str, Any]]:
    """An interrupt is a cancellation, not a fault in the workflow; say so."""
    node_id = str(data["node_id"]) if data.get("node_id") is not None else None
    class_type = data.get("node_type") if isinstance(data.get("node_type"), str) else None
    where = f" while {node_label(workflow, node_id, class_type)} was running" if node_id else ""
    summary = (f"ComfyUI interrupted the job{where}; it was cancelled (by hotfolder or on the "
               f"ComfyUI server) before it finished.")
    return summary, {
        "node_id": node_id, "node_title": title_or_none(workflow, node_id) if node_id else None,
        "class_type": class_type, "executed": list(data.get("executed") or []),
        "prompt_id": data.get("prompt_id")}


def explain_history_failure(entry: Mapping[str, Any],
                            workflow: Workflow) -> tuple[str, dict[str, Any]]:
    """Explain a history entry with status_str "error" from its status messages.

    The entry carries the prompt that ran; it names the nodes when the caller has no workflow.
    """
    prompt = entry.get("prompt")
    if workflow is None and isinstance(prompt, list) and len(prompt) > 2:
        workflow = prompt[2] if isinstance(prompt[2], Mapping) else None
    status = entry.get("status") if isinstance(entry.get("status"), Mapping) else {}
    events = {str(m[0]): m[1] for m in status.get("messages") or []
              if isinstance(m, (list, tuple)) and len(m) == 2 and isinstance(m[1], Mapping)}
    if "execution_error" in events:
        return explain_execution_error(events["execution_error"], workflow)
    if "execution_interrupted" in events:
        return explain_interrupted(events["execution_interrupted"], workflow)
    status_str = status.get("status_str")
    details = {"status_str": status_str, "completed": status.get("completed"),
               "events": list(events)}
    if status_str == "success":
        return "ComfyUI reports that this job succeeded; there is no failure to explain.", details
    return (f"ComfyUI marked the job as failed (status {status_str!r}) without saying why; "
            f"the ComfyUI server log may have the reason."), details



def _short_traceback(frames: Any) -> list[str]:
    """The last 3 frames, each as one "File ..., line N, in f: code" line without ^^^ marks."""
    short = []
    for frame in frames[-3:] if isinstance(frames, list) else []:
        parts = [p.strip() for p in str(frame).splitlines() if set(p.strip()) - set("^~ ")]
        short.append(": ".join(parts[:2]))
    return short



def _hint(exc_type: str, message: str, workflow: Workflow, node_id: str) -> str:
    lowered = message.lower()
    if "outofmemory" in exc_type.lower() or "out of memory" in lowered:
        return " The server ran out of memory; try a smaller image size or batch."
    if "outside the output folder" in lowered:
        prefix = inputs_of(node_of(workflow, node_id)).get("filename_prefix")
        shown = f" {fmt_value(prefix)}" if isinstance(prefix, str) else ""
        return (f" The filename_prefix{shown} points outside ComfyUI's output folder; "
                f"remove '..' and absolute paths from it.")
    return ""
