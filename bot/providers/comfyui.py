"""Self-hosted ComfyUI (Wan, HunyuanVideo, LTX…): each workflow in `COMFYUI_WORKFLOW` is a model, run on the
ComfyUI server(s) in `COMFYUI_URL` (one URL, or a comma list of hosts with the same models and custom nodes).

A job is one prompt: the workflow with the job's values in its placeholders (`bot.providers.comfyui_workflow`),
queued with `POST /prompt` under a `prompt_id` derived from the job id. Because the id is ours, a submit first
looks for it in every host's `GET /queue` and `GET /history`, so a job whose first submit was lost (a crash before the
remote id was stored, an answer cut off) is never queued twice: `safe_resubmit`. The remote id is
`<prompt_id>@<host URL>`, all a later process needs to find it again.

With several hosts, a new prompt goes to the one where it should start soonest: its queue length times its
measured seconds per prompt (`bot.providers.comfyui_hosts`), and a host that stops answering is left out for a
while. A prompt is only ever polled on the host that has it, never sent to another: a host gone for good leaves
its prompts failing to poll (retryably) until the worker's poll deadline fails the job and refunds it.

`GET /history/{prompt_id}` is the truth: empty until the prompt ends, then its outputs and status. Until then
`GET /queue` says whether it waits (and how many are ahead) or runs, and the host's WebSocket listener
(`bot.providers.comfyui_socket`) gives the sampler's progress. ComfyUI has no content policy and no API key; a
URL's `user:password` is sent as HTTP basic auth (for a ComfyUI behind an authenticating proxy) and never shown.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

from bot.config import Settings
from bot.domain import MAX_SEED, ModelInfo, VideoRequest
from bot.errors import (
    CreateOutcomeUnknown,
    CredentialsRejected,
    ProviderError,
    RemoteJobLost,
    RequestRejected,
    ResultExpired,
)
from bot.errors.said import Said, vendor_said
from bot.i18n.ids import N_
from bot.providers.base import PollResult, ProviderHealth, RemoteJob, RemoteState
from bot.providers.comfyui_hosts import CREDENTIAL_VARIABLE, Host, HostPool, parse_hosts, stopped_answering
from bot.providers.comfyui_socket import ProgressListener
from bot.providers.comfyui_workflow import PROVIDER, Workflow, describe_rejection, job_values, load_workflows
from bot.providers.comfyui_workflow import video_output as find_video
from bot.providers.frames import EXTENSIONS, sniff_mime
from bot.providers.http import Kind, ProviderHttp

__all__ = ["CREDENTIAL_VARIABLE", "ComfyUIProvider", "Host", "from_settings", "parse_hosts"]

log = logging.getLogger(__name__)

JOBS_PER_HOST = 2
"""One prompt running on each GPU and the next one waiting in its queue, so no GPU idles between two polls;
the rest wait in the bot's own, fair, queue."""
_PROMPT_IDS = uuid.UUID("5f0c4a38-8a56-4e0c-9c55-2d3c1d1b6a71")
"""Namespace of the prompt ids (uuid5 of the job id): the same job always gets the same id."""
_SEEDS = uuid.UUID("0d8f3a51-6f1e-4f4b-8a8e-3c7e9b2f4d10")


class ComfyUIProvider:
    """`VideoProvider` for workflows on one or more ComfyUI servers."""

    name = PROVIDER
    safe_resubmit = True
    """The prompt id is ours: a resubmit finds the prompt already queued instead of queueing it again."""

    def __init__(
        self,
        hosts: Sequence[Host],
        workflows: Sequence[Workflow],
        *,
        max_download_bytes: int,
        socket_backoff: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` times the pause of a host that stopped answering (tests pass a fake one)."""
        self.hosts = tuple(hosts)
        self.pool = HostPool(self.hosts, clock)
        # Text-to-video first: the first model is the bot's default when DEFAULT_MODEL is not set.
        ordered = sorted(workflows, key=lambda workflow: workflow.needs_image)
        self.workflows = {workflow.model_id: workflow for workflow in ordered}
        self.max_concurrency = JOBS_PER_HOST * len(self.hosts)
        self.client_id = uuid.uuid4().hex
        """This process's id at ComfyUI: it sends a prompt's progress only to the client that queued it."""
        self.http = ProviderHttp(PROVIDER, self.hosts[0].url, credential_variable=CREDENTIAL_VARIABLE,
                                 map_error=vendor_error, max_download_bytes=max_download_bytes)  # fmt: skip
        self.listeners = {
            host.url: ProgressListener(host.ws_url(self.client_id), headers=host.headers, min_backoff=socket_backoff)
            for host in self.hosts
        }
        self._pinned: dict[str, Host] = {}
        """Prompts sent to a host whose answer was lost and that could not be asked since: a resubmit asks that
        host only (even out of rotation), for the prompt may be there and must not run twice."""

    def models(self) -> Sequence[ModelInfo]:
        return tuple(workflow.model_info() for workflow in self.workflows.values())

    def model_for(self, model_id: str) -> ModelInfo | None:
        return None

    async def start(self) -> None:
        """Open the progress sockets; a host that is down is retried in the background."""
        for listener in self.listeners.values():
            listener.start()

    async def health(self) -> ProviderHealth:
        """Ask each host for its node types (`/object_info`) and check every workflow's nodes are installed."""
        problems: list[str] = []
        reachable = authenticated = True
        for host in self.hosts:
            try:
                info = await self.http.json("GET", host.api("object_info"), headers=host.headers)
            except CredentialsRejected as exc:
                authenticated = False
                problems.append(f"ComfyUI at {host.url} refused the bot (HTTP {exc.status}): check the user:password "
                                f"in {CREDENTIAL_VARIABLE}")  # fmt: skip
                continue
            except ProviderError as exc:
                reachable = reachable and exc.status is not None
                problems.append(f"ComfyUI at {host.url} cannot be used ({exc}): check {CREDENTIAL_VARIABLE}")
                continue
            problems.extend(_workflow_problems(self.workflows.values(), info if isinstance(info, dict) else {}, host))
        return ProviderHealth(reachable=reachable, authenticated=authenticated, models=tuple(self.workflows),
                              problem="; ".join(problems) or None)  # fmt: skip

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        workflow = self.workflows.get(request.model)
        if workflow is None:
            no_workflow = Said(N_("failure.rejected.comfyui.no-workflow"), {"model_id": request.model})
            raise RequestRejected(PROVIDER, no_workflow, field="model")
        if workflow.needs_image and request.image_path is None:
            needs_image = Said(N_("failure.rejected.comfyui.image-required"), {"model_id": request.model})
            raise RequestRejected(PROVIDER, needs_image, field="image")
        prompt_id = str(uuid.uuid5(_PROMPT_IDS, job_id))
        pinned = self._pinned.get(prompt_id)
        if pinned is not None and await self._knows(pinned, prompt_id):  # fails, retryably, while it cannot say
            already, host = True, pinned
        else:
            already, host = await self._place(prompt_id)
        self._pinned.pop(prompt_id, None)
        if already:
            log.info("job %s: prompt %s is already at %s, not queued again", job_id, prompt_id, host.url)
            return f"{prompt_id}@{host.url}"
        self.listeners[host.url].start()
        image = await self._upload(host, prompt_id, Path(request.image_path)) if request.image_path else None
        seed = request.seed if request.seed is not None else uuid.uuid5(_SEEDS, job_id).int % (MAX_SEED + 1)
        body = {"prompt": workflow.render(job_values(request, seed=seed, image=image)), "client_id": self.client_id,
                "prompt_id": prompt_id}  # fmt: skip
        try:
            await self.http.json("POST", host.api("prompt"), create=True, json=body, headers=host.headers)
        except RequestRejected as exc:
            raise RequestRejected(PROVIDER, _in_workflow(exc, workflow.path.name), field=exc.field,
                                  status=exc.status) from None  # fmt: skip
        except CreateOutcomeUnknown:
            # The answer was lost, but the id is ours: ask whether the prompt got in before trying again.
            self._pinned[prompt_id] = host
            if not await self._knows(host, prompt_id):
                del self._pinned[prompt_id]
                log.warning("job %s: ComfyUI at %s did not take prompt %s; it can be sent again", job_id, host.url,
                            prompt_id)  # fmt: skip
                raise ProviderError(f"{PROVIDER} did not take prompt {prompt_id}", retryable=True) from None
        self._pinned.pop(prompt_id, None)
        log.info("job %s: queued prompt %s at %s", job_id, prompt_id, host.url)
        return f"{prompt_id}@{host.url}"

    async def poll(self, remote: RemoteJob) -> PollResult:
        prompt_id, host = self._remote(remote)
        listener = self.listeners.get(host.url)
        if listener is not None:  # a host dropped from COMFYUI_URL since has none: its jobs are only polled
            listener.start()
        entry = await self._history(host, prompt_id)
        if entry is None:
            state = await self._where(host, prompt_id)
            if state is not None:
                return self._waiting(host, prompt_id, *state)
            # It may have ended between the two requests: ask once more before calling it lost.
            entry = await self._history(host, prompt_id)
            if entry is None:
                log.warning("job %s: ComfyUI at %s no longer knows prompt %s", remote.job_id, host.url, prompt_id)
                raise RemoteJobLost(f"{PROVIDER} at {host.url} no longer knows prompt {prompt_id}",
                                    user_message=Said(N_("failure.comfyui.job-lost")))  # fmt: skip
        self.pool.finished(host, prompt_id, entry)
        return _finished(host, prompt_id, entry)

    async def cancel(self, remote: RemoteJob) -> None:
        """Take a waiting prompt off the queue, or interrupt it if it runs. The queue is asked first: an older
        ComfyUI ignores `/interrupt`'s prompt id and would stop whatever runs, someone else's prompt included."""
        prompt_id, host = self._remote(remote)
        state = await self._where(host, prompt_id)
        if state is not None and state[0] is RemoteState.QUEUED:
            await self.http.read("POST", host.api("queue"), json={"delete": [prompt_id]}, headers=host.headers)
            state = await self._where(host, prompt_id)  # it may have started in between
        if state is not None and state[0] is RemoteState.RUNNING:
            await self.http.read("POST", host.api("interrupt"), json={"prompt_id": prompt_id}, headers=host.headers)
        log.info("job %s: prompt %s cancelled at %s", remote.job_id, prompt_id, host.url)

    async def download(self, remote: RemoteJob, result: PollResult, dest: Path) -> None:
        _, host = self._remote(remote)
        if result.output_url is None:
            raise ProviderError(f"ComfyUI reported no video for {remote.remote_id}", retryable=False)
        try:
            await self.http.download(result.output_url, dest, headers=host.headers)
        except ResultExpired:
            # ComfyUI's files do not expire: gone from its output folder means gone.
            raise RemoteJobLost(f"{PROVIDER}: the finished video of {remote.remote_id} is gone from its output folder",
                                user_message=Said(N_("failure.comfyui.video-gone"))) from None  # fmt: skip

    async def aclose(self) -> None:
        for listener in self.listeners.values():
            await listener.aclose()
        await self.http.aclose()

    # --- helpers --------------------------------------------------------------------------------------
    def _remote(self, remote: RemoteJob) -> tuple[str, Host]:
        prompt_id, _, url = remote.remote_id.partition("@")
        if not url.startswith(("http://", "https://")):
            raise RemoteJobLost(f"{remote.remote_id!r} is not a ComfyUI remote id")
        # A configured host keeps its credentials; one dropped from COMFYUI_URL since is still asked, without.
        return prompt_id, next((host for host in self.hosts if host.url == url), Host(url))

    async def _place(self, prompt_id: str) -> tuple[bool, Host]:
        """Where the prompt already is (True, host), else the host to queue it on (False, host): the shortest
        expected wait (`HostPool`). Hosts out of rotation are not asked: a dead one would cost a timeout a job."""
        queue_lengths: list[tuple[Host, int]] = []
        failure: ProviderError | None = None
        for host in self.pool.candidates():
            try:
                queue = await self._queue(host)
                if await self._knows(host, prompt_id, queue):
                    return True, host
            except ProviderError as exc:
                if not exc.retryable:
                    raise
                failure = exc
                continue
            queue_lengths.append((host, len(_items(queue, "queue_running")) + len(_items(queue, "queue_pending"))))
        if not queue_lengths:
            assert failure is not None
            raise failure
        return False, self.pool.choose(queue_lengths)

    async def _upload(self, host: Host, prompt_id: str, image: Path) -> str:
        """Put the first frame in ComfyUI's input folder under a name of its own (overwritten on a resubmit)."""
        data = await asyncio.to_thread(image.read_bytes)
        extension, mime = _image_type(data)
        files = {"image": (f"videobot-{prompt_id}{extension}", data, mime)}
        # Idempotent (same name, overwrite), so retried like a read.
        answer = await self.http.json("POST", host.api("upload/image"), files=files,
                                      data={"type": "input", "overwrite": "true"}, headers=host.headers)  # fmt: skip
        name = answer.get("name") if isinstance(answer, dict) else None
        if not isinstance(name, str) or not name:
            raise ProviderError("ComfyUI answered the image upload without a file name", retryable=True)
        subfolder = answer.get("subfolder") or ""
        return f"{subfolder}/{name}" if subfolder else name

    async def _knows(self, host: Host, prompt_id: str, queue: dict[str, Any] | None = None) -> bool:
        """Whether the host has the prompt: waiting, running (`GET /queue`) or ended (`GET /history`), asked in
        that order because a prompt moves from the one to the other, never back."""
        queue = await self._queue(host) if queue is None else queue
        return _queue_state(queue, prompt_id) is not None or await self._history(host, prompt_id) is not None

    async def _history(self, host: Host, prompt_id: str) -> dict[str, Any] | None:
        answer = await self._get(host, f"history/{prompt_id}")
        entry = answer.get(prompt_id) if isinstance(answer, dict) else None
        return entry if isinstance(entry, dict) else None

    async def _queue(self, host: Host) -> dict[str, Any]:
        answer = await self._get(host, "queue")
        return answer if isinstance(answer, dict) else {}

    async def _get(self, host: Host, path: str) -> Any:
        """A read of the queue or the history, which every submit and poll makes: whether the host answered
        decides whether new prompts may go there."""
        try:
            answer = await self.http.json("GET", host.api(path), headers=host.headers)
        except ProviderError as exc:
            if stopped_answering(exc):
                self.pool.unreachable(host)
            raise
        self.pool.answered(host)
        return answer

    async def _where(self, host: Host, prompt_id: str) -> tuple[RemoteState, int | None] | None:
        return _queue_state(await self._queue(host), prompt_id)

    def _waiting(self, host: Host, prompt_id: str, state: RemoteState, position: int | None) -> PollResult:
        events = self.listeners[host.url].events(prompt_id) if host.url in self.listeners else None
        progress = events.fraction if events is not None and state is RemoteState.RUNNING else None
        return PollResult(state, progress=progress, queue_position=position)


def from_settings(settings: Settings) -> ComfyUIProvider | None:
    """The ComfyUI provider when `COMFYUI_URL` is set, else None; a bad `COMFYUI_WORKFLOW` is a ConfigError."""
    if not settings.comfyui_url or not settings.comfyui_url.strip():
        return None
    hosts = parse_hosts(settings.comfyui_url)
    workflows = load_workflows(settings.comfyui_workflow)
    return ComfyUIProvider(hosts, workflows, max_download_bytes=settings.max_download_bytes)


def _in_workflow(rejected: RequestRejected, workflow: str) -> Said:
    """ComfyUI's rejection of a prompt (its own words), naming the workflow file an admin has to fix."""
    facts = {"reason": rejected.reason, "workflow": workflow}
    if rejected.field:
        return Said(N_("failure.rejected.comfyui.workflow.field"), {**facts, "field": rejected.field})
    return Said(N_("failure.rejected.comfyui.workflow"), facts)


def vendor_error(response: httpx.Response, kind: Kind) -> ProviderError | None:
    """ComfyUI's 400 for a prompt it will not run, `{"error": {type, message, details, extra_info},
    "node_errors": {id: {errors, class_type}}}`, as a rejection naming the node and input."""
    if response.status_code != 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or "error" not in body:
        return None
    return RequestRejected(PROVIDER, describe_rejection(body), status=400)


def _finished(host: Host, prompt_id: str, entry: dict[str, Any]) -> PollResult:
    status = entry.get("status")
    status = status if isinstance(status, dict) else {}
    if status.get("status_str") == "error":
        for message in status.get("messages") or ():
            event, data = (message[0], message[1]) if isinstance(message, list) and len(message) == 2 else ("", {})
            if event == "execution_interrupted":
                return PollResult(RemoteState.CANCELLED, error=Said(N_("failure.comfyui.interrupted")))
            if event == "execution_error" and isinstance(data, dict):
                log.warning("comfyui: prompt %s failed at node %s (%s) on %s", prompt_id, data.get("node_id"),
                            data.get("node_type"), host.url)  # fmt: skip
                reason = str(data.get("exception_message") or "").strip()
                said = vendor_said(reason[:500]) if reason else Said(N_("failure.comfyui.workflow-failed"))
                return PollResult(RemoteState.FAILED, error=said)
        return PollResult(RemoteState.FAILED, error=Said(N_("failure.comfyui.workflow-failed")))
    video = find_video(entry.get("outputs"))
    if video is None:
        return PollResult(RemoteState.FAILED, error=Said(N_("failure.comfyui.no-video")))
    url = httpx.URL(host.api("view"), params=video.query)
    return PollResult(RemoteState.SUCCEEDED, progress=1.0, output_url=str(url))


def _queue_state(queue: dict[str, Any], prompt_id: str) -> tuple[RemoteState, int | None] | None:
    """RUNNING, or QUEUED with how many wait ahead (`queue_pending` is a heap: ordered by number here)."""
    if any(item[1] == prompt_id for item in _items(queue, "queue_running")):
        return RemoteState.RUNNING, None
    pending = sorted(
        _items(queue, "queue_pending"), key=lambda item: item[0] if isinstance(item[0], int | float) else 0
    )
    for position, item in enumerate(pending):
        if item[1] == prompt_id:
            return RemoteState.QUEUED, position
    return None


def _items(queue: dict[str, Any], key: str) -> list[list[Any]]:
    """Queue items, `[number, prompt_id, prompt, extra_data, outputs]`; anything else is skipped."""
    items = queue.get(key)
    return [item for item in items if isinstance(item, list) and len(item) >= 2] if isinstance(items, list) else []


def _image_type(data: bytes) -> tuple[str, str]:
    mime = sniff_mime(data)
    if mime is None:
        raise RequestRejected(PROVIDER, Said(N_("failure.rejected.first-frame-format")), field="image")
    return EXTENSIONS[mime], mime


def _workflow_problems(workflows: Iterable[Workflow], info: dict[str, Any], host: Host) -> list[str]:
    """What keeps each workflow from running on a host: node types it lacks, or no output node among them."""
    problems = []
    for workflow in workflows:
        missing = sorted(workflow.class_types.difference(info))
        if missing:
            problems.append(f"COMFYUI_WORKFLOW {workflow.path.name} uses node types that ComfyUI at {host.url} "
                            f"lacks: {', '.join(missing)} (install those custom nodes)")  # fmt: skip
        elif not any(isinstance(info[name], dict) and info[name].get("output_node") for name in workflow.class_types):
            problems.append(f"COMFYUI_WORKFLOW {workflow.path.name} has no output node that ComfyUI at {host.url} "
                            "knows as one")  # fmt: skip
    return problems
