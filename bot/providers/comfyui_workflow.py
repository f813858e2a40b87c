"""ComfyUI workflows as models: reading `COMFYUI_WORKFLOW`, filling in a job's placeholders, and reading back
what ComfyUI made of it (the video in a history entry, the nodes a rejected prompt names).

A workflow is a file exported from ComfyUI in API format: a JSON object of nodes, `{"<id>": {"class_type",
"inputs"}}`, where an input is a value or a link `["<source id>", <output slot>]`. Each file is one model,
`comfyui/<file stem>`. Before each job every string input is searched for placeholders (interface.md): an input
that is exactly `"{{name}}"` becomes the value with its type (seed, width, height, frames and fps are integers,
duration a number, the rest strings); inside a longer string the value is put in as text. A workflow's
capabilities follow from the placeholders it uses: `{{image}}` makes it image-to-video (and then it needs an
image), `{{seed}}` lets members choose the seed, `{{negative_prompt}}` takes a negative prompt.

Frames follow Wan's rule of 4k+1: `frames = duration * fps + 1` (81 at 16 fps for 5 s), which HunyuanVideo
shares. A model with other rules (LTX: 8k+1 frames at 24 fps) needs a workflow that sets its own length and
frame rate rather than using `{{frames}}` and `{{fps}}`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.domain import ASPECTS, Aspect, ModelInfo, VideoRequest
from bot.errors import ConfigError

PROVIDER = "comfyui"
SETTING = "COMFYUI_WORKFLOW"
FPS = 16
"""Wan 2.1/2.2 (14B) are trained at 16 frames per second."""
DURATIONS = tuple(range(1, 11))
"""Generic limits: a self-hosted GPU's memory decides the real ones (narrow them per model in MODELS_FILE)."""
SIZES: Mapping[Aspect, tuple[int, int]] = {"16:9": (832, 480), "9:16": (480, 832), "1:1": (640, 640)}
"""Wan's 480p sizes, each side a multiple of 32 as Wan 2.2's latent nodes want."""
NAMES = ("prompt", "negative_prompt", "seed", "width", "height", "frames", "fps", "duration", "image")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")
"""`{{name}}`, spaces inside the braces allowed (`{{ prompt }}`)."""
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".webp", ".gif")
"""Video files ComfyUI's output nodes write, the ones the bot prefers first (an MP4 needs no transcoding)."""
_ANIMATED_ONLY = (".webp", ".gif")
"""Extensions that are also still images: taken from `images` only when the node says they are animated."""
_OUTPUT_HINTS = ("save", "combine", "output", "preview")
"""How output nodes are named (SaveVideo, SaveAnimatedWEBP, VHS_VideoCombine…): a workflow without one would
make nothing. `health()` checks it exactly, against the server's `/object_info`."""

Value = str | int


@dataclass(frozen=True, slots=True)
class Workflow:
    name: str
    """The file name without `.json`: the model is `comfyui/<name>`."""
    path: Path
    graph: Mapping[str, Any]
    placeholders: frozenset[str]

    @property
    def model_id(self) -> str:
        return f"{PROVIDER}/{self.name}"

    @property
    def needs_image(self) -> bool:
        return "image" in self.placeholders

    @property
    def class_types(self) -> frozenset[str]:
        return frozenset(node["class_type"] for node in self.graph.values())

    def model_info(self) -> ModelInfo:
        kind = "image-to-video (needs a first frame)" if self.needs_image else "text-to-video"
        return ModelInfo(
            id=self.model_id,
            label=f"{self.name} (ComfyUI)",
            durations=DURATIONS,
            aspects=ASPECTS,
            supports_image=self.needs_image,
            requires_image=self.needs_image,
            supports_seed="seed" in self.placeholders,
            supports_negative_prompt="negative_prompt" in self.placeholders,
            description=f"Self-hosted ComfyUI workflow {self.path.name}: {kind}, {FPS} fps.",
        )

    def render(self, values: Mapping[str, Value]) -> dict[str, Any]:
        """The workflow with this job's values in place of its placeholders (a copy: the template stays)."""
        graph = copy.deepcopy(dict(self.graph))
        for node in graph.values():
            inputs = node["inputs"]
            for key, value in inputs.items():
                if isinstance(value, str):
                    inputs[key] = fill(value, values)
        return graph


def fill(text: str, values: Mapping[str, Value]) -> Value:
    """One string input with its placeholders replaced. A single pass: text a member typed (a prompt saying
    "{{seed}}") is put in as it is, never expanded again."""
    whole = PLACEHOLDER.fullmatch(text)
    if whole is not None:
        return values[whole.group(1)]
    return PLACEHOLDER.sub(lambda found: str(values[found.group(1)]), text)


def job_values(request: VideoRequest, *, seed: int, image: str | None) -> dict[str, Value]:
    width, height = SIZES[request.aspect]
    return {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt or "",
        "seed": seed,
        "width": width,
        "height": height,
        "frames": request.duration * FPS + 1,
        "fps": FPS,
        "duration": request.duration,
        "image": image or "",
    }


def load_workflows(path: Path | None) -> tuple[Workflow, ...]:
    """Every workflow `COMFYUI_WORKFLOW` names: one file, or each `*.json` in a folder (sorted by name)."""
    if path is None:
        raise ConfigError(f"{SETTING} is not set: COMFYUI_URL needs a workflow exported in ComfyUI's API format")
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise ConfigError(f"{SETTING} names the folder {path}, which holds no *.json workflow")
        return tuple(load_workflow(file) for file in files)
    if not path.is_file():
        raise ConfigError(f"{SETTING} names {path}, which does not exist")
    return (load_workflow(path),)


def load_workflow(path: Path) -> Workflow:
    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{SETTING} file {path} {problem}")

    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot be read ({exc})") from None
    except ValueError as exc:
        raise bad(f"is not valid JSON ({exc})") from None
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise bad("is in ComfyUI's UI format: export it with Workflow > Export (API)")
    if not isinstance(graph, dict) or not graph:
        raise bad("is not in ComfyUI's API format (a JSON object of nodes)")
    used: set[str] = set()
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise bad(f"is not in ComfyUI's API format: node {node_id} has no class_type")
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            raise bad(f"is not in ComfyUI's API format: node {node_id} has no inputs")
        for name, value in inputs.items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) not in graph:
                raise bad(f"links input {name} of node {node_id} to node {value[0]}, which is not in it")
            if isinstance(value, str):
                used.update(PLACEHOLDER.findall(value))
    unknown = sorted(used.difference(NAMES))
    if unknown:
        raise bad(f"uses unknown placeholders {', '.join(unknown)} (known: {', '.join(NAMES)})")
    if not any(_looks_like_output(node["class_type"]) for node in graph.values()):
        raise bad("has no output node (a Save… or …VideoCombine node that writes the video)")
    return Workflow(name=path.stem, path=path, graph=graph, placeholders=frozenset(used))


def _looks_like_output(class_type: str) -> bool:
    lowered = class_type.lower()
    return any(hint in lowered for hint in _OUTPUT_HINTS)


@dataclass(frozen=True, slots=True)
class OutputFile:
    """A file in ComfyUI's output (or temp) folder, as `GET /view` names it."""

    filename: str
    subfolder: str
    type: str

    @property
    def query(self) -> dict[str, str]:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}


def video_output(outputs: Any) -> OutputFile | None:
    """The video in a history entry's `outputs`, whatever node wrote it: core savers list it under `images`
    (with `animated`), VideoHelperSuite under `gifs`, a few nodes under `videos`. An MP4 is preferred."""
    found = [file for output in _dict(outputs).values() for file in _video_files(_dict(output))]
    if not found:
        return None
    return min(found, key=lambda file: VIDEO_EXTENSIONS.index(Path(file.filename).suffix.lower()))


def _video_files(output: dict[str, Any]) -> list[OutputFile]:
    animated = any(output.get("animated") or ())
    files = []
    for key in ("images", "gifs", "videos"):
        for item in output.get(key) or ():
            if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
                continue
            extension = Path(item["filename"]).suffix.lower()
            still = key == "images" and extension in _ANIMATED_ONLY and not animated
            if extension in VIDEO_EXTENSIONS and not still:
                files.append(
                    OutputFile(item["filename"], str(item.get("subfolder") or ""), str(item.get("type") or "output"))
                )
    return files


def describe_rejection(body: Mapping[str, Any]) -> str:
    """A rejected `POST /prompt` in words an admin can act on: which node (id and type) and input failed."""
    parts: list[str] = []
    node_errors = body.get("node_errors")
    for node_id, entry in node_errors.items() if isinstance(node_errors, dict) else ():
        if not isinstance(entry, dict):
            continue
        for error in entry.get("errors") or ():
            if isinstance(error, dict):
                extra = _dict(error.get("extra_info"))
                where = f" input {extra['input_name']}" if extra.get("input_name") else ""
                text = f"{error.get('message', 'invalid')}: {error.get('details', '')}".rstrip(": ")
                parts.append(f"node {node_id} ({entry.get('class_type', '?')}){where}: {text}")
    if parts:
        return "; ".join(parts)
    error = body.get("error")
    if isinstance(error, dict):
        extra = _dict(error.get("extra_info"))
        where = f"node {extra['node_id']} ({extra.get('class_type')}): " if extra.get("node_id") else ""
        return f"{where}{error.get('message', 'invalid prompt')} {error.get('details') or ''}".strip()
    return str(error or body)[:300]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
