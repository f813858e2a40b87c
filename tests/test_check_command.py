"""`python -m bot check` as an operator runs it: each configured provider is reached and its credentials tried
(through its loopback fake); a refused key is a BAD line naming the variable, the exit code says so, and no
secret is ever printed. Also `generate` through a real provider, the way the issue reported it broken."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.fakes.providers.fal import FalFake
from tests.fakes.providers.openai import OpenAIFake
from tests.fakes.providers.replicate import ReplicateFake

REPO = Path(__file__).resolve().parent.parent


async def run_bot(tmp_path: Path, *args: str, env: dict[str, str]) -> tuple[int, str]:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "DATA_DIR": str(tmp_path / "data"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=tmp_path, env=base | env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_check_reports_each_provider_and_fails_on_a_refused_key(tmp_path: Path) -> None:
    async with FalFake() as fal, ReplicateFake() as replicate:
        wrong = "r8_wrong-token-0123456789"
        env = fal.env() | replicate.env() | {"REPLICATE_API_TOKEN": wrong}
        code, out = await run_bot(tmp_path, "check", env=env)
    lines = {line.split()[2]: line for line in out.splitlines() if line.startswith(("ok ", "BAD")) and
             line.split()[1] == "provider"}  # fmt: skip
    assert lines["fal"].startswith("ok ") and "fal/fal-ai/wan/v2.2-a14b/text-to-video" in lines["fal"], out
    assert lines["replicate"].startswith("BAD") and "REPLICATE_API_TOKEN" in lines["replicate"], out
    assert lines["local"].startswith("ok "), out
    assert code == 1, out
    assert wrong not in out and fal.env()["FAL_KEY"] not in out, "no secret is printed"


async def test_check_passes_when_every_provider_answers(tmp_path: Path) -> None:
    async with OpenAIFake() as openai:
        code, out = await run_bot(tmp_path, "check", env=openai.env() | {"DISCORD_TOKEN": "x" * 59})
    assert code == 0, out
    assert any(line.startswith("ok   provider openai") and openai.model.split("/", 1)[1] in line
               for line in out.splitlines()), out  # fmt: skip


async def test_generate_makes_a_clip_through_a_real_provider(tmp_path: Path) -> None:
    async with OpenAIFake() as openai:
        openai.polls_to_finish = 1
        out_file = tmp_path / "clip.mp4"
        code, out = await run_bot(tmp_path, "generate", "a lighthouse in a storm", "--model", openai.model,
                                  "--duration", "4", "-o", str(out_file), env=openai.env())  # fmt: skip
    assert code == 0, out
    assert out_file.read_bytes() == openai.video
    assert openai.creates == 1
