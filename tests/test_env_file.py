"""A name in `.env` that is not a setting is an error naming it (a typo would otherwise leave its setting at the
default without a word); the process's own environment (PATH and the rest) is never checked that way."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def env_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def test_a_typo_in_env_is_named_with_the_setting_it_resembles(tmp_path: Path) -> None:
    path = env_file(tmp_path, "DATA_DIR=data\nLEASE_SECOND=5\nlog_levle=DEBUG\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=path)
    message = str(caught.value)
    assert "LEASE_SECOND in" in message and "did you mean LEASE_SECONDS?" in message
    assert "LOG_LEVLE in" in message and "did you mean LOG_LEVEL?" in message, "every unknown name, any case"
    assert str(path) in message, "the file is named"


def test_an_unknown_name_like_no_setting_says_so_without_a_guess(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"COMPOSE_PROJECT_NAME in .* is not a setting \(remove it"):
        load_settings(_env_file=env_file(tmp_path, "COMPOSE_PROJECT_NAME=videobot\n"))


def test_a_correct_env_file_loads_and_the_environment_is_not_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEASE_SECOND", "5")  # not a setting, but in the environment: not ours to judge
    monkeypatch.setenv("SOME_OTHER_TOOL_SETTING", "x")
    settings = load_settings(_env_file=env_file(tmp_path, "LEASE_SECONDS=42\n# a comment\nLOG_LEVEL=DEBUG\n"))
    assert settings.lease_seconds == 42.0 and settings.log_level == "DEBUG"


def run_check(cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "UNRELATED_VARIABLE": "1",  # the environment holds all sorts: none of it is rejected
    }
    return subprocess.run(
        [sys.executable, "-m", "bot", "check"], cwd=cwd, env=environment, capture_output=True, text=True, timeout=60
    )


def test_python_m_bot_check_refuses_a_typo_in_env_and_accepts_the_fixed_file(tmp_path: Path) -> None:
    settings = f"DISCORD_TOKEN=not-a-real-token\nDATABASE_URL=sqlite:///{tmp_path}/bot.db\nDATA_DIR={tmp_path}/data\n"
    env_file(tmp_path, settings + "WORKER_CONCURENCY=8\n")
    done = run_check(tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "WORKER_CONCURENCY in .env is not a setting (did you mean WORKER_CONCURRENCY?)" in done.stderr

    env_file(tmp_path, settings + "WORKER_CONCURRENCY=8\n")
    done = run_check(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not a setting" not in done.stdout + done.stderr


def test_an_unreachable_discord_api_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once this closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env_file(tmp_path, f"DISCORD_TOKEN=not-a-real-token\nDATABASE_URL=sqlite:///{tmp_path}/bot.db\n"
                       f"DATA_DIR={tmp_path}/data\nDISCORD_API_BASE=http://127.0.0.1:{port}/api/v10\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "bot", "worker"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot reach Discord's API at http://127.0.0.1:{port}/api/v10" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"discord_shard_ids": "0,1,1", "discord_shard_count": 2}, "lists shard 1 more than once"),
        ({"discord_shard_ids": "1"}, "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"),
        ({"discord_shard_ids": "3", "discord_shard_count": 2}, "DISCORD_SHARD_IDS must be from 0 to 1"),
    ],
)
def test_shard_settings_are_checked_together(given: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(_env_file=None, **given)
    assert expected in str(error.value)


async def test_a_gateway_identifies_as_its_one_shard(tmp_path: Path) -> None:
    from tests.discord_harness import running_bot

    async with running_bot(tmp_path, with_worker=False, discord_shard_count=2, discord_shard_ids="1") as h:
        sessions = list(h.fake.gateway.sessions.values())
        assert [s.shard for s in sessions] == [(1, 2)]
