"""The node types the ComfyUI fake knows, and its check of a prompt, shaped as ComfyUI's `validate_prompt`
answers (`execution.py`): `missing_node_type`, `prompt_no_outputs`, or `prompt_outputs_failed_validation` with
`node_errors` per node (`required_input_missing`, `bad_linked_input`, `return_type_mismatch`,
`invalid_input_type`, `value_not_in_list`, `custom_validation_failed` for a LoadImage of a file never uploaded).

The catalogue is what the example workflows in `workflows/` (Wan 2.2 14B, text and image to video) and the
tests use, plus the usual video output nodes; model-file inputs list the files this "server" has installed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

SCALARS: dict[str, tuple[type, ...]] = {"INT": (int,), "FLOAT": (int, float), "STRING": (str,), "BOOLEAN": (bool,)}
UPLOADED = "UPLOADED"
"""LoadImage's `image`: a file in the input folder."""


@dataclass(frozen=True)
class Node:
    """A node type: inputs (a scalar type, a link type, or a tuple of allowed values), outputs, output node."""

    required: dict[str, Any]
    optional: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    output_node: bool = False


UNETS = tuple(f"wan2.2_{k}_{n}_noise_14B_fp8_scaled.safetensors" for k in ("t2v", "i2v") for n in ("high", "low"))
SAMPLERS, SCHEDULERS = ("euler", "uni_pc", "dpmpp_2m"), ("simple", "normal", "karras")
SIZE = {"width": "INT", "height": "INT", "length": "INT", "batch_size": "INT"}
COND = {"positive": "CONDITIONING", "negative": "CONDITIONING"}
SAMPLING = {"model": "MODEL", "steps": "INT", "cfg": "FLOAT", "sampler_name": SAMPLERS, "scheduler": SCHEDULERS}
ADVANCED = {"add_noise": ("enable", "disable"), "noise_seed": "INT", "start_at_step": "INT", "end_at_step": "INT"}
SAVE = {"filename_prefix": "STRING"}

NODES: dict[str, Node] = {
    "UNETLoader": Node({"unet_name": UNETS, "weight_dtype": ("default", "fp8_e4m3fn", "fp8_e5m2")}, {}, ("MODEL",)),
    "CLIPLoader": Node(
        {"clip_name": ("umt5_xxl_fp8_e4m3fn_scaled.safetensors",), "type": ("wan", "ltxv")},
        {"device": ("default", "cpu")},
        ("CLIP",),
    ),
    "VAELoader": Node({"vae_name": ("wan_2.1_vae.safetensors",)}, {}, ("VAE",)),
    "ModelSamplingSD3": Node({"model": "MODEL", "shift": "FLOAT"}, {}, ("MODEL",)),
    "CLIPTextEncode": Node({"text": "STRING", "clip": "CLIP"}, {}, ("CONDITIONING",)),
    "EmptyHunyuanLatentVideo": Node(SIZE, {}, ("LATENT",)),
    "WanImageToVideo": Node(
        {**COND, "vae": "VAE", **SIZE}, {"start_image": "IMAGE"}, ("CONDITIONING",) * 2 + ("LATENT",)
    ),
    "KSampler": Node(
        {**SAMPLING, **COND, "seed": "INT", "latent_image": "LATENT", "denoise": "FLOAT"}, {}, ("LATENT",)
    ),
    "KSamplerAdvanced": Node(
        {**SAMPLING, **COND, **ADVANCED, "latent_image": "LATENT", "return_with_leftover_noise": ("disable", "enable")},
        {},
        ("LATENT",),
    ),
    "VAEDecode": Node({"samples": "LATENT", "vae": "VAE"}, {}, ("IMAGE",)),
    "LoadImage": Node({"image": UPLOADED}, {}, ("IMAGE", "MASK")),
    "CreateVideo": Node({"images": "IMAGE", "fps": "FLOAT"}, {"audio": "AUDIO"}, ("VIDEO",)),
    "SaveVideo": Node(
        {"video": "VIDEO", **SAVE, "format": ("auto", "mp4", "webm"), "codec": ("auto", "h264")}, {}, (), True
    ),
    "SaveAnimatedWEBP": Node(
        {"images": "IMAGE", **SAVE, "fps": "FLOAT", "lossless": "BOOLEAN", "quality": "INT", "method": ("default",)},
        {},
        (),
        True,
    ),
    "VHS_VideoCombine": Node(
        {
            "images": "IMAGE",
            "frame_rate": "FLOAT",
            "loop_count": "INT",
            **SAVE,
            "pingpong": "BOOLEAN",
            "format": ("image/gif", "video/h264-mp4", "video/webm"),
            "save_output": "BOOLEAN",
        },
        {"audio": "AUDIO"},
        ("VHS_FILENAMES",),
        True,
    ),
}


def problem(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    """One of ComfyUI's validation errors."""
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def validate(
    prompt: dict[str, Any], nodes: Mapping[str, Node], uploads: Collection[str]
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(error, node_errors) as ComfyUI answers a prompt it will not queue; (None, {}) for a good one."""
    for node_id, node in prompt.items():
        kind = node.get("class_type") if isinstance(node, dict) else None
        if kind not in nodes or not isinstance(node.get("inputs"), dict):
            title = (node.get("_meta") or {}).get("title", kind) if isinstance(node, dict) else None
            message = f"Node '{title}' not found. The custom node may not be installed."
            found = problem("missing_node_type", message, f"Node ID '#{node_id}'", node_id=node_id, class_type=kind,
                            node_title=title)  # fmt: skip
            return found, {}
    outputs = [node_id for node_id, node in prompt.items() if nodes[node["class_type"]].output_node]
    if not outputs:
        return problem("prompt_no_outputs", "Prompt has no outputs"), {}
    node_errors = {}
    for node_id, node in prompt.items():
        errors = _node_problems(prompt, node, nodes, uploads)
        if errors:
            node_errors[node_id] = {"errors": errors, "dependent_outputs": outputs, "class_type": node["class_type"]}
    if not node_errors:
        return None, {}
    details = "\n".join(f"{e['message']}: {e['details']}" for entry in node_errors.values() for e in entry["errors"])
    return problem("prompt_outputs_failed_validation", "Prompt outputs failed validation", details), node_errors


def _node_problems(
    prompt: dict[str, Any], node: dict[str, Any], nodes: Mapping[str, Node], uploads: Collection[str]
) -> list[dict[str, Any]]:
    spec, inputs, errors = nodes[node["class_type"]], node["inputs"], []
    for name, kind in {**spec.required, **spec.optional}.items():
        if name not in inputs:
            if name in spec.required:
                errors.append(problem("required_input_missing", "Required input is missing", name, input_name=name))
            continue
        value = inputs[name]
        if isinstance(kind, str) and kind not in SCALARS and kind != UPLOADED:
            errors.extend(_link_problems(prompt, nodes, name, kind, value))
        elif kind in SCALARS and (
            not isinstance(value, SCALARS[kind]) or isinstance(value, bool) != (kind == "BOOLEAN")
        ):
            message = f"Failed to convert an input value to a {kind} value"
            details = f"{name}, {value}, invalid literal for {kind}: {value!r}"
            errors.append(problem("invalid_input_type", message, details, input_name=name, received_value=value))
        elif isinstance(kind, tuple) and value not in kind:
            details = f"{name}: '{value}' not in {list(kind)}"
            errors.append(problem("value_not_in_list", "Value not in list", details, input_name=name))
        elif kind == UPLOADED and value not in uploads:
            details = f"{name} - Invalid image file: {value}"
            errors.append(problem("custom_validation_failed", "Custom validation failed for node", details,
                                  input_name=name))  # fmt: skip
    return errors


def _link_problems(
    prompt: dict[str, Any], nodes: Mapping[str, Node], name: str, kind: str, value: Any
) -> list[dict[str, Any]]:
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)):
        message = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
        return [problem("bad_linked_input", message, name, input_name=name, received_value=value)]
    source = prompt.get(str(value[0]))
    if source is None:  # ComfyUI's `prompt[o_id]` raises KeyError inside its validation
        message = "Exception when validating node"
        return [problem("exception_during_validation", message, f"'{value[0]}'", exception_type="KeyError")]
    produced = nodes[source["class_type"]].outputs
    received = produced[value[1]] if 0 <= value[1] < len(produced) else None
    if received != kind:
        details = f"{name}, received_type({received}) mismatch input_type({kind})"
        return [problem("return_type_mismatch", "Return type mismatch between linked nodes", details, input_name=name)]
    return []


def object_info(nodes: Mapping[str, Node], uploads: Collection[str]) -> dict[str, Any]:
    """`GET /object_info`: every node type with its inputs, outputs and whether it is an output node."""

    def spec(kind: Any) -> list[Any]:
        if kind == UPLOADED:
            return [sorted(uploads), {"image_upload": True}]
        return [list(kind) if isinstance(kind, tuple) else kind, {}]

    info = {}
    for name, node in nodes.items():
        inputs = {"required": {k: spec(v) for k, v in node.required.items()},
                  "optional": {k: spec(v) for k, v in node.optional.items()}}  # fmt: skip
        outputs = list(node.outputs)
        info[name] = {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items()}, "output": outputs,
                      "output_is_list": [False] * len(outputs), "output_name": outputs, "name": name,
                      "display_name": name, "description": "", "python_module": "nodes", "category": "fake",
                      "output_node": node.output_node}  # fmt: skip
    return info


def write_output(
    class_type: str, inputs: Mapping[str, Any], number: int
) -> tuple[tuple[str, str, str], dict[str, Any]]:
    """What an output node writes when its prompt ends: the file, (type, subfolder, filename), and the UI output
    the history shows for it, shaped as that node type reports it."""
    subfolder, _, prefix = str(inputs.get("filename_prefix", "ComfyUI")).rpartition("/")
    if class_type == "VHS_VideoCombine":
        extension = {"image/gif": "gif", "video/webm": "webm"}.get(inputs["format"], "mp4")
        name = f"{prefix}_{number:05}.{extension}"
        folder = "output" if inputs["save_output"] else "temp"  # VHS previews land in temp when not saved
        shown = {"filename": name, "subfolder": subfolder, "type": folder, "format": inputs["format"],
                 "frame_rate": inputs["frame_rate"], "workflow": name.rsplit(".", 1)[0] + ".png",
                 "fullpath": f"/comfy/{folder}/{subfolder}/{name}"}  # fmt: skip
        return (folder, subfolder, name), {"gifs": [shown]}
    extension = "webp" if class_type == "SaveAnimatedWEBP" else "webm" if inputs.get("format") == "webm" else "mp4"
    name = f"{prefix}_{number:05}_.{extension}"
    return ("output", subfolder, name), {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}],
                                         "animated": [True]}  # fmt: skip
