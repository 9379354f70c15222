"""The sweep gallery in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium),
opened from file:// as a user would open it: no server, no network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from studio.report import report
from tests.test_report import make_job, recipe_sweep

from selenium import webdriver  # the dev extra

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    """A reported sweep: 3 recipes x {class: 2 targets, channel: 1 target} x 2 seeds, plus one failed job."""
    sweep_dir = recipe_sweep(tmp_path_factory.mktemp("gallery_sweep"))
    make_job(sweep_dir, "6", ["+recipe=tv", "objective=class"], {"recipe": "tv", "objective": "class"},
             [], status="failed")
    report(sweep_dir)
    return sweep_dir / "gallery" / "index.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    import os

    if not (CHROMIUM and CHROMEDRIVER):  # a missing install step fails, it is not a skip
        pytest.fail("needs Debian's chromium and chromium-driver: run scripts/system-deps.sh (make test does)")

    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: Selenium Manager would otherwise try to download one
    # TMPDIR: Chromium's own temp dirs (its profile's singleton socket) go under pytest's tmp, not /tmp
    env = {**os.environ, "TMPDIR": str(tmp_path_factory.mktemp("chromium"))}
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, env=env), options=options)
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


# --- the two-choice quiz ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quiz_sweep(tmp_path_factory) -> Path:
    """The same sweep with natural exemplars: 18 renders, 18 questions."""
    from tests.test_quiz import with_exemplars

    sweep_dir = with_exemplars(recipe_sweep(tmp_path_factory.mktemp("quiz") / "exp" / "2026-12-04_22-00-00"))
    report(sweep_dir)
    return sweep_dir


def _downloaded(folder: Path, deadline_s: float = 60) -> Path:
    """The file Chromium downloaded into folder (waits while it is still a .crdownload)."""
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        done = [p for p in folder.iterdir() if not p.name.endswith(".crdownload")]
        if done:
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"nothing downloaded into {folder} within {deadline_s} s")


def _quiz_shows(browser) -> dict:
    return browser.execute_script(
        "const pic = (sel) => document.querySelector(sel);"
        "return {render: pic('#quiz-render').getAttribute('src'), left: pic('#quiz-left img').getAttribute('src'),"
        " right: pic('#quiz-right img').getAttribute('src'), progress: pic('#quiz-progress').textContent};")


def _loaded(browser) -> bool:
    return browser.execute_script("return ['#quiz-render', '#quiz-left img', '#quiz-right img'].every("
                                  "(s) => document.querySelector(s).complete && document.querySelector(s).naturalWidth > 0)")


def test_quiz_ten_clicks_download_and_report(browser, quiz_sweep, tmp_path, outputs):
    import csv

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.conftest import run_studio_forked

    page = quiz_sweep / "gallery" / "index.html"
    questions = _data(page)["quiz"]["questions"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    _open(browser, page).execute_script("localStorage.clear()")  # answers of an earlier session of this browser
    _open(browser, page)
    assert browser.find_element(By.ID, "quiz-button").text == "quiz (18 questions)"
    browser.find_element(By.ID, "quiz-button").click()
    assert browser.find_element(By.ID, "quiz").is_displayed()
    for i, q in enumerate(questions[:10]):  # always the left image
        shown = _quiz_shows(browser)
        assert shown["progress"] == f"question {i + 1} · {i} of 18 answered"
        assert shown["render"] == q["render"]  # the render, and its top and bottom exemplar on the recorded sides
        assert (shown["left"], shown["right"]) == ((q["top"], q["bottom"]) if q["top_side"] == "left" else (q["bottom"], q["top"]))
        WebDriverWait(browser, 10).until(_loaded)
        browser.find_element(By.ID, "quiz-left").click()
    assert _quiz_shows(browser)["progress"] == "question 11 · 10 of 18 answered"

    _open(browser, page)  # the answers stay in the browser
    browser.find_element(By.ID, "quiz-button").click()
    assert _quiz_shows(browser)["progress"] == "question 11 · 10 of 18 answered"
    browser.find_element(By.ID, "quiz-download").click()
    answers = _downloaded(downloads)
    rows = list(csv.DictReader(open(answers)))
    assert answers.name == "quiz-answers-exp_2026-12-04_22-00-00.csv"
    assert [(r["image"], r["top_side"], r["answer"]) for r in rows] == [(q["image"], q["top_side"], "left") for q in questions[:10]]
    assert all(r["sweep"] == "exp/2026-12-04_22-00-00" and r["answered_at"].endswith("Z") for r in rows)

    result = run_studio_forked("report", str(quiz_sweep), "--quiz", str(answers), "logger=none",
                               f"hydra.run.dir={tmp_path / 'run'}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    right = sum(q["top_side"] == "left" for q in questions[:10])
    assert f"quiz: 10 answer(s) from {answers}, {right} right" in result.stdout
    for s in csv.DictReader(open(quiz_sweep / "summary.csv")):  # the accuracy of each recipe is its clicks'
        marks = [q["top_side"] == "left" for q in questions[:10] if q["group"] == f"{s['recipe']} / {s['config.objective']}"]
        assert int(s["quiz_answers"]) == len(marks) and float(s["quiz_accuracy"]) == pytest.approx(sum(marks) / len(marks))
        assert float(s["quiz_accuracy_ci_low"]) <= float(s["quiz_accuracy"]) <= float(s["quiz_accuracy_ci_high"])
