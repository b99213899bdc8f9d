"""Simulated node behaviour: cheap stand-ins that carry what matters downstream.

Strings really are computed (a STRING can feed SaveImage's filename_prefix), sizes and batch
counts travel with latents and images (they decide how many files are written), and the
positive prompt text plus the seed travel to the pixels. Everything else is an opaque `Thing`.
Nodes without a stand-in pass through an input of the right type or make a neutral value.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any, Protocol

from hotfolder.sim import imaging
from hotfolder.sim.catalog import strip_annotation
from hotfolder.sim.imagefiles import PngError, decode_png
from hotfolder.sim.imaging import ImageBatch, Latent, Thing

SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
DEFAULT_STEPS = 20


class NodeContext(Protocol):
    """What a node needs from the engine while it runs."""

    input_dir: str

    def sample(self, steps: int, final: ImageBatch | None) -> None: ...


def value_type(value: Any) -> str:
    if isinstance(value, ImageBatch):
        return "IMAGE"
    if isinstance(value, Latent):
        return "LATENT"
    if isinstance(value, Thing):
        return value.kind
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INT"
    if isinstance(value, float):
        return "FLOAT"
    if isinstance(value, str):
        return "STRING"
    return "*"


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _text(value: Any) -> str:
    return value.text if isinstance(value, Thing) else ("" if value is None else str(value))


def _latent(value: Any) -> Latent:
    return value if isinstance(value, Latent) else Latent(imaging.MIN_SIDE, imaging.MIN_SIDE, 1)


def _image(value: Any) -> ImageBatch:
    if isinstance(value, ImageBatch):
        return value
    side = imaging.MIN_SIDE
    return ImageBatch(side, side, (imaging.solid(side, side, 0x808080),))


def _sampled(latent: Latent, text: str, seed: Any, steps: int, ctx: NodeContext) -> Latent:
    result = Latent(latent.width, latent.height, latent.batch, text=text, seed=seed)
    ctx.sample(max(1, steps), imaging.decode_latent(result))
    return result


def ksampler(i: dict[str, Any], ctx: NodeContext) -> tuple:
    latent = _latent(i.get("latent_image"))
    return (
        _sampled(
            latent,
            _text(i.get("positive")),
            i.get("seed"),
            _int(i.get("steps"), DEFAULT_STEPS),
            ctx,
        ),
    )


def ksampler_advanced(i: dict[str, Any], ctx: NodeContext) -> tuple:
    steps = _int(i.get("steps"), DEFAULT_STEPS)
    span = min(_int(i.get("end_at_step"), steps), steps) - _int(i.get("start_at_step"), 0)
    latent = _latent(i.get("latent_image"))
    return (_sampled(latent, _text(i.get("positive")), i.get("noise_seed"), max(1, span), ctx),)


def sampler_custom(i: dict[str, Any], ctx: NodeContext) -> tuple:
    steps = (
        _int(i["sigmas"].get("steps", DEFAULT_STEPS), DEFAULT_STEPS)
        if isinstance(i.get("sigmas"), Thing)
        else DEFAULT_STEPS
    )
    out = _sampled(
        _latent(i.get("latent_image")), _text(i.get("positive")), i.get("noise_seed"), steps, ctx
    )
    return out, out


def sampler_custom_advanced(i: dict[str, Any], ctx: NodeContext) -> tuple:
    sigmas, noise = i.get("sigmas"), i.get("noise")
    steps = (
        _int(sigmas.get("steps", DEFAULT_STEPS), DEFAULT_STEPS)
        if isinstance(sigmas, Thing)
        else DEFAULT_STEPS
    )
    seed = noise.get("seed") if isinstance(noise, Thing) else None
    out = _sampled(_latent(i.get("latent_image")), _text(i.get("guider")), seed, steps, ctx)
    return out, out


def empty_latent(i: dict[str, Any], ctx: NodeContext) -> tuple:
    return (
        Latent(
            imaging.sim_side(i.get("width")),
            imaging.sim_side(i.get("height")),
            max(1, _int(i.get("batch_size"), 1)),
        ),
    )


def latent_upscale(i: dict[str, Any], ctx: NodeContext) -> tuple:
    src = _latent(i.get("samples"))
    width, height = _int(i.get("width"), 0), _int(i.get("height"), 0)
    new_w = imaging.sim_side(width) if width else src.width
    new_h = imaging.sim_side(height) if height else src.height
    return (Latent(new_w, new_h, src.batch, src.text, src.seed, src.source),)


def latent_upscale_by(i: dict[str, Any], ctx: NodeContext) -> tuple:
    src = _latent(i.get("samples"))
    scale = float(i.get("scale_by", 1.0) or 1.0)
    return (
        Latent(
            imaging.clamp_side(src.width * scale),
            imaging.clamp_side(src.height * scale),
            src.batch,
            src.text,
            src.seed,
            src.source,
        ),
    )


def repeat_latent(i: dict[str, Any], ctx: NodeContext) -> tuple:
    src = _latent(i.get("samples"))
    return (
        Latent(
            src.width,
            src.height,
            src.batch * max(1, _int(i.get("amount"), 1)),
            src.text,
            src.seed,
            src.source,
        ),
    )


def vae_decode(i: dict[str, Any], ctx: NodeContext) -> tuple:
    return (imaging.decode_latent(_latent(i.get("samples"))),)


def vae_encode(i: dict[str, Any], ctx: NodeContext) -> tuple:
    image = _image(i.get("pixels"))
    return (Latent(image.width, image.height, len(image.frames), source=image),)


def empty_image(i: dict[str, Any], ctx: NodeContext) -> tuple:
    width, height = imaging.sim_side(i.get("width")), imaging.sim_side(i.get("height"))
    count = min(max(1, _int(i.get("batch_size"), 1)), imaging.MAX_FRAMES)
    frame = imaging.solid(width, height, _int(i.get("color"), 0))
    return (ImageBatch(width, height, (frame,) * count),)


def load_image(i: dict[str, Any], ctx: NodeContext) -> tuple:
    name = strip_annotation(str(i.get("image", "")))
    with open(os.path.join(ctx.input_dir, name), "rb") as handle:
        data = handle.read()
    try:
        width, height, rgb, _ = decode_png(data, max_pixels=512 * 512)
        new_w, new_h = imaging.clamp_side(width), imaging.clamp_side(height)
        frame = imaging.resize(rgb, width, height, new_w, new_h)
    except PngError:
        new_w = new_h = 64
        frame = imaging.render(new_w, new_h, hashlib.sha256(data).hexdigest(), 0, 0)
    return ImageBatch(new_w, new_h, (frame,)), Thing("MASK", name)


def image_scale(i: dict[str, Any], ctx: NodeContext) -> tuple:
    image = _image(i.get("image"))
    width, height = _int(i.get("width"), 0), _int(i.get("height"), 0)
    new_w = imaging.sim_side(width) if width else image.width
    new_h = imaging.sim_side(height) if height else image.height
    return (imaging.scale_image(image, new_w, new_h),)


def image_scale_by(i: dict[str, Any], ctx: NodeContext, factor_key: str = "scale_by") -> tuple:
    image = _image(i.get("image"))
    scale = float(i.get(factor_key, 1.0) or 1.0)
    return (
        imaging.scale_image(
            image, imaging.clamp_side(image.width * scale), imaging.clamp_side(image.height * scale)
        ),
    )


def image_scale_total_pixels(i: dict[str, Any], ctx: NodeContext) -> tuple:
    image = _image(i.get("image"))
    # the simulator's images are 1/8 of the real size a side, like latents
    target = float(i.get("megapixels", 1.0) or 1.0) * 1024 * 1024 / 64
    scale = (target / max(1, image.width * image.height)) ** 0.5
    return image_scale_by({"image": image, "scale_by": scale}, ctx)


def image_upscale_with_model(i: dict[str, Any], ctx: NodeContext) -> tuple:
    return image_scale_by({"image": i.get("image"), "scale_by": 4.0}, ctx)


def image_batch(i: dict[str, Any], ctx: NodeContext) -> tuple:
    first, second = _image(i.get("image1")), _image(i.get("image2"))
    second = imaging.scale_image(second, first.width, first.height)
    return (
        ImageBatch(first.width, first.height, (first.frames + second.frames)[: imaging.MAX_FRAMES]),
    )


def _conditioning(text: str) -> tuple:
    return (Thing("CONDITIONING", text),)


NODES: dict[str, Callable[[dict[str, Any], NodeContext], tuple]] = {
    "KSampler": ksampler,
    "KSamplerAdvanced": ksampler_advanced,
    "SamplerCustom": sampler_custom,
    "SamplerCustomAdvanced": sampler_custom_advanced,
    "RandomNoise": lambda i, c: (Thing("NOISE", info=(("seed", i.get("noise_seed")),)),),
    "BasicScheduler": lambda i, c: (
        Thing("SIGMAS", info=(("steps", _int(i.get("steps"), DEFAULT_STEPS)),)),
    ),
    "CFGGuider": lambda i, c: (Thing("GUIDER", _text(i.get("positive"))),),
    "BasicGuider": lambda i, c: (Thing("GUIDER", _text(i.get("conditioning"))),),
    "CLIPTextEncode": lambda i, c: _conditioning(str(i.get("text", ""))),
    "CLIPTextEncodeSDXL": lambda i, c: _conditioning(
        f"{i.get('text_g', '')} {i.get('text_l', '')}".strip()
    ),
    "CLIPTextEncodeSDXLRefiner": lambda i, c: _conditioning(str(i.get("text", ""))),
    "ConditioningCombine": lambda i, c: _conditioning(
        f"{_text(i.get('conditioning_1'))} | {_text(i.get('conditioning_2'))}"
    ),
    "ConditioningZeroOut": lambda i, c: _conditioning(""),
    "ControlNetApplyAdvanced": lambda i, c: (i.get("positive"), i.get("negative")),
    "EmptyLatentImage": empty_latent,
    "EmptySD3LatentImage": empty_latent,
    "LatentUpscale": latent_upscale,
    "LatentUpscaleBy": latent_upscale_by,
    "RepeatLatentBatch": repeat_latent,
    "VAEDecode": vae_decode,
    "VAEEncode": vae_encode,
    "EmptyImage": empty_image,
    "LoadImage": load_image,
    "LoadImageMask": lambda i, c: (Thing("MASK", str(i.get("image", ""))),),
    "ImageScale": image_scale,
    "ImageScaleBy": image_scale_by,
    "ImageScaleToTotalPixels": image_scale_total_pixels,
    "ImageUpscaleWithModel": image_upscale_with_model,
    "ImageInvert": lambda i, c: (imaging.map_frames(_image(i.get("image")), imaging.invert),),
    "ImageBlur": lambda i, c: (
        imaging.map_frames(_image(i.get("image")), imaging.soften)
        if _int(i.get("blur_radius"), 1) > 0
        else _image(i.get("image")),
    ),
    "ImageBatch": image_batch,
    "PrimitiveString": lambda i, c: (str(i.get("value", "")),),
    "PrimitiveStringMultiline": lambda i, c: (str(i.get("value", "")),),
    "PrimitiveInt": lambda i, c: (_int(i.get("value"), 0),),
    "PrimitiveFloat": lambda i, c: (float(i.get("value", 0.0)),),
    "PrimitiveBoolean": lambda i, c: (bool(i.get("value", False)),),
    "StringConcatenate": lambda i, c: (
        f"{i.get('string_a', '')}{i.get('delimiter', '')}{i.get('string_b', '')}",
    ),
    "StringReplace": lambda i, c: (
        str(i.get("string", "")).replace(str(i.get("find", "")), str(i.get("replace", ""))),
    ),
}


def _neutral(kind: Any) -> Any:
    if kind == "IMAGE":
        return _image(None)
    if kind == "LATENT":
        return _latent(None)
    return {"STRING": "", "INT": 0, "FLOAT": 0.0, "BOOLEAN": False}.get(kind, Thing(str(kind)))


def run_node(
    class_type: str, inputs: dict[str, Any], output_types: tuple[Any, ...], ctx: NodeContext
) -> tuple:
    """Compute a node's output values (one per output slot)."""
    func = NODES.get(class_type)
    if func is not None:
        return tuple(func(inputs, ctx))
    values = list(inputs.values())
    out = []
    for kind in output_types:
        match = next((v for v in values if value_type(v) == kind), None)
        out.append(match if match is not None else _neutral(kind))
    return tuple(out)


def planned_steps(prompt: dict[str, Any], node_id: str) -> int:
    """How many sampler steps a node will run, judged from the graph before it executes."""
    node = prompt[node_id]
    inputs = node.get("inputs", {})

    def const(value: Any, depth: int = 0) -> Any:
        # Follow links through primitive/scheduler nodes to a constant, if there is one.
        if isinstance(value, list) and len(value) == 2 and value[0] in prompt and depth < 8:
            upstream = prompt[value[0]].get("inputs", {})
            for key in ("steps", "value"):
                if key in upstream:
                    return const(upstream[key], depth + 1)
            return None
        return value

    class_type = node.get("class_type")
    if class_type in ("SamplerCustom", "SamplerCustomAdvanced"):
        steps = const(inputs.get("sigmas"))
    else:
        steps = const(inputs.get("steps"))
    steps = _int(steps, DEFAULT_STEPS)
    if class_type == "KSamplerAdvanced":
        steps = min(_int(const(inputs.get("end_at_step")), steps), steps) - _int(
            const(inputs.get("start_at_step")), 0
        )
    return max(1, steps)
