"""The docs against the code: the generated reference tables match the parser, the parameter schema,
the OSC addresses, the HTTP routes and the recorder (and the check fails when they do not); every
relative link of the README and docs/ leads to a file; the live page's picture is made from the
running page by its script."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATE = ROOT / "docs" / "generate.py"
SCREENSHOTS = ROOT / "docs" / "images" / "make_screenshots.py"
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GENERATE), *args], capture_output=True, text=True, timeout=120)


def test_the_generated_tables_match_the_code():
    done = generate("--check")
    assert done.returncode == 0, done.stderr


def test_the_check_names_a_table_that_disagrees_and_the_generator_mends_it(tmp_path):
    pages = shutil.copytree(ROOT / "docs" / "reference", tmp_path / "reference")
    cli = pages / "cli.md"
    good = cli.read_text()
    assert "| `--http-port HTTP_PORT` | `8787` |" in good
    cli.write_text(good.replace("| `--http-port HTTP_PORT` | `8787` |", "| `--http-port HTTP_PORT` | `8788` |"))
    done = generate("--check", "--docs", str(pages))
    assert done.returncode == 1 and "reference/cli.md: table serve-options differs from the code" in done.stderr
    assert generate("--docs", str(pages)).returncode == 0  # rewrites the table...
    assert cli.read_text() == good and generate("--check", "--docs", str(pages)).returncode == 0  # ...as it was


def test_a_table_no_page_holds_fails_the_check(tmp_path):
    pages = shutil.copytree(ROOT / "docs" / "reference", tmp_path / "reference")
    (pages / "osc.md").write_text("# OSC\n\nno table here\n")
    done = generate("--check", "--docs", str(pages))
    assert done.returncode == 1 and "osc-addresses" in done.stderr


def test_every_parameter_option_and_address_is_in_the_reference():
    """What the issue found missing: each appears in a generated table, so it cannot go missing again."""
    pages = {path.name: path.read_text() for path in (ROOT / "docs" / "reference").glob("*.md")}
    for name in ("controls", "style_scale", "loras", "tiling", "negative_prompt"):
        assert f"| `{name}` |" in pages["parameters.md"], name
    for option in ("--controlnet NAME=SOURCE", "--canny-thresholds LOW,HIGH", "--ip-adapter SOURCE", "--lora-dir"):
        assert f"| `{option}" in pages["cli.md"], option
    assert "| `--log-level {DEBUG,INFO,WARNING,ERROR}` |" in pages["cli.md"]
    for route in ("GET /v1/style", "PUT /v1/style", "GET /v1/channels", "DELETE /v1/channels/{channel}",
                  "GET /v1/record", "POST /v1/record", "GET /v1/loras"):
        assert f"| `{route}` |" in pages["http.md"], route
    for field in ("available", "recording", "file", "frames", "dropped", "files", "error"):
        assert f"| `{field}` |" in pages["http.md"], field
    for address in ("/bridge/style_scale", "/bridge/record", "/bridge/control", "/bridge/lora"):
        assert f"| `{address}` |" in pages["osc.md"], address


def test_every_relative_link_leads_to_a_file():
    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in pages for target, _ in LINK.findall(page.read_text())
              if "://" not in target and not (page.parent / target).exists()]
    assert not broken, broken


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is not installed")
def test_the_live_page_picture_is_made_from_the_running_page(tmp_path, cache_dir):
    pytest.importorskip("playwright")
    from PIL import Image

    out = tmp_path / "live-page.png"
    done = subprocess.run([sys.executable, str(SCREENSHOTS), "--out", str(out), "--cache-dir", str(cache_dir),
                           "--size", "64"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width == 1100 and picture.height >= 700
