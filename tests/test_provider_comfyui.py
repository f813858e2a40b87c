"""The ComfyUI adapter against the loopback ComfyUI fake, over real HTTP and a real WebSocket."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.discord.messages import ENGLISH, reason_text
from bot.domain import VideoRequest
from bot.errors import CredentialsRejected, ProviderError, RemoteJobLost, RequestRejected
from bot.providers.base import PollResult, RemoteJob, RemoteState
from bot.providers.comfyui import ComfyUIProvider, from_settings, parse_hosts
from bot.providers.comfyui_socket import PromptEvents
from bot.providers.comfyui_workflow import load_workflows
from tests.fakes.providers.comfyui import WORKFLOWS, ComfyUIFake
from tests.provider_harness import adapter_for

T2V, I2V = ComfyUIFake.model, ComfyUIFake.image_model
TEXT = VideoRequest(prompt="a red fox running through snow", model=T2V, duration=5, seed=42, negative_prompt="fog")


comfyui = adapter_for(from_settings)


def remote(remote_id: str, request: VideoRequest = TEXT) -> RemoteJob:
    return RemoteJob(job_id="job-1", remote_id=remote_id, request=request)


async def poll_until_done(provider: ComfyUIProvider, job: RemoteJob, limit: int = 10) -> PollResult:
    for _ in range(limit):
        result = await provider.poll(job)
        if result.state not in (RemoteState.QUEUED, RemoteState.RUNNING):
            return result
    raise AssertionError(f"still {result.state} after {limit} polls")


async def until(provider: ComfyUIProvider, check: Callable[[], object]) -> None:
    """Wait (on the listener's own signal, never a timer) until the WebSocket has told what `check` wants."""
    listener = next(iter(provider.listeners.values()))
    while not check():
        listener.changed.clear()
        await asyncio.wait_for(listener.changed.wait(), 5)


def workflow_file(tmp_path: Path, edit: Callable[[dict[str, Any]], None], name: str = "custom") -> Path:
    graph = json.loads((WORKFLOWS / "wan22-t2v.json").read_text())
    edit(graph)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(graph))
    return path


async def test_text_to_video_sends_the_filled_workflow_and_finishes_with_progress(tmp_path: Path) -> None:
    async with ComfyUIFake() as fake, comfyui(fake, tmp_path) as provider:
        remote_id = await provider.submit("job-1", TEXT)
        prompt_id = str(uuid.uuid5(uuid.UUID("5f0c4a38-8a56-4e0c-9c55-2d3c1d1b6a71"), "job-1"))
        assert remote_id == f"{prompt_id}@{fake.base_url}/"
        body = fake.jobs[prompt_id].body
        assert set(body) == {"prompt", "client_id", "prompt_id"}
        assert (body["client_id"], body["prompt_id"]) == (provider.client_id, prompt_id)
        graph = body["prompt"]
        assert "{{" not in json.dumps(graph)
        assert graph["7"]["inputs"]["text"] == TEXT.prompt
        assert graph["8"]["inputs"]["text"] == "blurry, low quality, static, watermark, text, fog"
        assert graph["9"]["inputs"] == {"width": 832, "height": 480, "length": 81, "batch_size": 1}
        assert graph["10"]["inputs"]["noise_seed"] == 42 and graph["13"]["inputs"]["fps"] == 16
        assert graph["11"]["inputs"]["latent_image"] == ["10", 0], "links are left alone"

        listener = provider.listeners[f"{fake.base_url}/"]
        await asyncio.wait_for(listener.connected.wait(), 5)
        first = await provider.poll(remote(remote_id))
        assert first.state is RemoteState.RUNNING and first.queue_position is None
        await until(provider, lambda: (listener.events(prompt_id) or PromptEvents()).fraction)
        second = await provider.poll(remote(remote_id))
        assert second.state is RemoteState.RUNNING and second.progress is not None and second.progress >= 1 / 3
        done = await provider.poll(remote(remote_id))
        assert done.state is RemoteState.SUCCEEDED and done.progress == 1.0
        assert done.output_url == f"{fake.base_url}/view?filename=videobot_00001_.mp4&subfolder=video&type=output"
        await provider.download(remote(remote_id), done, tmp_path / "clip.mp4")
        assert (tmp_path / "clip.mp4").read_bytes() == fake.video
        await until(provider, lambda: (listener.events(prompt_id) or PromptEvents()).finished)


async def test_image_to_video_uploads_the_first_frame_and_loads_it(tmp_path: Path) -> None:
    Image.new("RGB", (64, 48), "navy").save(tmp_path / "frame.png")
    request = VideoRequest(prompt="waves", model=I2V, duration=3, aspect="9:16", image_path=str(tmp_path / "frame.png"))
    async with ComfyUIFake() as fake, comfyui(fake, tmp_path) as provider:
        remote_id = await provider.submit("job-2", request)
        prompt_id = remote_id.split("@")[0]
        name = f"videobot-{prompt_id}.png"
        assert fake.uploads == {name: (tmp_path / "frame.png").read_bytes()}
        assert fake.upload_forms == [{"type": "input", "overwrite": "true"}]
        graph = fake.jobs[prompt_id].body["prompt"]
        assert graph["9"]["inputs"]["image"] == name
        sized = {key: graph["10"]["inputs"][key] for key in ("width", "height", "length")}
        assert sized == {"width": 480, "height": 832, "length": 49}
        assert isinstance(graph["11"]["inputs"]["noise_seed"], int), "a seed of its own when none is given"
        assert (await poll_until_done(provider, remote(remote_id, request))).state is RemoteState.SUCCEEDED

        with pytest.raises(RequestRejected, match="attach one"):
            await provider.submit("job-3", VideoRequest(prompt="waves", model=I2V, duration=3))
        (tmp_path / "frame.txt").write_text("not an image")
        with pytest.raises(RequestRejected, match="PNG, JPEG or WebP"):
            await provider.submit("job-4", request.model_copy(update={"image_path": str(tmp_path / "frame.txt")}))


async def test_a_waiting_prompt_reports_its_place_in_the_queue(tmp_path: Path) -> None:
    async with ComfyUIFake() as fake, comfyui(fake, tmp_path) as provider:
        first = await provider.submit("job-a", TEXT)
        second = await provider.submit("job-b", TEXT)
        third = await provider.submit("job-c", TEXT)
        assert (await provider.poll(remote(first))).state is RemoteState.RUNNING
        assert (await provider.poll(remote(second))) == PollResult(RemoteState.QUEUED, queue_position=0)
        assert (await provider.poll(remote(third))).queue_position == 1
        assert (await poll_until_done(provider, remote(first))).state is RemoteState.SUCCEEDED
        assert (await provider.poll(remote(second))).state is RemoteState.RUNNING


async def test_a_failing_node_reaches_the_member_with_its_reason(tmp_path: Path) -> None:
    async with ComfyUIFake() as fake, comfyui(fake, tmp_path) as provider:
        fake.refuse_reason = "nudity detected"
        remote_id = await provider.submit("job-1", TEXT)
        result = await poll_until_done(provider, remote(remote_id))
        assert (result.state, reason_text(result.error, ENGLISH)) == (
            RemoteState.FAILED,
            "Content blocked by the safety checker: nudity detected",
        )
        fake.refuse_reason, fake.never_finish = None, True
        remote_id = await provider.submit("job-2", TEXT)
        for _ in range(6):
            assert (await provider.poll(remote(remote_id))).state is RemoteState.RUNNING


async def test_cancel_interrupts_a_running_prompt_and_dequeues_a_waiting_one(tmp_path: Path) -> None:
    async with ComfyUIFake() as fake, comfyui(fake, tmp_path) as provider:
        running = await provider.submit("job-a", TEXT)
        waiting = await provider.submit("job-b", TEXT)
        await provider.poll(remote(running))
        await provider.cancel(remote(waiting))
        assert fake.deleted == [waiting.split("@")[0]] and fake.interrupted == []
        with pytest.raises(RemoteJobLost):
            await provider.poll(remote(waiting))
        await provider.cancel(remote(running))
        assert fake.interrupted == [running.split("@")[0]]
        assert (await provider.poll(remote(running))).state is RemoteState.CANCELLED
        await provider.cancel(remote(running))  # finished: nothing left to stop, nothing sent
        assert len(fake.requests("POST /interrupt")) == 1


async def test_a_resubmit_finds_the_prompt_instead_of_queueing_it_twice(tmp_path: Path) -> None:
    async with ComfyUIFake() as fake:
        async with comfyui(fake, tmp_path) as provider:
            remote_id = await provider.submit("job-1", TEXT)
            assert await provider.submit("job-1", TEXT) == remote_id
        async with comfyui(fake, tmp_path) as restarted:  # another process, another client id
            assert await restarted.submit("job-1", TEXT) == remote_id
            assert (await poll_until_done(restarted, remote(remote_id))).state is RemoteState.SUCCEEDED
            assert await restarted.submit("job-1", TEXT) == remote_id, "found in the history too"
            result = await restarted.poll(remote(remote_id))
            await restarted.download(remote(remote_id), result, tmp_path / "clip.mp4")
        assert fake.creates == 1 and provider.safe_resubmit


async def test_a_lost_create_answer_is_checked_before_anything_is_sent_again(tmp_path: Path) -> None:
    async with ComfyUIFake() as fake, comfyui(fake, tmp_path) as provider:
        fake.drop_create_answer = True
        remote_id = await provider.submit("job-1", TEXT)
        assert fake.creates == 1 and remote_id.startswith(next(iter(fake.jobs)))

        fake.fail_next("create", 500)
        with pytest.raises(ProviderError) as failed:
            await provider.submit("job-2", TEXT)
        assert failed.value.retryable and fake.creates == 1, "not taken, so safe to send again"
        await provider.submit("job-2", TEXT)
        assert fake.creates == 2


async def test_busy_and_failing_answers_are_retryable(tmp_path: Path) -> None:
    async with ComfyUIFake() as fake, comfyui(fake, tmp_path) as provider:
        fake.fail_next("create", 429, retry_after=2)
        with pytest.raises(ProviderError) as busy:
            await provider.submit("job-1", TEXT)
        assert (busy.value.retryable, busy.value.retry_after, fake.creates) == (True, 2, 0)
        remote_id = await provider.submit("job-1", TEXT)
        fake.fail_next("poll", 503, times=3)
        for _ in range(3):
            with pytest.raises(ProviderError) as down:
                await provider.poll(remote(remote_id))
            assert down.value.retryable
        assert (await poll_until_done(provider, remote(remote_id))).state is RemoteState.SUCCEEDED
        with pytest.raises(RemoteJobLost):
            await provider.poll(remote(f"{uuid.uuid4()}@{fake.base_url}/"))
        with pytest.raises(RemoteJobLost):
            await provider.poll(remote("not-a-comfyui-id"))


async def test_the_fake_is_as_strict_as_comfyui(tmp_path: Path) -> None:
    graph = json.loads((WORKFLOWS / "wan22-i2v.json").read_text())
    async with ComfyUIFake() as fake, httpx.AsyncClient(base_url=fake.base_url) as client:

        async def rejected(body: Any) -> dict[str, Any]:
            answer = await client.post("/prompt", json=body)
            assert answer.status_code == 400, answer.text
            return dict(answer.json())

        assert (await rejected({"client_id": "x"}))["error"]["type"] == "no_prompt"
        assert (await rejected({"prompt": graph, "prompt_id": "JOB-1"}))["error"]["type"] == "invalid_prompt_id"
        errors = (await rejected({"prompt": graph}))["node_errors"]  # placeholders left in place
        found = sorted(
            (node, e["type"], e["extra_info"]["input_name"]) for node in errors for e in errors[node]["errors"]
        )
        assert found == [
            ("10", "invalid_input_type", "height"), ("10", "invalid_input_type", "length"),
            ("10", "invalid_input_type", "width"), ("11", "invalid_input_type", "noise_seed"),
            ("14", "invalid_input_type", "fps"), ("9", "custom_validation_failed", "image"),  # never uploaded
        ]  # fmt: skip
        broken = json.loads(json.dumps(graph).replace('["13", 0]', '["99", 0]').replace('"euler"', '"eulr"'))
        errors = (await rejected({"prompt": broken}))["node_errors"]
        assert errors["14"]["errors"][0]["type"] == "exception_during_validation"
        assert errors["11"]["class_type"] == "KSamplerAdvanced" and "eulr" in json.dumps(errors["11"])
        unknown = {**graph, "16": {"class_type": "WanVideoSampler", "inputs": {}}}
        assert (await rejected({"prompt": unknown}))["error"]["extra_info"]["node_id"] == "16"
        no_output = {key: node for key, node in graph.items() if key != "15"}
        assert (await rejected({"prompt": no_output}))["error"]["type"] == "prompt_no_outputs"
        assert fake.creates == 0
        assert (await client.post("/upload/image", data={"type": "input"})).status_code == 400
        assert (await client.get("/view", params={"filename": "nope.mp4", "type": "output"})).status_code == 404
        assert (await client.get("/queue", headers={"Origin": "http://evil.example"})).status_code == 403


async def test_a_rejected_prompt_names_the_node_input_and_workflow(tmp_path: Path) -> None:
    def typo(graph: dict[str, Any]) -> None:
        graph["10"]["inputs"]["sampler_name"] = "eulr"

    async with ComfyUIFake() as fake:
        async with comfyui(fake, tmp_path, comfyui_workflow=workflow_file(tmp_path, typo)) as provider:
            with pytest.raises(
                RequestRejected,
                match=r"node 10 \(KSamplerAdvanced\) input sampler_name: Value not in list.*eulr.*custom.json",
            ):
                await provider.submit("job-1", TEXT.model_copy(update={"model": "comfyui/custom"}))
        del fake.nodes["CreateVideo"]
        async with comfyui(fake, tmp_path) as provider:
            with pytest.raises(RequestRejected, match=r"node 13 \(CreateVideo\).*not found"):
                await provider.submit("job-2", TEXT)
            health = await provider.health()
        assert health.reachable and health.authenticated
        assert health.problem is not None and "wan22-t2v.json" in health.problem and "CreateVideo" in health.problem


async def test_other_output_nodes_are_read_from_the_history(tmp_path: Path) -> None:
    def combine(graph: dict[str, Any]) -> None:
        del graph["13"], graph["14"]
        graph["20"] = {"class_type": "VHS_VideoCombine", "inputs": {
            "images": ["12", 0], "frame_rate": "{{fps}}", "loop_count": 0, "filename_prefix": "wan/clip",
            "format": "video/h264-mp4", "pingpong": False, "save_output": False}}  # fmt: skip

    async with ComfyUIFake() as fake, comfyui(fake, tmp_path, comfyui_workflow=workflow_file(tmp_path, combine)) as p:
        remote_id = await p.submit("job-1", TEXT.model_copy(update={"model": "comfyui/custom"}))
        result = await poll_until_done(p, remote(remote_id))
        assert result.output_url == f"{fake.base_url}/view?filename=clip_00001.mp4&subfolder=wan&type=temp"
        await p.download(remote(remote_id), result, tmp_path / "clip.mp4")
        assert (tmp_path / "clip.mp4").read_bytes() == fake.video


async def test_credentials_in_the_url_go_to_comfyui_and_nowhere_else(tmp_path: Path) -> None:
    async with ComfyUIFake() as fake:
        fake.basic_auth = ("bob", "s3cret")
        async with comfyui(fake, tmp_path) as provider:
            with pytest.raises(CredentialsRejected) as refused:
                await provider.submit("job-1", TEXT)
            assert refused.value.variable == "COMFYUI_URL"
            health = await provider.health()
            assert not health.authenticated and "COMFYUI_URL" in str(health.problem)
        with_password = fake.base_url.replace("http://", "http://bob:s3cret@")
        async with comfyui(fake, tmp_path, comfyui_url=with_password) as provider:
            remote_id = await provider.submit("job-1", TEXT)
            assert "s3cret" not in remote_id and "bob" not in remote_id
            await asyncio.wait_for(provider.listeners[f"{fake.base_url}/"].connected.wait(), 5)
            result = await poll_until_done(provider, remote(remote_id))
            assert "s3cret" not in str(result)
            await provider.download(remote(remote_id), result, tmp_path / "clip.mp4")
            assert (await provider.health()).ok


async def test_health_reports_models_and_an_unreachable_host(tmp_path: Path) -> None:
    async with ComfyUIFake() as fake, comfyui(fake, tmp_path) as provider:
        health = await provider.health()
        assert health.ok and health.models == (T2V, I2V), health
        assert fake.requests("GET /object_info")
    async with comfyui(fake, tmp_path) as provider:  # the fake is closed now
        health = await provider.health()
        assert not health.reachable and "COMFYUI_URL" in str(health.problem)


async def test_jobs_are_spread_over_several_hosts(tmp_path: Path) -> None:
    async with ComfyUIFake() as first, ComfyUIFake() as second:
        hosts = f"{first.base_url}, {second.base_url}/"
        async with comfyui(first, tmp_path, comfyui_url=hosts) as provider:
            assert provider.max_concurrency == 4
            one = await provider.submit("job-1", TEXT)
            two = await provider.submit("job-2", TEXT)
            assert (one.split("@")[1], two.split("@")[1]) == (f"{first.base_url}/", f"{second.base_url}/")
            assert (await poll_until_done(provider, remote(two))).state is RemoteState.SUCCEEDED
            assert await provider.submit("job-2", TEXT) == two, "found on the host that has it"
            await second.close()
            three = await provider.submit("job-3", TEXT)
            assert three.endswith(f"@{first.base_url}/"), "a host that is down is left out"
        assert (first.creates, second.creates) == (2, 1)


async def test_the_progress_socket_reconnects_after_a_drop(tmp_path: Path) -> None:
    async with ComfyUIFake() as fake:
        hosts, workflows = parse_hosts(fake.base_url), load_workflows(WORKFLOWS)
        provider = ComfyUIProvider(hosts, workflows, max_download_bytes=10**6, socket_backoff=0.001)
        try:
            listener = provider.listeners[f"{fake.base_url}/"]
            await provider.start()
            await asyncio.wait_for(listener.connected.wait(), 5)
            listener.connected.clear()
            await fake.drop_sockets()
            await asyncio.wait_for(listener.connected.wait(), 5)
        finally:
            await provider.aclose()
        assert len(fake.requests("GET /ws")) == 2
        assert all(seen.query == {"clientId": provider.client_id} for seen in fake.requests("GET /ws"))
