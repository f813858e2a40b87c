"""The model catalogue: weights follow list prices, `MODELS_FILE` overrides them per model (and aliases pick
the first offered model of a chain), a bad file is one clear line, and `python -m bot models` prints it all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.discord.messages import ENGLISH
from bot.discord.render import model_choice
from bot.domain import ASPECTS, ModelInfo
from bot.errors import ConfigError
from bot.providers.catalog import Catalogue, weight_for
from bot.providers.registry import ProviderRegistry
from tests.fakes.scripted_provider import ScriptedProvider

REPO = Path(__file__).resolve().parent.parent
WAN = ModelInfo(id="fal/fal-ai/wan/v2.2-a14b/text-to-video", label="Wan 2.2 (fal)", durations=(5, 6, 7, 8, 9, 10),
                aspects=ASPECTS, supports_image=True)  # fmt: skip


def test_weights_follow_list_prices() -> None:
    catalogue = Catalogue()
    wan = catalogue.apply(WAN)
    assert wan is not None and (wan.weight, wan.usd_per_second, wan.price_as_of) == (2.0, 0.08, "2026-08")
    veo = catalogue.apply(ModelInfo(id="veo/veo-3.1-generate-preview", label="Veo 3.1", durations=(4, 6, 8)))
    assert veo is not None and veo.weight == 8.0
    self_hosted = catalogue.apply(ModelInfo(id="comfyui/wan22", label="Wan (ComfyUI)", durations=(5,)))
    assert self_hosted is not None and (self_hosted.weight, self_hosted.usd_per_second) == (1.0, 0.0)
    unpriced = catalogue.apply(ModelInfo(id="replicate/some/model", label="?", durations=(5,)))
    assert unpriced is not None and unpriced.usd_per_second is None and unpriced.weight == 1.0
    assert [weight_for(x) for x in (None, 0.0, 0.01, 0.1, 0.15, 0.4)] == [1, 1, 1, 2, 3, 8]


def test_autocomplete_names_label_credits_durations_and_image() -> None:
    wan = Catalogue().apply(WAN)
    assert wan is not None
    assert model_choice(wan, ENGLISH) == "Wan 2.2 (fal) · 2 cr/s · 5-10 s · image"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_models_file_overrides_weight_price_durations_label_and_turns_models_off(tmp_path: Path) -> None:
    catalogue = Catalogue.load(write(tmp_path, """
[models."fal/fal-ai/wan/v2.2-a14b/text-to-video"]
weight = 3.5
usd_per_second = 0.06
durations = [5, 8, 30]
label = "Wan 2.2 fast lane"

[models."fake/video"]
enabled = false
"""))  # fmt: skip
    wan = catalogue.apply(WAN)
    assert wan is not None
    assert (wan.weight, wan.usd_per_second, wan.price_as_of, wan.label) == (3.5, 0.06, None, "Wan 2.2 fast lane")
    assert wan.durations == (5, 8), "an operator narrows what the vendor allows; 30 s is not offered"
    registry = ProviderRegistry([ScriptedProvider()], catalogue=catalogue)
    assert registry.model("fake/video") is None and registry.models() == []


def test_aliases_resolve_to_the_first_offered_model_of_the_chain(tmp_path: Path) -> None:
    catalogue = Catalogue.load(write(tmp_path, """
[aliases]
fast = ["veo/veo-3.1-fast-generate-preview", "fake/video", "local/preview"]
"""))  # fmt: skip
    registry = ProviderRegistry([ScriptedProvider()], catalogue=catalogue, default_model="fast")
    chosen = registry.model("fast")
    assert chosen is not None and chosen.id == "fake/video"
    assert registry.default_model == "fake/video"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[models."fake/video"]\nweigth = 2\n', "unknown key 'weigth'"),
        ('[models."fake/video"]\nweight = -1\n', "weight must be a number above 0"),
        ('[models."fake/video"]\ndurations = [0, 5]\n', "durations must be a list of whole seconds"),
        ('[models."fake/video"]\nenabled = "no"\n', "enabled must be true or false"),
        ('[models."video"]\nweight = 2\n', "not a provider/model name"),
        ('[aliases]\nfast = "fake/video"\n', "alias 'fast' must be a list"),
        ("[pricing]\nx = 1\n", "unknown section [pricing]"),
        ("[models\n", "MODELS_FILE is invalid"),
    ],
)
def test_a_bad_models_file_is_one_line_naming_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        Catalogue.load(write(tmp_path, text))
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_models_command_prints_the_catalogue_with_overrides(tmp_path: Path) -> None:
    models_file = write(tmp_path, '[models."local/preview"]\nlabel = "Offline card"\nweight = 2\n')
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_KEY", "_TOKEN", "_URL"))}
    env |= {"MODELS_FILE": str(models_file), "DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "bot", "models"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()[:2]
    assert header.split() == ["model", "label", "durations", "aspects", "image", "seed", "negative", "cr/s", "usd/s"]
    assert row.startswith("local/preview") and "Offline card" in row and "1-60 s" in row
    assert row.split()[-1] == "0.000" and " 2 " in row

    broken = write(tmp_path, '[models."local/preview"]\nweight = "lots"\n')
    env["MODELS_FILE"] = str(broken)
    failed = subprocess.run([sys.executable, "-m", "bot", "models"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert failed.returncode == 2 and "weight must be a number above 0" in failed.stderr
    assert "Traceback" not in failed.stderr
