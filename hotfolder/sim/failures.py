"""How a failing node looks to a client: exception type, message, traceback, inputs.

A daemon shows `execution_error` to its user and decides on retries from it, so an injected
fault must read like a real ComfyUI 0.3.64 failure: a sampler running out of GPU memory
(`torch.OutOfMemoryError` with the real tips) or a node raising, with tracebacks through the
real files and lines, and the failing node's inputs formatted as the real server formats them.
The executor (`executor.PromptRun`) decides when something fails; this module says how.
"""

from __future__ import annotations

from typing import Any

OOM_MESSAGE = (
    "Allocation on device \nThis error means you ran out of memory on your GPU.\n\nTIPS: If the "
    "workflow worked before you might have accidentally set the batch_size to a large number."
)

_EXECUTE_FRAME = (
    "execution.py",
    496,
    "execute",
    "output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(...)",
)


class InjectedFailure(Exception):
    """A fault from `Faults.error_rate` / `fail_next`, shaped like a real node exception."""

    def __init__(self, type_name: str, message: str, frames: list[str]) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.frames = frames


def _frames(*lines: tuple[str, int, str, str]) -> list[str]:
    return [
        f'  File "{path}", line {line}, in {func}\n    {code}\n' for path, line, func, code in lines
    ]


def exception_frames(class_type: str) -> list[str]:
    """The traceback of an exception raised by a node of this class."""
    if class_type == "SaveImage":
        return _frames(
            _EXECUTE_FRAME,
            (
                "nodes.py",
                1590,
                "save_images",
                "full_output_folder, filename, counter, subfolder, filename_prefix = "
                "folder_paths.get_save_image_path(...)",
            ),
            ("folder_paths.py", 397, "get_save_image_path", "raise Exception(err)"),
        )
    return _frames(_EXECUTE_FRAME, ("execution.py", 277, "process_inputs", "result = f(**inputs)"))


def out_of_memory() -> InjectedFailure:
    """What a sampler raises when the GPU runs out of memory half-way through its steps."""
    return InjectedFailure(
        "torch.OutOfMemoryError",
        OOM_MESSAGE,
        _frames(
            _EXECUTE_FRAME,
            ("comfy/samplers.py", 1035, "sample", "output = executor.execute(...)"),
            (
                "comfy/model_management.py",
                1121,
                "cast_to",
                "r = torch.empty_like(weight)",
            ),
        ),
    )


def node_failure(class_type: str) -> InjectedFailure:
    """What any other node raises when a fault is injected into it."""
    return InjectedFailure(
        "RuntimeError",
        f"Simulated failure in {class_type} (hotfolder simulator fault injection)",
        exception_frames(class_type),
    )


def type_and_traceback(exc: Exception, class_type: str) -> tuple[str, list[str]]:
    """`exception_type` and `traceback` of an execution_error: an injected failure's own, or
    the real name of any other exception (`builtins` unqualified) and the node's frames."""
    if isinstance(exc, InjectedFailure):
        return exc.type_name, exc.frames
    klass = type(exc)
    type_name = (
        klass.__qualname__
        if klass.__module__ == "builtins"
        else f"{klass.__module__}.{klass.__qualname__}"
    )
    return type_name, exception_frames(class_type)


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


def current_inputs(
    node_id: str,
    inputs: dict[str, Any],
    hidden: dict[str, str],
    prompt: dict[str, Any],
    extra_data: dict[str, Any],
) -> dict[str, list[Any]]:
    """The failing node's inputs as ComfyUI reports them (non-scalars as strings), with the
    hidden inputs (PROMPT, EXTRA_PNGINFO, UNIQUE_ID) its class declares."""
    values = {k: [_format_value(v)] for k, v in inputs.items()}
    for name, kind in hidden.items():
        if kind == "PROMPT":
            values[name] = [str(prompt)]
        elif kind == "EXTRA_PNGINFO":
            values[name] = [extra_data.get("extra_pnginfo")]
        elif kind == "UNIQUE_ID":
            values[name] = [node_id]
    return values
