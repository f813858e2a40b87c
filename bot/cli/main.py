"""Command line: `python -m bot [run|gateway|worker|check|generate|models|migrate]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from bot.config import Settings, load_settings
from bot.domain import ASPECTS
from bot.errors import ConfigError, UserError
from bot.logs import configure_logging

log = logging.getLogger("bot")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m bot",
        description="A Discord bot for AI video generation. With no command, runs the whole bot.",
    )
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="the whole bot in one process: gateway, scheduler, workers, delivery")
    commands.add_parser("gateway", help="Discord front end only (needs a shared database)")
    commands.add_parser("worker", help="generation workers only (REST-only Discord access for delivery)")
    commands.add_parser("check", help="validate configuration, database and providers; print a table")
    commands.add_parser("models", help="the model catalogue: durations, aspects, features, credits and price")
    generate = commands.add_parser("generate", help="one generation through the provider layer, no Discord")
    generate.add_argument("prompt", help="what the video should show")
    generate.add_argument("--model", help="provider/model (default: DEFAULT_MODEL, else the first configured)")
    generate.add_argument("--duration", type=int, help="seconds (the model's default when omitted)")
    generate.add_argument("--aspect", choices=ASPECTS, default="16:9")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--negative-prompt", dest="negative_prompt")
    generate.add_argument("--image", help="first frame for image-to-video (png/jpeg/webp)")
    generate.add_argument("-o", "--output", default="clip.mp4", help="where to write the MP4 (default clip.mp4)")
    migrate = commands.add_parser(
        "migrate",
        help="copy the whole database into an empty one (SQLite ⇄ PostgreSQL), verified table by table",
        description="Copy every table into an empty database and verify counts and checksums; stop the bot first. "
        "Exit 0: copied and verified; 1: a mismatch or a database error (the target keeps no row); "
        "2: refused (target not empty, schema newer than this bot, bad URL).",
    )
    migrate.add_argument("--from", dest="source", required=True, metavar="URL", help="the database to copy")
    migrate.add_argument("--to", dest="target", required=True, metavar="URL", help="an empty database to fill")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = args.command or "run"
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"videobot: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if command == "generate" and "log_level" not in settings.model_fields_set:
        logging.getLogger().setLevel(logging.WARNING)  # the progress bar tells the story; LOG_LEVEL brings logs back
    try:
        if command == "generate":
            from bot.cli.generate import generate

            return asyncio.run(generate(settings, args))
        if command == "models":
            from bot.cli.models import models

            return asyncio.run(models(settings))
        if command == "check":
            from bot.cli.check import check

            return asyncio.run(check(settings))
        if command == "migrate":
            from bot.cli.migrate import migrate

            return asyncio.run(migrate(args.source, args.target))
        return run_discord(settings, command)
    except ConfigError as exc:
        print(f"videobot: {exc}", file=sys.stderr)
        return 2
    except UserError as exc:
        from bot.discord.messages import describe  # the one place engine errors become words

        print(f"videobot: {describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run_discord(settings: Settings, command: str) -> int:
    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        raise ConfigError(
            "setting DISCORD_TOKEN is missing: create a bot at https://discord.com/developers/applications, "
            "copy its token (Bot → Reset Token) into .env as DISCORD_TOKEN=..., "
            'or try `python -m bot generate "a prompt"` without Discord'
        )
    from bot.cli.run import run_processes

    return asyncio.run(run_processes(settings, command))
