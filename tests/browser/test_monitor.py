"""The monitor page (/monitor: service/web/monitor.html and monitor.js) in Debian's chromium against a real server.

The server is a copy of the service whose mnist-fc has a second version as its canary and its shadow
(harness.screenshot.canary_serving_file), with the default worker count: /metrics sums the workers. The test loads the page,
sends known requests from outside, and waits for the page's own refresh to show them; it never sleeps. As in
test_page.py, the browser reaches the server as http://thermo.test:<port> and no request may leave that origin.
"""

import tempfile
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

import artifacts
from artifacts import serving as serving_file
from harness.screenshot import canary_serving_file, metric, monitor_screenshot, routing_key
from testkit.browser import HOST, VIEWPORT, origin_of

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
SHOWN_MS = 60_000  # for counts to reach the view: a refresh (every 3 s) after the workers counted them
DRAWN = "#monitor[data-roles=metadata]"  # drawn from /metrics, with /metadata's roles and references
SERVED = serving_file.read().models
DEFAULT = SERVED[artifacts.MNIST].default
SECOND = next(v for v in artifacts.folder_versions(artifacts.MNIST) if v != DEFAULT)  # canary and shadow
LINEAR = SERVED[artifacts.TEMPERATURE_LINEAR].default


@pytest.fixture(scope="module")
def server(serve, tmp_path_factory):
    path = canary_serving_file(tmp_path_factory.mktemp("monitor") / "serving.json")
    home = tempfile.mkdtemp(prefix="bentoml-home-monitor-")
    with serve(".", REPO, home, env={"SERVICE_SERVING_FILE": str(path)}) as (url, _):
        yield url





@pytest.fixture
def page(context, origin):
    """A fresh load of the monitor, drawn once."""
    page = context.new_page()
    page.goto(f"{origin}/monitor")
    page.wait_for_selector(DRAWN)
    yield page
    page.close()


def version(page, model: str, tag: str):
    return page.locator(f'section[data-model="{model}"] article[data-version="{tag}"]')


def figure(article, name: str):
    return article.locator(f'[data-figure="{name}"]')


def test_monitor_is_served_and_linked_from_the_page(server):
    monitor = httpx.get(f"{server}/monitor")
    assert monitor.status_code == 200 and monitor.headers["content-type"].startswith("text/html")
    assert monitor.headers["content-security-policy"] == httpx.get(f"{server}/").headers["content-security-policy"]
    assert 'src="/web/monitor.js"' in monitor.text
    for path in ("monitor.js", "prometheus.js", "shares.js"):
        assert "javascript" in httpx.get(f"{server}/web/{path}").headers["content-type"], path
    assert 'href="/monitor"' in httpx.get(f"{server}/").text


def test_the_requests_sent_appear_with_drift_and_agreement(page, server, mnist_test_images):
    from playwright.sync_api import expect

    # Before any request: every model and version /metadata lists, with its roles, and nothing counted.
    assert page.eval_on_selector_all("section[data-model]", "els => els.map(e => e.dataset.model)") == sorted(SERVED)
    default, second = version(page, "mnist-fc", DEFAULT), version(page, "mnist-fc", SECOND)
    assert default.locator(".role").all_inner_texts() == ["default"]
    assert second.locator(".role").all_inner_texts() == ["canary", "shadow"]
    assert figure(default, "answers").inner_text() == "0"

    # 40 MNIST digits: 3 requests of 10 to the default (each copied to the shadow), 1 of 10 to the canary, by key;
    # and 500 readings (a full drift window), 5 of them outside the range the thermometer was fit to.
    images, _ = mnist_test_images
    answered = Counter()
    for i, key in enumerate([routing_key("mnist-fc", False)] * 3 + [routing_key("mnist-fc", True)]):
        answers = httpx.post(f"{server}/digits", json={"images": images[10 * i:10 * i + 10].tolist()},
                             headers={"x-routing-key": key}).json()
        assert {a["version"] for a in answers} == {SECOND if i == 3 else DEFAULT}
        if i < 3:
            answered.update(a["digit"] for a in answers)
    readings = [*np.linspace(25, 80, 495).round(2), 0, 5, 90, 100, 120]
    assert httpx.post(f"{server}/temperature", json={"readings": readings}).status_code == 200

    # The page's refresh shows them: the default's 30 answers, by digit as they were answered; the canary's 10 plus
    # the shadow's 30 copies, and its share of the requests that named no version: 1 of 4.
    expect(figure(default, "answers")).to_have_text("30", timeout=SHOWN_MS)
    expect(figure(second, "answers")).to_have_text("40", timeout=SHOWN_MS)
    expect(figure(second, "canary share")).to_have_text("25.0 %")
    bars = default.locator(".classes rect.bar")
    assert bars.evaluate_all("els => els.map(e => +e.dataset.count)") == [answered[d] for d in range(10)]
    assert "30 in all" in default.locator(".classes desc").text_content()
    confidence = default.locator(".confidence rect.bar").evaluate_all("els => els.map(e => +e.dataset.count)")
    assert len(confidence) == 8 and sum(confidence) == 30
    assert default.locator(".classes line.reference").count() == 10
    assert default.locator(".confidence line.reference").count() == 8

    # The shadow: every copied row counted once; the share agreeing as /metrics has it.
    outcomes = ("agree", "disagree", "failed", "skipped")
    copied = f"[data-model=mnist-fc] [data-version='{SECOND}'] .outcomes [data-figure]"
    page.wait_for_function("(s) => [...document.querySelectorAll(s)].reduce((n, e) => n + +e.textContent, 0) === 30",
                           arg=copied, timeout=SHOWN_MS)
    counts = {o: metric(server, "model_shadow_rows_total", outcome=o, shadow_version=SECOND) for o in outcomes}
    assert [int(figure(second, o).inner_text()) for o in outcomes] == [counts[o] for o in outcomes]
    agree, compared = counts["agree"], counts["agree"] + counts["disagree"]
    assert figure(second, "agreement").inner_text() == f"{100 * agree / compared:.1f} %"

    # Drift: the thermometer's window is full, so it has a score, shown against its threshold; mnist-fc's is not yet.
    linear = version(page, "temperature-linear", LINEAR)
    expect(figure(linear, "outside the reference")).to_have_text("5 (1.0 %)", timeout=SHOWN_MS)
    expect(figure(linear, "drift")).not_to_have_text("–", timeout=SHOWN_MS)
    drift = metric(server, "model_prediction_drift", model="temperature-linear")
    threshold = metric(server, "model_drift_threshold", model="temperature-linear")
    assert figure(linear, "drift").inner_text() == f"{drift:.3f}"
    assert figure(linear, "drift threshold").inner_text() == f"{threshold:.3f}"
    assert linear.locator(".drift").get_attribute("data-state") == ("alert" if drift > threshold else "ok")
    assert figure(default, "drift").inner_text() == "–"
    assert "not scored yet" in default.locator(".drift").inner_text()
    assert default.locator(".drift").get_attribute("data-state") == "pending"


def test_phone_width_and_screenshot(context, origin, tmp_path):
    # What `python -m harness.screenshot --page monitor` writes to docs/monitor.png, here into a temporary directory.
    page = context.new_page()
    page.goto(f"{origin}/monitor")
    path = tmp_path / "monitor.png"
    monitor_screenshot(page, path)
    with Image.open(path) as picture:
        assert picture.format == "PNG" and VIEWPORT["width"] - 20 <= picture.size[0] <= VIEWPORT["width"]
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.close()


def test_every_chart_has_a_text_alternative_and_every_figure_a_name(page):
    for svg in page.query_selector_all("svg"):
        assert svg.get_attribute("role") == "img"
        assert svg.eval_on_selector("title", "e => e.textContent")
        assert svg.eval_on_selector("desc", "e => e.textContent")
    for section in page.query_selector_all("section, article"):
        labelled = section.get_attribute("aria-labelledby")
        assert labelled and page.locator(f"#{labelled}").inner_text()


TOKEN = "t0ken-for-the-monitor-test"


def test_with_a_token_metrics_show_at_once_and_roles_once_it_is_given(context, serve):
    from playwright.sync_api import expect

    home = tempfile.mkdtemp(prefix="bentoml-home-monitor-token-")
    with serve(".", REPO, home, env={"SERVICE_API_TOKENS": TOKEN}) as (url, _):
        origin = origin_of(url)
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert httpx.post(f"{url}/temperature", json={"readings": [35.7, 55.9]}, headers=bearer).status_code == 200
        page = context.new_page()
        sent = {}  # path -> the Authorization headers it was sent with
        page.on("request", lambda r: sent.setdefault(urlsplit(r.url).path, set()).add(r.headers.get("authorization")))
        page.goto(f"{origin}/monitor")
        # /metadata asks for the token; /metrics needs none: its counts are on the page behind the dialog.
        page.locator("#token-dialog").wait_for(state="visible")
        linear = version(page, "temperature-linear", LINEAR)
        expect(figure(linear, "answers")).to_have_text("2")
        # Cancelled: the roles come from the metrics (the route that chose the version), the refusal is said.
        page.keyboard.press("Escape")
        page.wait_for_function("() => document.querySelector('#metadata-note').textContent.includes('bearer token')")
        assert linear.locator(".role").all_inner_texts() == ["default"]
        assert page.locator("section[data-model]").count() == 1  # only what answered; /metadata would list all
        # Given after a reload: every model is listed, and only /metadata carries the token.
        page.reload()
        page.fill("#token", TOKEN)
        page.press("#token", "Enter")
        expect(page.locator("section[data-model]")).to_have_count(len(SERVED))
        assert page.inner_text("#metadata-note") == ""
        assert sent["/metadata"] == {None, f"Bearer {TOKEN}"} and sent["/metrics"] == {None}
        page.close()


def test_no_request_left_the_origin(context, origin, recorded):
    # Last in the module: judges every request above, and loads the page itself so that it means something alone.
    page = context.new_page()
    page.goto(f"{origin}/monitor")
    page.wait_for_selector(DRAWN)
    page.close()
    assert {f"{origin}/metrics", f"{origin}/metadata", f"{origin}/web/monitor.js"} <= set(recorded["requests"])
    elsewhere = sorted({url for url in recorded["requests"] if urlsplit(url).hostname != HOST})
    assert elsewhere == []
    assert recorded["errors"] == []
