"""Every GUI workflow of the corpus converted and compared with what ComfyUI's frontend made of it.

`fixtures/gui2api/<name>/gui.json` is a real GUI-format workflow, `api.json` the prompt that
frontend 1.27.10 (server 0.3.64) built from it, `fixtures/comfy-api/object_info_full.json` the
node definitions it used (the same server's whole /object_info). See fixtures/gui2api/README.md.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from hotfolder.workflow.gui2api.convert import build, convert

FIXTURES = Path(__file__).parent / "fixtures"
PAIRS_DIR = FIXTURES / "gui2api"
OBJECT_INFO = json.loads((FIXTURES / "comfy-api" / "object_info_full.json").read_text("utf-8"))
PAIRS = sorted(p.name for p in PAIRS_DIR.iterdir() if p.is_dir())

# Pairs whose nodes (class_type or any input) differ from the frontend's, with the reason.
# None: every pair matches. A pair listed here must keep differing, or the test fails.
INPUT_EXCEPTIONS: dict[str, str] = {}

# `_meta.title` (ignored by the server) of untitled nodes: the frontend takes it from its own
# English translation table, hotfolder from the server's display_name, else the class name.
# ComfyUI 0.3.64 sends no display_name for ImageBlur; the frontend's table says "Image Blur".
TITLE_EXCEPTIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("image_qwen_image_instantx_inpainting_controlnet", "121:252"): ("ImageBlur", "Image Blur"),
    ("image_qwen_image_instantx_inpainting_controlnet", "220:252"): ("ImageBlur", "Image Blur"),
}


def _pair(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = PAIRS_DIR / name
    return (json.loads((folder / "gui.json").read_text("utf-8")),
            json.loads((folder / "api.json").read_text("utf-8")))


def _as_json(value: Any) -> str:
    """Type-exact comparison (`1` is not `1.0`), key order aside."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def node_diff(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """One readable line per difference: missing or extra nodes, class_type, each input."""
    lines = []
    for node_id in sorted(set(got) | set(want)):
        if node_id not in got:
            lines.append(f"node {node_id} ({want[node_id]['class_type']}): missing")
            continue
        if node_id not in want:
            lines.append(f"node {node_id} ({got[node_id]['class_type']}): not in the frontend's")
            continue
        g, w = got[node_id], want[node_id]
        if g["class_type"] != w["class_type"]:
            lines.append(f"node {node_id}: class_type {g['class_type']} != {w['class_type']}")
        for name in sorted(set(g["inputs"]) | set(w["inputs"])):
            mine = _as_json(g["inputs"][name]) if name in g["inputs"] else "(absent)"
            theirs = _as_json(w["inputs"][name]) if name in w["inputs"] else "(absent)"
            if mine != theirs:
                lines.append(f"node {node_id} ({w['class_type']}).{name}: got {mine[:120]}, "
                             f"the frontend has {theirs[:120]}")
    return lines


def test_the_corpus_has_all_55_pairs() -> None:
    assert len(PAIRS) == 55


@pytest.mark.parametrize("name", PAIRS)
def test_pair_converts_like_the_frontend(name: str) -> None:
    gui, want = _pair(name)
    got = convert(gui, OBJECT_INFO, rng=random.Random(0))
    diff = node_diff(got, want)
    if name in INPUT_EXCEPTIONS:
        assert diff, f"{name} now matches the frontend: remove it from INPUT_EXCEPTIONS"
    else:
        assert not diff, f"{name} differs from the frontend:\n  " + "\n  ".join(diff)
    # nothing in the corpus uses dynamic-prompt syntax, so any random choice gives the same
    assert convert(gui, OBJECT_INFO, rng=random.Random(1)) == got


@pytest.mark.parametrize("name", PAIRS)
def test_pair_has_nothing_the_server_would_refuse(name: str) -> None:
    gui, _ = _pair(name)
    assert build(gui, OBJECT_INFO).problems == []


def test_titles_match_the_frontend_but_the_listed_ones() -> None:
    differing = {}
    for name in PAIRS:
        gui, want = _pair(name)
        got = convert(gui, OBJECT_INFO)
        for node_id, node in want.items():
            mine = got[node_id]["_meta"]["title"]
            if mine != node["_meta"]["title"]:
                differing[(name, node_id)] = (mine, node["_meta"]["title"])
    assert differing == TITLE_EXCEPTIONS


def test_the_fixture_definitions_cover_every_class_the_pairs_use() -> None:
    """The conversions above ran on the server's own /object_info, nothing trimmed."""
    used = set()
    for name in PAIRS:
        used.update(node["class_type"] for node in _pair(name)[1].values())
    assert used <= set(OBJECT_INFO)
    assert len(OBJECT_INFO) == 478  # the capture's count (fixtures/gui2api/README.md)
