"""The sweep gallery in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium),
opened from file:// as a user would open it: no server, no network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from studio.report import report
from tests.test_report import make_job, recipe_sweep

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (scripts/system-deps.sh)")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    """A reported sweep: 3 recipes x {class: 2 targets, channel: 1 target} x 2 seeds, plus one failed job."""
    sweep_dir = recipe_sweep(tmp_path_factory.mktemp("gallery_sweep"))
    make_job(sweep_dir, "6", ["+recipe=tv", "objective=class"], {"recipe": "tv", "objective": "class"},
             [], status="failed")
    report(sweep_dir)
    return sweep_dir / "gallery" / "index.html"


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: Selenium Manager would otherwise try to download one
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _open(browser, page: Path):
    browser.get(page.resolve().as_uri())
    browser.execute_script("return document.readyState")  # get() waits for the load event
    return browser


def _visible_ids(browser) -> list[int]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#cards .card')].filter(c => !c.hidden).map(c => +c.dataset.id)")


def _data(page: Path) -> dict:
    text = page.read_text()
    start = text.index('<script id="gallery-data" type="application/json">') + len(
        '<script id="gallery-data" type="application/json">')
    return json.loads(text[start:text.index("</script>", start)])


def test_page_loads_with_every_image_and_no_errors(browser, gallery, tmp_path):
    from selenium.webdriver.common.by import By

    _open(browser, gallery)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    cards = browser.find_elements(By.CSS_SELECTOR, "#cards .card")
    assert len(cards) == 18 and len(_visible_ids(browser)) == 18  # 3 recipes x 3 targets x 2 seeds
    assert browser.find_element(By.ID, "count").text == "18 of 18 images"
    widths = browser.execute_script("return [...document.querySelectorAll('#cards img')].map(i => i.complete && i.naturalWidth)")
    assert widths == [28] * 18  # every image loaded from beside the page
    assert "1 failed job(s)" in browser.find_element(By.ID, "failed").text
    browser.save_screenshot(str(tmp_path / "gallery.png"))
    assert (tmp_path / "gallery.png").stat().st_size > 0


def test_filters_reduce_the_cards(browser, gallery):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open(browser, gallery)
    data = _data(gallery)
    assert {"recipe", "objective", "regularizer", "param", "target", "seed"} <= set(data["facets"])
    Select(browser.find_element(By.CSS_SELECTOR, "select[data-facet=recipe]")).select_by_value("l2")
    ids = _visible_ids(browser)
    assert len(ids) == 6 and all(data["cards"][i]["facets"]["recipe"] == "l2" for i in ids)
    assert browser.find_element(By.ID, "count").text == "6 of 18 images"
    Select(browser.find_element(By.CSS_SELECTOR, "select[data-facet=seed]")).select_by_value("1")
    Select(browser.find_element(By.CSS_SELECTOR, "select[data-facet=target]")).select_by_value("class:0")
    ids = _visible_ids(browser)
    assert len(ids) == 1
    facets = data["cards"][ids[0]]["facets"]
    assert (facets["recipe"], facets["seed"], facets["target"]) == ("l2", "1", "class:0")
    Select(browser.find_element(By.CSS_SELECTOR, "select[data-facet=param]")).select_by_value("fft")
    assert _visible_ids(browser) == []  # l2 is a pixel recipe


def test_sorting_by_a_metric_orders_the_cards(browser, gallery):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open(browser, gallery)
    data = _data(gallery)
    values = lambda: [data["cards"][i]["metrics"]["target_prob"] for i in _visible_ids(browser)]  # noqa: E731
    assert values() != sorted(values(), reverse=True)  # the sweep order is not already sorted
    Select(browser.find_element(By.ID, "sort")).select_by_value("target_prob")
    assert values() == sorted(values(), reverse=True)
    first = browser.find_element(By.CSS_SELECTOR, "#cards .card:not([hidden]) .value").text
    assert first.startswith("target_prob: ")
    Select(browser.find_element(By.ID, "order")).select_by_value("asc")
    assert values() == sorted(values())
    Select(browser.find_element(By.ID, "sort")).select_by_value("diversity")  # a job's metric sorts too
    assert [data["cards"][i]["metrics"]["diversity"] for i in _visible_ids(browser)] == sorted(
        c["metrics"]["diversity"] for c in data["cards"])


def test_click_enlarges_with_config_and_metrics(browser, gallery):
    from selenium.webdriver.common.by import By

    _open(browser, gallery)
    data = _data(gallery)
    viewer = browser.find_element(By.ID, "viewer")
    assert not viewer.is_displayed()
    card_id = _visible_ids(browser)[5]
    browser.find_element(By.CSS_SELECTOR, f'.card[data-id="{card_id}"] img').click()
    assert viewer.is_displayed()
    card = data["cards"][card_id]
    big = browser.find_element(By.ID, "viewer-image")
    assert big.size["width"] >= 200 and browser.execute_script("return arguments[0].naturalWidth", big) == 28
    metrics = browser.find_element(By.ID, "viewer-metrics").text
    assert "target_prob" in metrics and "objective" in metrics and "diversity" in metrics
    assert card["metrics"]["objective"] % 1 and f"{card['metrics']['objective']:.4g}" in metrics
    overrides = browser.find_element(By.ID, "viewer-overrides").text
    assert f"recipe={card['facets']['recipe']}" in overrides
    assert "regularizer" in browser.find_element(By.ID, "viewer-choices").text
    assert '"choices"' in browser.execute_script("return document.getElementById('viewer-config').textContent")
    browser.find_element(By.CSS_SELECTOR, "#viewer [data-close]").click()
    assert not viewer.is_displayed()


def test_two_picked_images_side_by_side(browser, gallery, tmp_path):
    from selenium.webdriver.common.by import By

    _open(browser, gallery)
    data = _data(gallery)
    button = browser.find_element(By.ID, "compare-button")
    assert not button.is_enabled()
    ids = _visible_ids(browser)
    for card_id in (ids[0], ids[5], ids[10]):  # a third pick replaces the oldest
        browser.find_element(By.CSS_SELECTOR, f'.card[data-id="{card_id}"] .pick input').click()
    assert button.is_enabled()
    button.click()
    compare = browser.find_element(By.ID, "compare")
    assert compare.is_displayed()
    sides = browser.find_elements(By.CSS_SELECTOR, "#compare-sides .side")
    assert [int(s.get_attribute("data-id")) for s in sides] == [ids[5], ids[10]]
    widths = browser.execute_script("return [...document.querySelectorAll('#compare-sides img')].map(i => i.naturalWidth)")
    assert widths == [28, 28]
    table = browser.find_element(By.ID, "compare-metrics").text
    a, b = (data["cards"][i]["metrics"]["target_prob"] for i in (ids[5], ids[10]))
    assert a != b and f"target_prob {a:.4g} {b:.4g} {b - a:.4g}" in table
    browser.save_screenshot(str(tmp_path / "compare.png"))
