"""The layers' import rules (docs/architecture.md, "What may import what"), checked on the source with `ast`.

Every import counts: at the top, inside a function (a lazy import), under `if TYPE_CHECKING:`, relative or
absolute. The rules are checked on the repository and, to show they bite, on a scratch tree that breaks each.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Rule:
    packages: tuple[str, ...]
    """Where the rule applies: a package and everything under it."""
    never: tuple[str, ...]
    """Modules (and their submodules) that must not be imported there."""
    why: str


RULES = (
    Rule(("bot.jobs", "bot.store", "bot.providers"), ("discord", "bot.discord"), "the engine knows nothing of Discord"),
    Rule(("bot.jobs", "bot.store", "bot.providers"), ("cogs", "bot.cli"), "the engine is not a front end"),
    Rule(("bot.store",), ("bot.jobs", "bot.providers"), "the store holds data, not policy or vendors"),
    Rule(("bot.providers",), ("bot.jobs", "bot.store"), "providers know nothing of quotas or the database"),
    Rule(("cogs",), ("bot.store", "bot.providers"), "cogs parse, call one service method and render"),
    Rule(
        ("bot.domain", "bot.errors", "bot.clock"),
        ("discord", "bot.discord", "bot.jobs", "bot.store", "bot.providers", "bot.cli", "cogs"),
        "the nouns and the error tree sit below every layer",
    ),
    Rule(
        ("bot.i18n",),
        ("discord", "bot.discord", "bot.jobs", "bot.store", "bot.providers", "bot.cli", "cogs", "bot.errors"),
        "the catalogues sit below every layer: the error tree marks its ids with them",
    ),
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) of every import in the tree, relative ones resolved against `module`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from bot import discord` imports the module bot.discord: count the names as modules too.
            found += [(node.lineno, target)] + [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    """Every import under `root`'s bot/ and cogs/ that a rule forbids, as "path:line: imports X (why)"."""
    found: list[str] = []
    for path in sorted([*root.glob("bot/**/*.py"), *root.glob("cogs/**/*.py")]):
        module = module_name(path, root)
        rules = [r for r in RULES if any(within(module, p) for p in r.packages)]
        if not rules:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, target in imported(tree, module, path.name == "__init__.py"):
            for rule in rules:
                banned = next((b for b in rule.never if within(target, b)), None)
                if banned is not None:
                    found.append(f"{path.relative_to(root)}:{line}: imports {target} ({rule.why})")
    return sorted(set(found))


def test_the_repository_keeps_its_layers_apart() -> None:
    assert violations(REPO) == []


def test_the_check_reads_enough_of_the_repository_to_mean_something() -> None:
    checked = {module_name(p, REPO) for p in [*REPO.glob("bot/**/*.py"), *REPO.glob("cogs/**/*.py")]}
    for package in ("bot.jobs.worker", "bot.store", "bot.providers.base", "cogs", "bot.domain", "bot.errors"):
        assert package in checked, f"{package} is not where the rules expect it"


def write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)


@pytest.mark.parametrize(
    ("relative", "source", "banned"),
    [
        ("bot/jobs/worker.py", "import discord\n", "discord"),
        ("bot/jobs/worker.py", "from discord.ext import commands\n", "discord.ext"),
        ("bot/jobs/worker.py", "def later():\n    from bot.discord.delivery import X\n", "bot.discord.delivery"),
        ("bot/jobs/worker.py", "if TYPE_CHECKING:\n    import bot.discord\n", "bot.discord"),
        ("bot/jobs/worker.py", "from ..discord import client\n", "bot.discord"),
        ("bot/jobs/worker.py", "from bot import discord\n", "bot.discord"),
        ("bot/store/sql_store.py", "import discord.http\n", "discord.http"),
        ("bot/store/sql_store.py", "from bot.jobs.quotas import check_admission\n", "bot.jobs.quotas"),
        ("bot/store/dialects/sqlite.py", "from ...providers import registry\n", "bot.providers"),
        ("bot/providers/fal.py", "from discord import File\n", "discord"),
        ("bot/providers/fal.py", "from bot.store.base import Store\n", "bot.store.base"),
        ("bot/providers/__init__.py", "from ..jobs import quotas\n", "bot.jobs"),
        ("cogs/video.py", "from bot.store.base import Store\n", "bot.store.base"),
        ("cogs/admin/__init__.py", "from bot.store import open_store\n", "bot.store"),
        ("cogs/queue.py", "import bot.providers.registry\n", "bot.providers.registry"),
        ("bot/domain.py", "from bot.jobs.service import JobService\n", "bot.jobs.service"),
    ],
)
def test_each_rule_catches_a_forbidden_import(tmp_path: Path, relative: str, source: str, banned: str) -> None:
    write(tmp_path, relative, source)
    found = violations(tmp_path)
    assert len(found) >= 1 and all(relative in v for v in found), found
    assert any(f"imports {banned} " in v for v in found), found


def test_allowed_imports_are_not_flagged(tmp_path: Path) -> None:
    write(tmp_path, "bot/discord/delivery.py", "import discord\nfrom bot.store.base import Store\n")
    write(tmp_path, "bot/cli/run.py", "import discord\nfrom bot.store import open_store\nimport bot.discord.client\n")
    write(tmp_path, "cogs/video.py", "import discord\nfrom bot.discord.replies import answer\nfrom bot import errors\n")
    write(tmp_path, "bot/jobs/worker.py", "import discordant\nfrom bot.store.base import Store\nfrom . import steps\n")
    write(tmp_path, "bot/store/sql_store.py", "from bot.domain import Job\nfrom .dialect import Dialect\n")
    write(tmp_path, "bot/providers/fal.py", "import httpx\nfrom bot.domain import VideoRequest\n")
    assert violations(tmp_path) == []
