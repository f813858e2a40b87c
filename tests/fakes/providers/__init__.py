"""Loopback fakes of the video vendors, one module each, on the common base in `base.py` (see its docstring for
the knobs every fake honours). `ALL_FAKES` is what the provider-agnostic tests and benchmarks run over."""

from __future__ import annotations

from tests.fakes.providers.base import FakeVendor
from tests.fakes.providers.comfyui import ComfyUIFake
from tests.fakes.providers.dashscope import DashScopeFake
from tests.fakes.providers.fal import FalFake
from tests.fakes.providers.kling import KlingFake
from tests.fakes.providers.luma import LumaFake
from tests.fakes.providers.minimax import MiniMaxFake
from tests.fakes.providers.openai import OpenAIFake
from tests.fakes.providers.replicate import ReplicateFake
from tests.fakes.providers.runway import RunwayFake
from tests.fakes.providers.veo import VeoFake
from tests.fakes.providers.vidu import ViduFake

ALL_FAKES: list[type[FakeVendor]] = [
    OpenAIFake, VeoFake, FalFake, ReplicateFake, ComfyUIFake, DashScopeFake,
    RunwayFake, LumaFake, KlingFake, MiniMaxFake, ViduFake,
]  # fmt: skip
