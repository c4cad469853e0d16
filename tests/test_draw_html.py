"""``resdsl draw -o fig.html``: one self-contained page, exercised in a real headless
browser (Debian's chromium driven by Playwright; CI installs both)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import resdsl
from resdsl.backends.draw_html import to_html
from resdsl.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "draw"
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _payload(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="figure-data">(.*?)</script>', page, re.S)
    assert found is not None
    return json.loads(found.group(1))


def test_the_page_is_self_contained(tmp_path: Path) -> None:
    out = tmp_path / "fig.html"
    assert main(["draw", "resnet18", "cifar20", "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    # Nothing to fetch: no src or href attributes, no URLs, a policy that forbids loading anything.
    assert not re.search(r"\b(src|href)\s*=", page)
    assert "http://" not in page.replace('"http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    assert "default-src 'none'" in page
    data = _payload(page)
    assert [column["title"] for column in data["columns"]] == ["resnet18", "cifar20"]
    network = resdsl.compile("resnet18")
    column = data["columns"][0]
    boxes = column["boxes"]
    assert sum(box["params"] for box in boxes) + sum(arc["params"] for arc in column["arcs"]) == network.num_params
    assert sorted(column["blocks"]) == sorted(block.path for block in network.stage_blocks())
    assert column["stages"]["conv3_x"]["label"] == "conv3_x: 2 x basic(128), /2"


def test_names_cannot_end_the_script(tmp_path: Path) -> None:
    network = resdsl.compile(FIXTURES / "tiny.res")
    network.name = "x</script><script>alert(1)</script>"
    page = to_html([network])
    assert page.count("</script>") == 2  # the data's and the code's own
    assert _payload(page)["columns"][0]["title"] == network.name


def _browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM} here (CI installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    return sync_api.sync_playwright()


@pytest.fixture(scope="module")
def browser():
    with _browser() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "fig.html"
    assert main(["draw", str(FIXTURES / "branches.res"), "--network", "se_net", "-o", str(out)]) == 0
    tab = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    requests: list[str] = []
    tab.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: problems.append(str(error)))
    tab.on("request", lambda request: requests.append(request.url))
    tab.goto(out.as_uri())
    tab.wait_for_selector(".box")
    yield tab, problems, requests
    tab.close()


def test_loads_with_no_errors_and_fetches_nothing(page) -> None:
    tab, problems, requests = page
    assert problems == []
    assert all(url.startswith("file://") for url in requests), requests
    assert tab.locator(".box").count() > 20


def test_hovering_a_layer_shows_its_figures(page) -> None:
    tab, problems, _ = page
    network = resdsl.compile(FIXTURES / "branches.res", network="se_net")
    conv = next(node for node in network.nodes("conv") if node.name == "s2.0.conv1")
    tab.hover(f'[data-key="c0_n{conv.id}"]')
    tip = tab.inner_text("#tooltip")
    assert tab.is_visible("#tooltip")
    assert "s2.0.conv1" in tip
    assert "output: " + "x".join(map(str, conv.shape)) in tip
    # The box holds the conv and the BN and ReLU folded into it.
    folded = sum(n.params for n in network.nodes() if n.name in ("s2.0.conv1", "s2.0.bn1", "s2.0.relu1"))
    assert f"params: {folded:,}" in tip
    assert f"MACs: {conv.macs:,}" in tip
    # A side branch's box too.
    branch = next(n.id for n in network.nodes("conv") if n.name == "s1.0.se.fc1")
    tab.hover(f'[data-key="c0_n{branch}"]')
    assert "s1.0.se.fc1" in tab.inner_text("#tooltip")
    assert problems == []


def test_blocks_and_stages_collapse_and_expand(page) -> None:
    tab, problems, _ = page
    boxes = tab.locator(".box").count()
    network = resdsl.compile(FIXTURES / "branches.res", network="se_net")
    conv = next(n.id for n in network.nodes("conv") if n.name == "s1.1.conv1")
    tab.click(f'[data-key="c0_n{conv}"]')
    summary = tab.locator(".box.summary")
    assert summary.count() == 1 and "s1.1: se_basic(16)" in summary.text_content()
    # The block's 2 convs, its 3 branch boxes, its join and drop path became one box.
    assert tab.locator(".box").count() == boxes - 7 + 1
    summary.click()
    assert tab.locator(".box").count() == boxes and tab.locator(".box.summary").count() == 0
    tab.click(f'[data-key="c0_n{conv}"]', modifiers=["Shift"])
    assert tab.locator(".box.summary").text_content().startswith("s1: 2 x se_basic(16)")
    tab.click("#stages")
    assert tab.locator(".box.summary").count() == 2
    tab.click("#expand")
    assert tab.locator(".box").count() == boxes
    assert problems == []


def test_pan_and_zoom(page) -> None:
    tab, problems, _ = page
    before = tab.get_attribute("#figure", "viewBox")
    tab.mouse.move(600, 400)
    tab.mouse.wheel(0, -300)
    zoomed = tab.get_attribute("#figure", "viewBox")
    assert float(zoomed.split()[2]) < float(before.split()[2])
    tab.mouse.move(300, 300)
    tab.mouse.down()
    tab.mouse.move(400, 350)
    tab.mouse.up()
    panned = tab.get_attribute("#figure", "viewBox")
    assert panned.split()[:2] != zoomed.split()[:2] and panned.split()[2:] == zoomed.split()[2:]
    assert problems == []


def test_html_needs_no_graphviz(tmp_path: Path, monkeypatch) -> None:
    from resdsl.backends import draw

    monkeypatch.setattr(draw.shutil, "which", lambda name: None)
    assert main(["draw", "resnet18", "-o", str(tmp_path / "fig.html")]) == 0
    assert (tmp_path / "fig.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def _open(browser, tmp_path: Path, argv: list[str], viewport=(1200, 900)):
    """A context: the page `resdsl draw ARGV -o fig.html` writes, open in a new tab."""
    import contextlib

    out = tmp_path / "fig.html"
    assert main(["draw", *argv, "-o", str(out)]) == 0

    @contextlib.contextmanager
    def opened():
        tab = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        problems: list[str] = []
        tab.on("pageerror", lambda error: problems.append(str(error)))
        tab.goto(out.as_uri())
        tab.wait_for_selector(".box")
        try:
            yield tab, problems, _payload(out.read_text(encoding="utf-8"))
        finally:
            tab.close()

    return opened()


def test_columns_are_level_where_they_reach_an_output_size(browser, tmp_path: Path) -> None:
    """Fig. 3: VGG-19's "output size: 28" row is level with plain-34's and ResNet-34's."""
    with _open(browser, tmp_path, ["vgg19", "plain34", "resnet34"]) as (tab, problems, data):
        for size in (112, 56, 28, 14, 7):
            tops = []
            for column in data["columns"]:
                box = next(b for b in column["boxes"] if b["shape"] and len(b["shape"]) == 3 and b["shape"][1] == size)
                tops.append(float(tab.get_attribute(f'[data-key="{box["key"]}"] rect', "y")))
            assert len(set(tops)) == 1, (size, tops)
        assert problems == []


def test_the_first_view_of_a_tall_network_is_readable(browser, tmp_path: Path) -> None:
    with _open(browser, tmp_path, ["resnet152", "resnet50"]) as (tab, problems, _):
        scale = tab.evaluate(
            "() => { const s = document.getElementById('figure');"
            " return s.getBoundingClientRect().width / Number(s.getAttribute('viewBox').split(' ')[2]); }"
        )
        assert scale >= 0.8  # 11 px labels at 8.8 px or more, not a 152-layer column squeezed into the window
        image = tab.locator(".box").first.bounding_box()
        assert image is not None and 0 <= image["y"] < 900 and 0 <= image["x"] < 1200
        tab.click("#whole")
        whole = tab.evaluate("() => document.getElementById('figure').getAttribute('viewBox').split(' ').map(Number)")
        assert whole[3] > 4000  # the whole of both columns
        assert problems == []


def test_columns_take_the_titles_given(browser, tmp_path: Path) -> None:
    with _open(browser, tmp_path, ["plain34", "resnet34", "--title", "34-layer plain", "34-layer residual"]) as (
        tab,
        _,
        data,
    ):
        assert [column["title"] for column in data["columns"]] == ["34-layer plain", "34-layer residual"]
        assert tab.locator(".title").all_text_contents() == ["34-layer plain", "34-layer residual"]


def test_se_blocks_show_in_collapsed_summaries() -> None:
    page = to_html([resdsl.compile("timm/seresnet50")], detail="block")
    column = _payload(page)["columns"][0]
    assert column["blocks"]["layer1.0"]["label"] == "layer1.0: bottleneck(64) + se"
    assert column["stages"]["layer2"]["label"].startswith("layer2: 4 x bottleneck(128), /2 + se")


@pytest.mark.parametrize("width", [900, 1000, 1200])
def test_the_toolbar_leaves_the_titles_visible(browser, tmp_path: Path, width: int) -> None:
    """The toolbar, fixed at 36 px, wrapped to two or three lines between 900 and 1200 px
    and covered the columns' titles."""
    with _open(browser, tmp_path, ["plain34", "resnet34"], viewport=(width, 800)) as (tab, problems, _):
        bar = tab.locator("#bar").bounding_box()
        titles = [tab.locator(".title").nth(n).bounding_box() for n in range(2)]
        assert bar is not None and all(title is not None for title in titles)
        assert all(title["y"] >= bar["y"] + bar["height"] for title in titles), (bar, titles)
        assert problems == []


def test_the_page_draws_every_edge_of_its_data(browser, tmp_path: Path) -> None:
    """skresnet18: one line per edge of the figure's data, between the boxes it names;
    collapsing a block draws its edges to and from its summary only."""
    with _open(browser, tmp_path, ["timm/skresnet18"]) as (tab, problems, data):
        column = data["columns"][0]
        links = tab.evaluate("() => [...document.querySelectorAll('.link')].map(l => [l.dataset.from, l.dataset.to])")
        assert sorted(map(tuple, links)) == sorted((edge["source"], edge["target"]) for edge in column["edges"])
        conv = next(box for box in column["boxes"] if box["label"] == "3x3 conv, 128, /2, d2")
        tab.click(f'[data-key="{conv["key"]}"]')
        summary = column["blocks"][conv["block"]]["key"]
        links = tab.evaluate("() => [...document.querySelectorAll('.link')].map(l => [l.dataset.from, l.dataset.to])")
        inside = {box["key"] for box in column["boxes"] if box["block"] == conv["block"]}
        assert not any(end in inside for link in links for end in link)
        # From the block before; to the next block's two split parts.
        assert sorted(link.index(summary) for link in links if summary in link) == [0, 0, 1]
        assert problems == []
