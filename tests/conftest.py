"""Shared fixtures: tiny locally built checkpoints, cached for the session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402

from tests.tiny_models import ARCHS, build_arch_pair  # noqa: E402

HEAVY = "ALIGNLOC_HEAVY"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``heavy`` (validations that build large organisms; their results are quoted in the
    README) run only with ``$ALIGNLOC_HEAVY`` set, so that the default suite stays inside CI's time."""
    if os.environ.get(HEAVY):
        return
    skip = pytest.mark.skip(reason=f"heavy validation (minutes of CPU; results quoted in the README): set {HEAVY}=1 to run it")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def arch_pairs(tmp_path_factory) -> dict[str, tuple]:
    """{arch: (base_dir, tuned_dir)} for 5 families, randomly initialised and saved locally."""
    root = tmp_path_factory.mktemp("archs")
    return {arch: build_arch_pair(root, arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def llama_pair(arch_pairs) -> tuple:
    """(base_dir, tuned_dir) of the tiny Llama pair."""
    return arch_pairs["llama"]


def tiny_zoo_with(names: list[str]):
    """Generator for a fixture: build (or reuse) ``names`` in the test zoo, point ``ALIGNLOC_ZOO`` at it,
    yield its root and restore the variable afterwards.

    The test zoo is ``$ALIGNLOC_TEST_ZOO`` or ``<repo>/.zoo-cache`` (git-ignored); builds are reused
    across runs while their fingerprints match.
    """
    from pathlib import Path

    from alignloc.zoo import build

    root = Path(os.environ.get("ALIGNLOC_TEST_ZOO") or Path(__file__).resolve().parents[1] / ".zoo-cache")
    old = os.environ.get("ALIGNLOC_ZOO")
    os.environ["ALIGNLOC_ZOO"] = str(root)
    build(names, size="tiny", log=lambda m: None)
    yield root
    if old is None:
        os.environ.pop("ALIGNLOC_ZOO", None)
    else:
        os.environ["ALIGNLOC_ZOO"] = old


@pytest.fixture(scope="session")
def zoo_tiny():
    """The tiny model-organism zoo (default set, hard tier + both bases), built once and cached on disk. Returns its root."""
    from alignloc.zoo import DEFAULT_ORGANISMS, HARD_ORGANISMS

    yield from tiny_zoo_with(DEFAULT_ORGANISMS + HARD_ORGANISMS + ["base-large"])
