"""The deployment files and the admin's README sections, checked offline against the code they describe.

compose.yaml, deploy/videobot.service, the Dockerfile and .dockerignore cannot be run here (no Docker daemon, no
systemd), so what can be checked is checked: that each parses, names the settings and commands the bot has, keeps
secrets out of the image and gives the graceful stop its time. The Dockerfile's health check command runs for
real against the real /healthz server. The README's invite link must carry exactly the permissions the bot needs,
and a real discord.py client with only those permissions (and its own intents, none privileged) posts a clip in a
channel and in a thread and finds it again after a lost answer.
"""

from __future__ import annotations

import asyncio
import http.server
import inspect
import json
import re
import subprocess
import sys
import threading
import tomllib
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import discord
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.cli.main import parser
from bot.cli.ops_server import HealthCheck, OpsServer
from bot.clock import SystemClock
from bot.config import Settings, load_settings
from bot.discord.posting import POST_PERMISSIONS
from bot.domain import JobState
from bot.jobs.worker import Worker
from bot.metrics import Metrics
from bot.store import open_store
from tests.discord_harness import running_bot
from tests.fakes.discord import CHANNEL_ID, THREAD_ID

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SUBCOMMANDS = set(parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
GRACEFUL_STOP = inspect.signature(Worker.__init__).parameters["shutdown_grace"].default
"""Seconds a stopping worker gives a submit or post in flight; every stop timeout must exceed it."""

PERMISSION_NAMES = {
    "view_channel": "View Channels",  # see the channel the clip goes to
    "send_messages": "Send Messages",  # post the clip
    "send_messages_in_threads": "Send Messages in Threads",  # ... in a thread
    "embed_links": "Embed Links",  # the clip's embed
    "attach_files": "Attach Files",  # the .mp4
    "read_message_history": "Read Message History",  # find an earlier post after a lost answer (exactly once)
}
"""What the bot needs from Discord: discord.py's flag names, and what Discord's settings and the README say."""
NEEDED = discord.Permissions(**dict.fromkeys(PERMISSION_NAMES, True))
PRIVILEGED = discord.Intents(members=True, presences=True, message_content=True)
SECRET_SETTINGS = {name.upper() for name, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}


def readme_section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


# --- compose.yaml ------------------------------------------------------------------------------------------
def parse_yaml_subset(text: str) -> Any:
    """For when PyYAML is not installed: block mappings, block lists of scalars, JSON-style flow lists and plain
    or quoted scalars, which is all compose.yaml uses. Anything else raises ValueError, so this parser can fail
    a test but never pass a file it did not understand (and where PyYAML exists, both must agree)."""
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw:
            raise ValueError(f"line {number}: a tab")
        content = re.sub(r"(^|\s)#.*$", "", raw).rstrip()  # no quoted '#' in the files this reads
        if content.strip():
            lines.append((number, len(content) - len(content.lstrip()), content.strip()))
    value, end = _yaml_block(lines, 0, lines[0][1]) if lines else (None, 0)
    if end != len(lines):
        raise ValueError(f"line {lines[end][0]}: unexpected indentation")
    return value


def _yaml_block(lines: list[tuple[int, int, str]], i: int, indent: int) -> tuple[Any, int]:
    is_list = lines[i][2].startswith("- ")
    result: Any = [] if is_list else {}
    while i < len(lines) and lines[i][1] >= indent:
        number, at, content = lines[i]
        if at > indent or content.startswith("- ") != is_list:
            raise ValueError(f"line {number}: unexpected structure")
        i += 1
        if is_list:
            result.append(_yaml_scalar(content[2:].strip(), number))
            continue
        key, sep, rest = content.partition(":")
        if not sep or (rest and not rest.startswith(" ")) or key in result:
            raise ValueError(f"line {number}: not a `key: value` line, or a repeated key")
        if rest.strip():
            result[key] = _yaml_scalar(rest.strip(), number)
        elif i < len(lines) and lines[i][1] > indent:
            result[key], i = _yaml_block(lines, i, lines[i][1])
        else:
            result[key] = None
    return result, i


def _yaml_scalar(text: str, number: int) -> Any:
    if text.startswith(("[", '"')):
        return json.loads(text)  # a JSON list or string is the same in YAML
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("''", "'")
    if text[0] in "&*!|>{%@`" or ": " in text or text.endswith(":"):
        raise ValueError(f"line {number}: {text!r} is beyond this parser")
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    return {"true": True, "false": False, "null": None, "~": None}.get(text, text)


def load_compose() -> dict[str, Any]:
    text = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    parsed = parse_yaml_subset(text)
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return parsed  # type: ignore[no-any-return]
    assert parsed == yaml.safe_load(text), "the fallback parser must read the file as YAML does"
    return parsed  # type: ignore[no-any-return]


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}` / `${NAME:?message}` substitution; an unset name fails as compose would."""

    def one(match: re.Match[str]) -> str:
        assert match.group(1) in env, f"compose would stop: {match.group(1)} is not set"
        return env[match.group(1)]

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?::\?[^}]*)?\}", one, value)


def duration_seconds(value: str) -> float:
    """Compose (`45s`, `1m30s`) and systemd (`45`, `45s`, `1min 30s`) durations."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(min|sec|h|m|s|)\s*", value)
    assert parts and "".join(f"{n}{u}" for n, u in parts) == re.sub(r"\s", "", value), value
    return sum(float(n) * units[u] for n, u in parts)


BOT_SERVICES = ("gateway", "worker")


def test_compose_runs_postgres_with_a_volume_and_a_health_check() -> None:
    compose = load_compose()
    assert set(compose["services"]) == {"postgres", *BOT_SERVICES}
    db = compose["services"]["postgres"]
    assert db["image"].startswith("postgres:")
    volume = db["volumes"][0].split(":")
    assert volume[1] == "/var/lib/postgresql/data" and volume[0] in compose["volumes"], "data in a named volume"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?.+\}", db["environment"]["POSTGRES_PASSWORD"]), "no literal password"


@pytest.mark.parametrize("name", BOT_SERVICES)
def test_compose_bot_services_have_what_the_bot_needs(name: str) -> None:
    compose = load_compose()
    service, db = compose["services"][name], compose["services"]["postgres"]
    assert service["command"] == ["python", "-m", "bot", name] and name in SUBCOMMANDS
    assert ".env" in ([service["env_file"]] if isinstance(service["env_file"], str) else service["env_file"])
    env = service["environment"]
    unknown = {key for key in env if key.lower() not in Settings.model_fields}
    assert not unknown, f"not settings of the bot: {unknown}"
    url = urllib.parse.urlsplit(interpolate(env["DATABASE_URL"], {"POSTGRES_PASSWORD": "pw"}))
    assert url.scheme == "postgresql" and url.hostname == "postgres" and url.hostname in compose["services"]
    assert (url.username, url.password, url.path) == (db["environment"]["POSTGRES_USER"], "pw",
                                                      "/" + db["environment"]["POSTGRES_DB"])  # fmt: skip
    assert load_settings(_env_file=None, database_url=url.geturl()).database_url == url.geturl()
    assert env["METRICS_HOST"] == "0.0.0.0" and env["METRICS_PORT"].isdigit()
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert duration_seconds(service["stop_grace_period"]) > GRACEFUL_STOP
    # An image given to /video is staged by the gateway and read by a worker: DATA_DIR is one shared volume.
    mounts = dict(reversed(v.split(":")[:2]) for v in service["volumes"])
    assert mounts[env["DATA_DIR"]] in compose["volumes"]


def test_compose_gateway_and_workers_share_data_dir_and_image() -> None:
    services = load_compose()["services"]
    gateway, worker = (services[name] for name in BOT_SERVICES)
    assert gateway["volumes"] == worker["volumes"] and gateway["environment"]["DATA_DIR"] == "/app/data"
    assert gateway["build"] == worker["build"] == "." and gateway["image"] == worker["image"]


@pytest.mark.parametrize(
    "text",
    ["a: &x 1\nb: *x\n", "a:\n  - b: 1\n", "a:\n\t- 1\n", "a: |\n  text\n", "a: 1\na: 2\n", "a: {b: 1}\n", "a:1\n"],
)
def test_the_fallback_yaml_parser_refuses_what_it_does_not_understand(text: str) -> None:
    with pytest.raises(ValueError):
        parse_yaml_subset(text)


# --- systemd ------------------------------------------------------------------------------------------------
def unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in (ROOT / "deploy" / "videobot.service").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), "keep each setting on one line"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, line
        current.setdefault(key, []).append(value)
    return sections


def test_systemd_unit_runs_the_bot_as_a_dedicated_user_and_stops_gracefully() -> None:
    service = {key: values[-1] for key, values in unit()["Service"].items()}
    workdir = Path(service["WorkingDirectory"])
    assert workdir.is_absolute() and service["User"] not in ("root", "0") and service["User"] == service["Group"]
    assert Path(service["EnvironmentFile"]) == workdir / ".env"
    argv = service["ExecStart"].split()
    assert Path(argv[0]).name.startswith("python") and Path(argv[0]).is_absolute() and argv[1:] == ["-m", "bot"]
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"
    assert service["KillSignal"] == "SIGTERM" and duration_seconds(service["TimeoutStopSec"]) > GRACEFUL_STOP
    assert unit()["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_unit_is_hardened_but_may_write_data_dir() -> None:
    service = {key: values[-1] for key, values in unit()["Service"].items()}
    for key, value in {"NoNewPrivileges": "true", "ProtectSystem": "strict", "ProtectHome": "true",
                       "PrivateTmp": "true", "CapabilityBoundingSet": ""}.items():  # fmt: skip
        assert service.get(key) == value, key
    # DATA_DIR's default, `data`, is relative to the working directory: the one place the bot writes.
    data_dir = Path(service["WorkingDirectory"]) / Settings.model_fields["data_dir"].default
    assert str(data_dir) in service["ReadWritePaths"].split()


# --- Dockerfile and .dockerignore ---------------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split()[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def test_dockerfile_runs_the_bot_as_a_non_root_user() -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    user = [args for instr, args in steps if instr == "USER"][-1].strip()
    assert user not in ("root", "0") and not user.startswith("0:")
    assert any(instr == "RUN" and "useradd" in args and args.rstrip().endswith(user) for instr, args in steps)
    assert ("CMD", '["python", "-m", "bot"]') in steps
    assert any(instr == "RUN" and "pip install" in args and "[postgres]" in args for instr, args in steps)


def test_dockerfile_bakes_in_no_secret() -> None:
    steps = dockerfile()
    for instr, args in steps:
        if instr in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            assert not [n for n in names if re.search(r"TOKEN|SECRET|PASSWORD|KEY", n, re.I)], args
        if instr in ("COPY", "ADD"):
            assert not re.search(r"(^|\s|/)\.env(\s|$)", args), args
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert not [name for name in SECRET_SETTINGS if name in text]


def test_the_image_copies_everything_the_package_build_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    copied = {src.rstrip("/") for instr, args in dockerfile() if instr == "COPY" for src in args.split()[:-1]}
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert needed <= copied
    assert all((ROOT / src).exists() for src in copied)
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env", "data", ".venv"} <= ignored and not copied & ignored


def healthcheck_argv() -> list[str]:
    args = next(args for instr, args in dockerfile() if instr == "HEALTHCHECK")
    argv = json.loads(args.split(" CMD ", 1)[1])
    assert argv[0] == "python" and "/healthz" in argv[-1]
    return [sys.executable, *argv[1:]]


class _Healthz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def healthz_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_the_image_health_check_asks_healthz(
    healthz_server: http.server.ThreadingHTTPServer, status: int, healthy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Healthz, "status", status)
    env = {"METRICS_PORT": str(healthz_server.server_address[1]), "METRICS_HOST": "0.0.0.0"}
    done = subprocess.run(healthcheck_argv(), env=env, capture_output=True, timeout=30)
    assert (done.returncode == 0) is healthy, done.stderr


def test_the_image_health_check_passes_without_metrics_and_fails_when_nothing_listens() -> None:
    assert subprocess.run(healthcheck_argv(), env={}, timeout=30).returncode == 0, "METRICS_PORT unset: no check"
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthz) as closed:
        port = closed.server_address[1]
    done = subprocess.run(healthcheck_argv(), env={"METRICS_PORT": str(port)}, capture_output=True, timeout=30)
    assert done.returncode != 0


async def test_the_image_health_check_against_the_real_ops_server(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'bot.db'}")
    clock = SystemClock()
    server = OpsServer(Metrics(store, clock), HealthCheck(store, clock, stale_after=60.0), host="127.0.0.1", port=0)
    await server.start()
    try:
        check = await asyncio.create_subprocess_exec(*healthcheck_argv(), env={"METRICS_PORT": str(server.port)})
        assert await asyncio.wait_for(check.wait(), 30) == 0
    finally:
        await server.stop()
        await store.close()


# --- README: the Discord application, commands, metrics ------------------------------------------------------
def test_the_invite_link_carries_exactly_the_permissions_the_bot_needs() -> None:
    links = re.findall(r"https://discord\.com/oauth2/authorize\?[^\s)`>]+", README)
    assert links, "README has no invite link"
    for link in links:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
        assert query["permissions"] == [str(NEEDED.value)], link
        assert set(query["scope"][0].split()) == {"bot", "applications.commands"}, link
    # What the code checks before posting in a channel is part of what the invite grants.
    assert POST_PERMISSIONS.is_subset(NEEDED)
    # The README's table names each of them, as Discord's settings do, and nothing else.
    rows = re.findall(r"^\s*\| ([A-Z][^|]*?) \|", readme_section("Discord application"), re.M)
    tabled = {name for row in rows if row != "permission" for name in row.split(", ")}
    assert tabled == set(PERMISSION_NAMES.values())


def test_every_command_the_readme_shows_exists() -> None:
    shown = set(re.findall(r"python -m bot (\w+)", README))
    assert shown and shown <= SUBCOMMANDS, shown - SUBCOMMANDS
    unit_and_compose = (ROOT / "deploy" / "videobot.service").read_text() + (ROOT / "compose.yaml").read_text()
    assert set(re.findall(r"-m bot (\w+)", unit_and_compose)) <= SUBCOMMANDS


async def test_the_readme_lists_every_metric_the_bot_serves(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'bot.db'}")
    try:
        exposition = await Metrics(store, SystemClock(), worker_id="w1").exposition()
    finally:
        await store.close()
    served = {f.name for f in text_string_to_metric_families(exposition.decode()) if f.name.startswith("videobot_")}
    documented = {name.removesuffix("_total") for name in re.findall(r"`(videobot_\w+)`", readme_section(
        "Metrics and health"))}  # fmt: skip
    assert documented == served


@pytest.mark.parametrize("channel", [CHANNEL_ID, THREAD_ID], ids=["channel", "thread"])
async def test_the_invite_permissions_and_default_intents_are_enough(tmp_path: Path, channel: int) -> None:
    """The bot with exactly the invite's permissions: the clip is posted in the channel (or thread) itself, and
    after an answer lost on the way back, found again through the channel's history instead of posted twice."""
    granted = int(urllib.parse.parse_qs(re.findall(r"oauth2/authorize\?(\S+)", README)[0])["permissions"][0])
    async with running_bot(tmp_path) as h:
        identify = next(frame["d"] for frame in h.fake.gateway.received if frame.get("op") == 2)
        assert identify["intents"] & PRIVILEGED.value == 0, "no privileged intent to enable in the portal"
        h.fake.set_bot_permissions(CHANNEL_ID, granted)  # a thread inherits its channel's
        h.fake.drop_after_apply("POST /channels/*/messages")
        rec = await h.fake.slash("video", {"prompt": "a lighthouse in a storm", "duration": 1}, channel=channel)
        await rec.wait_callback()
        job = await h.wait_job_state((await h.wait_for_job()).id, "delivered", "failed", timeout=30)
        assert job.state is JobState.DELIVERED, job.error
        clips = [m.id for m in h.fake.messages(channel) if m.attachments and f"video:delete:{job.id}" in m.custom_ids()]
        assert clips == [job.delivered_message_id]
        lookups = h.fake.requests_to(f"GET /channels/{channel}/messages")
        assert lookups and all(r.status == 200 for r in lookups), "found through the history"
        assert not h.fake.requests_to("POST /webhooks/*/*"), "posted as the bot, not through the interaction"
