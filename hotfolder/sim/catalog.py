"""The simulator's node catalog: `object_info` as a real ComfyUI 0.3.64 reports it.

`object_info.json` is a subset of a real capture. Model-file combos are replaced by the
simulator's own model lists at load time and LoadImage lists the simulator's input folder on
every call, as the real server does, so validation errors quote what this server "has".
"""

from __future__ import annotations

import copy
import json
import os
from functools import lru_cache
from importlib import resources
from typing import Any

# Folder name (as in GET /models/{folder}) -> files the simulated server pretends to have.
MODEL_FOLDERS: dict[str, list[str]] = {
    "checkpoints": [
        "sd_xl_base_1.0.safetensors",
        "sd_xl_refiner_1.0.safetensors",
        "tiny-random-sd15.safetensors",
        "v1-5-pruned-emaonly.safetensors",
    ],
    "loras": ["add-detail-xl.safetensors", "lcm-lora-sdxl.safetensors"],
    "vae": ["sdxl_vae.safetensors", "vae-ft-mse-840000-ema-pruned.safetensors"],
    "text_encoders": [
        "clip_l.safetensors",
        "t5xxl_fp16.safetensors",
        "t5xxl_fp8_e4m3fn.safetensors",
    ],
    "diffusion_models": ["flux1-dev.safetensors", "flux1-schnell.safetensors"],
    "controlnet": ["control_v11p_sd15_canny.pth", "controlnet-canny-sdxl-1.0.safetensors"],
    "upscale_models": ["4x-UltraSharp.pth", "RealESRGAN_x4plus.pth"],
    "embeddings": [],
    "clip_vision": [],
    "style_models": [],
    "configs": [],
    "diffusers": [],
    "vae_approx": [],
    "gligen": [],
    "hypernetworks": [],
    "photomaker": [],
    "classifiers": [],
    "model_patches": [],
    "audio_encoders": [],
}

# Combo input name -> model folder whose file list it offers.
_MODEL_INPUTS = {
    "ckpt_name": "checkpoints",
    "lora_name": "loras",
    "vae_name": "vae",
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "control_net_name": "controlnet",
    "model_name": "upscale_models",
}

# Nodes whose real class has VALIDATE_INPUTS: these inputs skip the combo/min/max checks and get
# a custom check instead (the file must exist in the input folder).
CUSTOM_VALIDATED: dict[str, tuple[str, ...]] = {
    "LoadImage": ("image",),
    "LoadImageMask": ("image",),
}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@lru_cache(maxsize=1)
def _base_catalog() -> dict[str, Any]:
    text = resources.files("hotfolder.sim").joinpath("object_info.json").read_text("utf-8")
    data = json.loads(text)
    for info in data.values():
        for category in ("required", "optional"):
            for name, spec in info["input"].get(category, {}).items():
                folder = _MODEL_INPUTS.get(name)
                if folder is None:
                    continue
                files = list(MODEL_FOLDERS[folder])
                if name == "vae_name":
                    files.append("pixel_space")
                if isinstance(spec[0], list):
                    spec[0] = files
                elif spec[0] == "COMBO" and len(spec) > 1:
                    spec[1]["options"] = files
    return data


def list_input_images(input_dir: str) -> list[str]:
    """Top-level image files of the input folder, sorted, like LoadImage's combo."""
    try:
        names = os.listdir(input_dir)
    except OSError:
        return []
    return sorted(
        n
        for n in names
        if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(input_dir, n))
    )


class Catalog:
    """Read access to node definitions, with the input-folder dependent parts filled in."""

    def __init__(self, input_dir: str) -> None:
        self.input_dir = input_dir
        self._base = _base_catalog()

    def __contains__(self, class_type: object) -> bool:
        return isinstance(class_type, str) and class_type in self._base

    def info(self, class_type: str) -> dict[str, Any] | None:
        """One node's object_info entry, a fresh copy safe to hand out or mutate."""
        base = self._base.get(class_type)
        if base is None:
            return None
        info = copy.deepcopy(base)
        if class_type in CUSTOM_VALIDATED:
            info["input"]["required"]["image"][0] = list_input_images(self.input_dir)
        return info

    def all(self) -> dict[str, Any]:
        return {name: self.info(name) for name in self._base}

    def inputs(self, class_type: str) -> dict[str, list[Any]]:
        """Required then optional inputs, name -> [type, options]."""
        node_inputs = self._base[class_type]["input"]
        out: dict[str, list[Any]] = {}
        for category in ("required", "optional"):
            out.update(node_inputs.get(category, {}))
        return out

    def category(self, class_type: str, name: str) -> str | None:
        node_inputs = self._base[class_type]["input"]
        for category in ("required", "optional", "hidden"):
            if name in node_inputs.get(category, {}):
                return category
        return None

    def hidden(self, class_type: str) -> dict[str, str]:
        return dict(self._base[class_type]["input"].get("hidden", {}))

    def outputs(self, class_type: str) -> tuple[Any, ...]:
        return tuple(self._base[class_type]["output"])

    def is_output(self, class_type: str) -> bool:
        return bool(self._base.get(class_type, {}).get("output_node", False))


def strip_annotation(name: str) -> str:
    """ "sub/x.png [input]" -> "sub/x.png" (ComfyUI's annotated file names)."""
    for suffix in (" [input]", " [output]", " [temp]"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def annotated_exists(input_dir: str, name: Any) -> bool:
    """LoadImage's custom validation: the named file must exist inside the input folder."""
    if not isinstance(name, str) or not name:
        return False
    path = os.path.abspath(os.path.join(input_dir, strip_annotation(name)))
    root = os.path.abspath(input_dir)
    return os.path.commonpath((root, path)) == root and os.path.isfile(path)


def models_in(folder: str) -> list[str] | None:
    files = MODEL_FOLDERS.get(folder)
    return None if files is None else list(files)
