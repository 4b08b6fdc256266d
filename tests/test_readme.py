"""Every command and code block the README and the pages under docs/ show runs (on the tiny zoo): they are
tested documentation.

``bash`` blocks (the README's first, then each page's in ``PAGES`` order) are run line by line in one
scratch directory (later lines use earlier outputs);
in the set-up block the pip installs are what ``.ci/run`` itself does and the pytest line is this
suite, so only its ``alignloc`` part runs. ``python`` blocks run as scripts. ``text`` blocks are
syntax references or need your own models and the network; they are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_layerdiff_units import dom_in_chromium

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README] + [ROOT / "docs" / f"{n}.md" for n in ("guide", "measures", "performance", "experiments", "errors",
                                                         "development")]


def blocks(lang: str) -> list[str]:
    """The ``lang`` code blocks of the README and the docs pages, in ``PAGES`` order."""
    return [b for page in PAGES for b in re.findall(rf"```{lang}\n(.*?)```", page.read_text(), flags=re.S)]


def commands() -> list[str]:
    out = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "pytest" in line:
                continue
            if "pip install" in line:
                out += [c.strip() for c in line.split("&&") if c.strip().startswith("alignloc")]
            else:
                out.append(line)
    return out


def test_readme_is_a_front_page_and_the_docs_hold_the_rest():
    text = README.read_text()
    assert len(text.splitlines()) <= 220, "the README is a front page: details go to docs/"
    for heading in ("## Set-up: two commands", "## Your own pair", "## Python in ten lines", "## Commands", "## Measures",
                    "## Notebooks", "## Limitations", "## Documentation"):
        assert heading in text, heading
    sections = {"guide": ("## Your own pair", "## Command line", "## Running on a real pair", "## Prompt format (JSONL)",
                          "## The activation store"),
                "measures": ("## layer-diff: where is the change, and of what kind?", "## Causal localization",
                             "### localize-bench: the accuracy figure", "## Localizing full fine-tunes"),
                "performance": ("## Large models",), "errors": ("## Errors, interruptions, output folders, pickle",),
                "experiments": ("## Model organisms", "## Benchmarks", "## Surfaced vs installed"),
                "development": ("## Code layout",)}
    for page, headings in sections.items():
        body = (ROOT / "docs" / f"{page}.md").read_text()
        for heading in headings:
            assert heading in body, (page, heading)
    for page in PAGES:  # every image and every local link resolves from the page that holds it
        body = page.read_text()
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", body):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), (page.name, target)
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in text, f"the README links {page.name}"
    cmds = commands()
    assert "alignloc demo" in cmds and any(c.startswith("alignloc figures") for c in cmds)
    assert len(blocks("python")) >= 1


def test_every_readme_command_runs(zoo_tiny, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    for cmd in commands():
        r = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{cmd}\n{r.stderr[-3000:]}"
    assert (tmp_path / "figs" / "proxy_tune.png").is_file() and (tmp_path / "figs" / "localize_bench.png").is_file()
    # "open the report": the demo's page renders in a browser
    assert dom_in_chromium(tmp_path / "alignloc-demo" / "index.html", tmp_path).count('class="main-svg"') >= 5


@pytest.mark.parametrize("i", range(len(blocks("python"))))
def test_every_readme_python_block_runs(zoo_tiny, tmp_path, i):
    script = tmp_path / "example.py"
    script.write_text(blocks("python")[i])
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
