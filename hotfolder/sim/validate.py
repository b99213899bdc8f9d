"""Graph validation with ComfyUI 0.3.64's exact error shapes.

Clients branch on these shapes (`error.type`, per-node `errors[].type`, `extra_info.input_name`),
so this module reproduces the real rules, including their quirks: a link to a missing node is
reported under the node *holding* the link but with the *downstream* node's input name, the
messages of Python's own exceptions (`'99'`, `tuple index out of range`) appear verbatim, and a
malformed top-level prompt makes the server crash with a plain 500 rather than answer 400.
The checks are done with the same Python operations, so the exception texts match naturally.
"""

from __future__ import annotations

from typing import Any

from hotfolder.sim.catalog import CUSTOM_VALIDATED, Catalog, annotated_exists
from hotfolder.sim.nodetypes import node_type_error

Error = dict[str, Any]
Result = tuple[bool, list[Error], Any]


class PromptCrash(Exception):
    """The real server raises here, so the HTTP layer answers the plain-text 500."""


def _traceback(*frames: tuple[int, str, str]) -> list[str]:
    """Python-style traceback lines pointing at ComfyUI's execution.py, like the real answers."""
    return [
        f'  File "execution.py", line {line}, in {func}\n    {code}\n'
        for line, func, code in frames
    ]


_INNER_FRAMES = {
    KeyError: (788, "validate_inputs", "o_class_type = prompt[o_id]['class_type']"),
    IndexError: (790, "validate_inputs", "received_type = r[val[1]]"),
}
_GENERIC_FRAME = (786, "validate_inputs", "inputs = prompt[unique_id]['inputs']")


def _type_name(exc: BaseException) -> str:
    klass = type(exc)
    if klass.__module__ == "builtins":
        return klass.__qualname__
    return f"{klass.__module__}.{klass.__qualname__}"


def types_compatible(received: Any, wanted: Any) -> bool:
    """ComfyUI's link type rule: equal, `*` on either side, or overlapping comma-separated sets."""
    if received == wanted:
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in wanted.split(",")}
    if "*" in got or "*" in want:
        return True
    return not got.isdisjoint(want)


class _Validator:
    def __init__(self, prompt: dict[str, Any], catalog: Catalog) -> None:
        self.prompt = prompt
        self.catalog = catalog
        self.validated: dict[Any, Result] = {}

    def node(self, node_id: Any) -> Result:
        return self._node(node_id, [])

    def _node(self, node_id: Any, visiting: list[Any]) -> Result:
        if node_id in self.validated:
            return self.validated[node_id]
        if node_id in visiting:
            return self._cycle(node_id, visiting)
        inputs = self.prompt[node_id]["inputs"]
        class_type = self.prompt[node_id]["class_type"]
        custom = CUSTOM_VALIDATED.get(class_type, ())
        errors: list[Error] = []
        valid = True
        for name, spec in self.catalog.inputs(class_type).items():
            input_type, options = spec[0], (spec[1] if len(spec) > 1 else {})
            info = [input_type, options]
            if name not in inputs:
                if self.catalog.category(class_type, name) == "required":
                    errors.append(
                        _err(
                            "required_input_missing",
                            "Required input is missing",
                            name,
                            {"input_name": name},
                        )
                    )
                continue
            value = inputs[name]
            if isinstance(value, list):
                linked_ok = self._link(node_id, name, value, input_type, info, errors, visiting)
                valid = valid and linked_ok
                continue
            self._constant(inputs, name, value, input_type, options, info, custom, errors)
        for name in custom:
            value = inputs.get(name)
            if (
                name in inputs
                and not isinstance(value, list)
                and not annotated_exists(self.catalog.input_dir, value)
            ):
                errors.append(
                    _err(
                        "custom_validation_failed",
                        "Custom validation failed for node",
                        f"{name} - Invalid image file: {value}",
                        {"input_name": name},
                    )
                )
        previous = self.validated.get(node_id, (True, [], node_id))
        result = (
            previous[0] and valid and not errors,
            previous[1] + [e for e in errors if e not in previous[1]],
            node_id,
        )
        self.validated[node_id] = result
        return result

    def _link(self, node_id, name, value, input_type, info, errors, visiting) -> bool:
        if len(value) != 2:
            errors.append(
                _err(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    name,
                    {"input_name": name, "input_config": info, "received_value": value},
                )
            )
            return True
        from_id = value[0]
        from_class = self.prompt[from_id]["class_type"]  # KeyError '99' bubbles up, as in ComfyUI
        received = self.catalog.outputs(from_class)[value[1]]  # IndexError likewise
        if not types_compatible(received, input_type):
            errors.append(
                _err(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{name}, received_type({received}) mismatch input_type({input_type})",
                    {
                        "input_name": name,
                        "input_config": info,
                        "received_type": received,
                        "linked_node": value,
                    },
                )
            )
            return True
        try:
            upstream = self._node(from_id, [*visiting, node_id])
        except Exception as exc:  # noqa: BLE001 - every failure becomes an inner-validation error
            frame = _INNER_FRAMES.get(type(exc), _GENERIC_FRAME)
            message = str(exc)
            self.validated[from_id] = (
                False,
                [
                    _err(
                        "exception_during_inner_validation",
                        "Exception when validating inner node",
                        message,
                        {
                            "input_name": name,
                            "input_config": info,
                            "exception_message": message,
                            "exception_type": _type_name(exc),
                            "traceback": _traceback(
                                (
                                    808,
                                    "validate_inputs",
                                    "r = await validate_inputs(prompt_id, prompt, o_id, validated)",
                                ),
                                frame,
                            ),
                            "linked_node": value,
                        },
                    )
                ],
                from_id,
            )
            return False
        return upstream[0] is not False

    def _constant(self, inputs, name, value, input_type, options, info, custom, errors) -> None:
        try:
            if isinstance(value, dict) and "__value__" in value:
                value = value["__value__"]
                inputs[name] = value
            if input_type == "INT":
                value = int(value)
            elif input_type == "FLOAT":
                value = float(value)
            elif input_type == "STRING":
                value = str(value)
            elif input_type == "BOOLEAN":
                value = bool(value)
            inputs[name] = value  # the real server keeps the converted value (history shows it)
        except Exception as exc:  # noqa: BLE001 - int()/float() raise several types
            errors.append(
                _err(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {input_type} value",
                    f"{name}, {value}, {exc}",
                    {
                        "input_name": name,
                        "input_config": info,
                        "received_value": value,
                        "exception_message": str(exc),
                    },
                )
            )
            return
        if name in custom:
            return
        extra = {"input_name": name, "input_config": info, "received_value": value}
        try:
            if "min" in options and value < options["min"]:
                errors.append(
                    _err(
                        "value_smaller_than_min",
                        f"Value {value} smaller than min of {options['min']}",
                        name,
                        extra,
                    )
                )
                return
            if "max" in options and value > options["max"]:
                errors.append(
                    _err(
                        "value_bigger_than_max",
                        f"Value {value} bigger than max of {options['max']}",
                        name,
                        extra,
                    )
                )
                return
        except TypeError:
            pass
        if isinstance(input_type, list) or input_type == "COMBO":
            if input_type == "COMBO":
                if options.get("remote_combo"):
                    return
                choices = options.get("options", [])
            else:
                choices = input_type
            if options.get("multiselect") and isinstance(value, list):
                bad = [v for v in value if v not in choices]
            else:
                bad = [] if value in choices else [value]
            if bad:
                config: Any = info
                if len(choices) > 20:
                    listing, config = f"(list of length {len(choices)})", None
                else:
                    listing = str(choices)
                errors.append(
                    _err(
                        "value_not_in_list",
                        "Value not in list",
                        f"{name}: {', '.join(repr(v) for v in bad)} not in {listing}",
                        {"input_name": name, "input_config": config, "received_value": value},
                    )
                )

    def _cycle(self, node_id: Any, visiting: list[Any]) -> Result:
        path_nodes = [*visiting[visiting.index(node_id) :], node_id]
        members = list(dict.fromkeys(path_nodes))
        path = " -> ".join(f"{n} ({self.prompt[n]['class_type']})" for n in path_nodes)
        for member in members:
            self.validated[member] = (
                False,
                [
                    _err(
                        "dependency_cycle",
                        "Dependency cycle detected",
                        path,
                        {"node_id": member, "cycle_nodes": members},
                    )
                ],
                member,
            )
        return self.validated[node_id]


def _err(kind: str, message: str, details: str, extra: dict[str, Any]) -> Error:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _top_error(kind: str, message: str, details: str = "") -> Error:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def validate_prompt(
    prompt: Any, catalog: Catalog, partial_targets: Any = None, missing_node_type: bool = False
) -> tuple[bool, Error | None, list[str], dict[str, Any]]:
    """Return (ok, error, outputs_to_execute, node_errors); raise PromptCrash for a plain 500.

    `missing_node_type`: report an unknown or missing class_type the newer servers' way.
    """
    try:
        return _validate(prompt, catalog, partial_targets, missing_node_type)
    except PromptCrash:
        raise
    except Exception as exc:
        raise PromptCrash(str(exc)) from exc


def _validate(prompt: Any, catalog: Catalog, partial_targets: Any, missing_node_type: bool):
    outputs: list[Any] = []
    for node_id in prompt:  # a list/str/int prompt fails right here, as in ComfyUI
        node = prompt[node_id]
        if isinstance(node, (int, float, bool)) or node is None:
            raise PromptCrash("argument of type is not iterable")
        error = node_type_error(node_id, node, catalog, missing_node_type)
        if error is not None:
            return False, error, [], {}
        class_type = node["class_type"]
        if catalog.is_output(class_type) and (
            partial_targets is None or node_id in partial_targets
        ):
            outputs.append(node_id)
    if not outputs:
        return False, _top_error("prompt_no_outputs", "Prompt has no outputs"), [], {}

    validator = _Validator(prompt, catalog)
    good: list[str] = []
    failures: list[tuple[Any, list[Error]]] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        try:
            ok, reasons, _ = validator.node(output)
        except Exception as exc:  # noqa: BLE001 - reported like ComfyUI does
            ok = False
            reasons = [
                _err(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(exc),
                    {
                        "exception_type": _type_name(exc),
                        "traceback": _traceback(
                            (
                                1010,
                                "validate_prompt",
                                "m = await validate_inputs(prompt_id, prompt, o, validated)",
                            ),
                            _INNER_FRAMES.get(type(exc), _GENERIC_FRAME),
                        ),
                    },
                )
            ]
            validator.validated[output] = (False, reasons, output)
        if ok is True:
            good.append(output)
            continue
        failures.append((output, reasons))
        for node_id, (node_ok, node_reasons, _) in list(validator.validated.items()):
            if node_ok is not True and node_reasons:
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(output)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failures for e in errs)
        return (
            False,
            _top_error(
                "prompt_outputs_failed_validation", "Prompt outputs failed validation", details
            ),
            [],
            node_errors,
        )
    # ComfyUI hands these over as a set (hash order); last-defined first reproduces the captures.
    return True, None, good[::-1], node_errors
