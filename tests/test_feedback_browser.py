"""Feedback on the drawing page in a real browser (Playwright + Debian's Chromium): draw,
say the answer is wrong and give the right digit; the summary and `mnist-digits feedback`
show it. Without a store the buttons are not there. Helpers: test_serve_browser.py.
"""

from __future__ import annotations

import pytest

from mnist_digits import cli
from mnist_digits.feedback import open_store
from mnist_digits.serve import create_app, running, with_feedback
from test_serve_browser import FREEHAND, answer, browser, draw, open_page, pages, predicted_digit  # noqa: F401


@pytest.fixture(scope="module")
def store_file(tmp_path_factory):
    return str(tmp_path_factory.mktemp("feedback") / "feedback.sqlite")


@pytest.fixture(scope="module")
def server_url(predictor, store_file):
    """The page served with a feedback store: `pages` opens it."""
    store = open_store(store_file)
    with running(with_feedback(create_app(predictor), predictor, store)) as url:
        yield url
    store.close()


@pytest.fixture(scope="module")
def predictor(mlp_run):
    from mnist_digits.predict import Predictor

    return Predictor.from_path(mlp_run)


def test_a_correction_on_the_page_is_stored_and_shown_by_summary_and_command(pages, server_url, store_file,
                                                                            capsys):
    page = pages()
    feedback = page.locator("#feedback")
    feedback.wait_for(state="visible")
    assert "stores this drawing" in page.locator("#feedback-note").inner_text()
    assert page.locator("#right").is_disabled()  # nothing to send before an answer
    draw(page, FREEHAND[1])
    read = predicted_digit(page)
    assert read == 1, answer(page)
    page.locator("#corrections button[data-digit='7']").click()  # "Wrong — it is: 7"
    page.wait_for_function("() => document.querySelector('#feedback-status').textContent.startsWith('Stored')")
    assert page.locator("#feedback-status").inner_text() == "Stored as a 7; thank you."
    assert page.locator("#right").is_disabled()  # once per answer
    summary = page.request.get(server_url + "/api/feedback/summary").json()
    assert summary["count"] == 1 and summary["per_digit"]["7"] == 1 and summary["accuracy"] == 0.0
    assert cli.main(["feedback", store_file]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 drawing (") and "per digit 0-9: 0 0 0 0 0 0 0 1 0 0" in out
    assert "model mlp: right on 0.00% of the 1 it answered" in out

    page.click("#clear")  # a new drawing, and "Right" this time
    draw(page, FREEHAND[7])
    assert predicted_digit(page) == 7, answer(page)
    page.click("#right")
    page.wait_for_function("() => document.querySelector('#feedback-status').textContent.startsWith('Stored as a 7')")
    assert page.request.get(server_url + "/api/feedback/summary").json()["accuracy"] == 0.5


def test_without_a_store_the_page_shows_no_feedback_buttons(browser, predictor):  # noqa: F811
    with running(create_app(predictor)) as url:
        page, outside, errors = open_page(browser, url)
        page.wait_for_timeout(300)  # the page has asked the server whether it collects
        assert page.locator("#feedback").is_hidden()
        draw(page, FREEHAND[7])
        assert predicted_digit(page) == 7
        assert page.locator("#feedback").is_hidden()
        page.context.close()
        assert not outside and not errors
