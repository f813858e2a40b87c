"""The ComfyUI adapter's pure parts: workflow files and placeholders, the video in a history entry, the
progress listener's record of WebSocket frames, and the settings' errors. (Over HTTP: test_provider_comfyui.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.domain import VideoRequest
from bot.errors import ConfigError
from bot.providers.comfyui import ComfyUIProvider, from_settings, parse_hosts
from bot.providers.comfyui_socket import ProgressListener, PromptEvents
from bot.providers.comfyui_workflow import OutputFile, fill, job_values, load_workflows, video_output
from tests.fakes.providers.comfyui import WORKFLOWS

TEXT = VideoRequest(prompt="a fox", model="comfyui/wan22-t2v", duration=5, seed=42, negative_prompt="fog")


def test_the_listener_keeps_each_prompts_last_word() -> None:
    listener = ProgressListener("ws://127.0.0.1:1/ws?clientId=x")
    for frame in (
        {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}, "sid": "x"}},
        {"type": "execution_start", "data": {"prompt_id": "p1", "timestamp": 1}},
        {"type": "progress", "data": {"value": 3, "max": 12, "node": "10"}},  # no prompt id: the running one
        {"type": "progress", "data": "garbage"},
        ["not", "a", "frame"],
    ):
        listener.record(frame)
    assert listener.events("p1") == PromptEvents(started=True, value=3, maximum=12)
    assert listener.events("p1") is not None and listener.events("p1").fraction == 0.25  # type: ignore[union-attr]
    listener.record({"type": "execution_error", "data": {"prompt_id": "p1", "exception_message": " OOM \n"}})
    assert listener.events("p1") == PromptEvents(started=True, value=3, maximum=12, finished=True, error="OOM")


def test_placeholders_keep_their_type_and_member_text_is_never_expanded() -> None:
    values = job_values(TEXT.model_copy(update={"prompt": "say {{seed}}", "aspect": "1:1"}), seed=7, image=None)
    names = ("seed", "duration", "frames", "width", "height", "negative_prompt")
    typed = {name: fill("{{" + name + "}}", values) for name in names}
    assert typed == {"seed": 7, "duration": 5, "frames": 81, "width": 640, "height": 640, "negative_prompt": "fog"}
    assert fill("cinematic, {{prompt}}, {{ fps }} fps", values) == "cinematic, say {{seed}}, 16 fps"
    assert fill("{{ seed }}", values) == 7


def test_the_video_is_found_whatever_node_wrote_it() -> None:
    outputs = {
        "3": {"images": [{"filename": "still.webp", "subfolder": "", "type": "output"}], "animated": [False]},
        "4": {"images": [{"filename": "frame.png", "subfolder": "", "type": "temp"}]},
        "5": {"gifs": [{"filename": "loop.gif", "subfolder": "a", "type": "output", "format": "image/gif"}]},
        "6": {"videos": [{"filename": "clip.mp4", "subfolder": "v", "type": "output"}]},
    }
    assert video_output(outputs) == OutputFile("clip.mp4", "v", "output")
    del outputs["6"]
    assert video_output(outputs) == OutputFile("loop.gif", "a", "output")
    assert video_output({"3": outputs["3"], "4": outputs["4"]}) is None


def test_capabilities_follow_the_placeholders(tmp_path: Path) -> None:
    def plain(graph: dict[str, Any]) -> None:
        graph["8"]["inputs"]["text"] = "blurry"
        graph["10"]["inputs"]["noise_seed"] = 1

    graph = json.loads((WORKFLOWS / "wan22-t2v.json").read_text())
    plain(graph)
    (tmp_path / "plain.json").write_text(json.dumps(graph))
    (tmp_path / "wan22-i2v.json").write_text((WORKFLOWS / "wan22-i2v.json").read_text())
    hosts = parse_hosts("http://gpu:8188")
    models = ComfyUIProvider(hosts, load_workflows(tmp_path), max_download_bytes=10**6).models()
    assert [(m.id, m.supports_image, m.supports_seed, m.supports_negative_prompt) for m in models] == [
        ("comfyui/plain", False, False, False), ("comfyui/wan22-i2v", True, True, True),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "settings", "complaint"),
    [
        (None, {"comfyui_workflow": None}, "COMFYUI_WORKFLOW is not set"),
        ("{not json", {}, "is not valid JSON"),
        ('{"nodes": [], "links": []}', {}, "UI format"),
        ('{"1": {"class_type": "VAELoader", "inputs": {}}}', {}, "no output node"),
        ('{"1": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "{{promt}}"}}}', {}, "promt"),
        ('{"1": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0]}}}', {}, "node 2, which is not in it"),
        (None, {"comfyui_url": "gpu1:8188"}, "COMFYUI_URL is invalid"),
    ],
)
def test_a_bad_setting_is_one_clear_line(
    tmp_path: Path, content: str | None, settings: dict[str, Any], complaint: str
) -> None:
    path = tmp_path / "flow.json"
    if content is not None:
        path.write_text(content)
    options = {"comfyui_url": "http://gpu:8188", "comfyui_workflow": path, **settings}
    with pytest.raises(ConfigError, match=re.escape(complaint)) as error:
        from_settings(Settings(_env_file=None, data_dir=tmp_path, **options))
    assert "COMFYUI_" in str(error.value) and "\n" not in str(error.value)
    assert from_settings(Settings(_env_file=None, data_dir=tmp_path)) is None
