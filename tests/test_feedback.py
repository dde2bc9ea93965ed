"""The feedback store and its HTTP routes, against SQLite AND a real PostgreSQL server:
every test that takes `store_url` runs once on each (PostgreSQL 15 from Debian, started in a
temporary folder on a unix socket by tests/postgres_server.py; never a mock).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mnist_digits import feedback, idx
from mnist_digits.errors import FeedbackStoreError
from mnist_digits.feedback import open_store
from mnist_digits.predict import Predictor
from mnist_digits.serve import MAX_BODY_BYTES, create_app, with_feedback
from postgres_server import fresh_database, postgres_bin, running_postgresql
from test_serve_api import LOCAL, blank_png, canvas_png

TRICKY_NAME = "mlp'); DROP TABLE drawings; --"


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_admin_url():
    if postgres_bin() is None:
        reason = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with running_postgresql() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """An empty store's name: a SQLite file, or a fresh database on the test server."""
    if request.param == "sqlite":
        yield str(tmp_path / "feedback.sqlite")
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    with fresh_database(admin_url, f"test_{uuid.uuid4().hex[:12]}") as url:
        yield url


@pytest.fixture
def store(store_url):
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def predictor(mlp_run):
    return Predictor.from_path(mlp_run)


@pytest.fixture
def client(predictor, store):
    app = with_feedback(create_app(predictor), predictor, store)
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as test_client:
        yield test_client


def digit_image(value: int) -> np.ndarray:
    """A distinct 28x28 float image per `value` (the store keeps it as uint8)."""
    return np.random.default_rng(value).integers(0, 256, (28, 28)).astype(np.float32) / 255


# --- the store ---------------------------------------------------------------------------


def test_a_drawing_is_stored_with_everything_about_it(store):
    image = digit_image(1)
    drawing_id, duplicate = store.add(b"png-1", image, label=7, predicted=1, model=TRICKY_NAME,
                                      model_version="2026-11-28", model_test_accuracy=0.981)
    assert not duplicate
    collected = store.collected()
    assert collected.ids == [drawing_id]
    np.testing.assert_array_equal(collected.images[0], np.round(image * 255).astype(np.uint8))
    assert collected.labels.tolist() == [7] and collected.predicted.tolist() == [1]
    assert collected.models == [TRICKY_NAME]  # quotes and ; are data, never SQL
    assert collected.created[0].year >= 2026
    summary = store.summary(TRICKY_NAME)
    assert summary["count"] == 1 and summary["per_digit"]["7"] == 1 and summary["per_digit"]["1"] == 0
    assert summary["answered"] == 1 and summary["accuracy"] == 0.0
    assert store.summary("another model")["accuracy"] is None


def test_the_same_drawing_is_stored_once_and_its_repeats_counted(store):
    first, _ = store.add(b"same bytes", digit_image(1), 3, 3, "mlp")
    for _ in range(20):
        assert store.add(b"same bytes", digit_image(2), 5, 5, "mlp") == (first, True)
    collected = store.collected()
    assert len(collected) == 1 and collected.labels.tolist() == [3]  # the first one stands
    assert store.summary("mlp")["duplicates"] == 20


def test_a_label_outside_0_to_9_is_refused_and_nothing_stored(store):
    for label in (-1, 10):
        with pytest.raises(FeedbackStoreError, match="0-9"):
            store.add(b"x", digit_image(1), label, None, "mlp")
    assert len(store.collected()) == 0


def test_writers_in_parallel_lose_and_duplicate_nothing(store):
    def write(worker: int):
        for n in range(15):
            store.add(f"{worker}-{n}".encode(), digit_image(n), n % 10, None, "mlp")
            store.add(f"{worker}-0".encode(), digit_image(0), 0, None, "mlp")  # a repeat each time

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    summary = store.summary("mlp")
    assert summary["count"] == 8 * 15
    assert summary["duplicates"] == 8 * 15  # each worker's 15 repeats of its first drawing


def test_reopening_keeps_the_drawings_and_an_older_schema_is_migrated(store_url):
    engine = feedback.FeedbackStore(sa.create_engine(feedback.database_url(store_url)), "old")
    with engine.engine.begin() as connection:  # a store as the first release wrote it
        feedback.schema_version.create(connection)
        connection.execute(feedback.schema_version.insert().values(version=1))
        feedback.MIGRATIONS[0](connection)
    engine.close()
    store = open_store(store_url)
    store.add(b"kept", digit_image(1), 4, None, "mlp")
    store.close()
    store = open_store(store_url)
    assert store.collected().labels.tolist() == [4]
    assert store.migrate() == feedback.SCHEMA_VERSION
    with store.engine.connect() as connection:
        indexes = {index["name"] for index in sa.inspect(connection).get_indexes("drawings")}
        assert "drawings_created" in indexes  # the second step ran
        connection.execute(feedback.schema_version.update().values(version=feedback.SCHEMA_VERSION + 1))
        connection.commit()
    store.close()
    with pytest.raises(FeedbackStoreError, match="newer than this mnist-digits"):
        open_store(store_url)


def read_only_url(store_url: str) -> str:
    """The same store, opened by someone allowed to read it but not to write."""
    if "://" not in store_url:
        return f"sqlite:///file:{store_url}?mode=ro&uri=true"
    role = f"reader_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(feedback.database_url(store_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        connection.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    engine.dispose()
    return store_url.replace("postgres@", f"{role}@", 1)


def test_a_store_that_cannot_be_written_is_refused_when_opened(store, store_url):
    with pytest.raises(FeedbackStoreError, match="cannot open and write it"):
        open_store(read_only_url(store_url))


def test_a_store_that_cannot_be_opened_is_named_in_one_line(tmp_path):
    for url, named in ((str(tmp_path / "no such folder" / "f.sqlite"), "no such folder"),
                       (f"postgresql://nobody@/nothing?host={tmp_path}", "nothing"),
                       ("mysql://somewhere/db", "mysql")):
        with pytest.raises(FeedbackStoreError) as error:
            open_store(url)
        assert named in str(error.value) and "\n" not in str(error.value)


def test_held_out_drawings_are_a_fifth_chosen_by_id_and_never_move():
    ids = [uuid.uuid4().hex for _ in range(5000)]
    held_out = feedback.held_out_mask(ids)
    assert 0.18 < held_out.mean() < 0.22
    assert feedback.held_out_mask(ids[2500:]).tolist() == held_out[2500:].tolist()


def test_export_writes_the_idx_layout_readers_understand(store, store_url, tmp_path):
    for n in range(30):
        store.add(f"drawing {n}".encode(), digit_image(n), n % 10, None, "mlp")
    collected = store.collected()
    checksums = feedback.export_idx(collected, tmp_path / "export")
    held_out = collected.held_out()
    train_images = idx.read_idx(tmp_path / "export" / "train-images-idx3-ubyte.gz")
    test_labels = idx.read_idx(tmp_path / "export" / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(train_images, collected.images[~held_out])
    np.testing.assert_array_equal(test_labels, collected.labels[held_out])
    for line in (tmp_path / "export" / "SHA256SUMS").read_text().splitlines():  # sha256sum -c format
        sha, name = line.split("  ")
        assert hashlib.sha256((tmp_path / "export" / name).read_bytes()).hexdigest() == sha == checksums[name]
    from_folder, from_store = feedback.load_extra(str(tmp_path / "export")), feedback.load_extra(store_url)
    np.testing.assert_array_equal(from_folder.x_train, from_store.x_train)
    np.testing.assert_array_equal(from_folder.y_held_out, from_store.y_held_out)
    (tmp_path / "export" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"changed")
    with pytest.raises(Exception, match="does not match SHA256SUMS"):
        feedback.load_extra(str(tmp_path / "export"))


# --- the HTTP routes ---------------------------------------------------------------------------


def post(client, image: bytes, **fields):
    return client.post("/api/feedback", files={"file": ("drawing.png", image, "image/png")},
                       data={name: str(value) for name, value in fields.items()})


def test_a_correction_is_stored_and_the_summary_counts_it(client, store, mnist):
    seven = canvas_png(mnist.x_test[0])  # a 7
    response = post(client, seven, label=7)
    assert response.status_code == 200, response.text
    assert response.json()["duplicate"] is False
    response = post(client, canvas_png(mnist.x_test[1]), label=4, predicted=2)  # the person says 4
    collected = store.collected()
    assert response.json()["id"] == collected.ids[1]
    assert collected.predicted.tolist() == [7, 2]  # left out: the served model's own answer
    assert collected.models == ["mlp", "mlp"]
    summary = client.get("/api/feedback/summary").json()
    assert summary["count"] == 2 and summary["per_digit"]["7"] == 1 and summary["per_digit"]["4"] == 1
    assert summary["accuracy"] == 0.5 and summary["model"] == "mlp"


def test_the_same_drawing_sent_a_thousand_times_is_stored_once(client, store, mnist):
    drawing = canvas_png(mnist.x_test[0])
    ids = {post(client, drawing, label=7).json()["id"] for _ in range(1000)}
    assert len(ids) == 1
    summary = client.get("/api/feedback/summary").json()
    assert summary["count"] == 1 and summary["duplicates"] == 999


@pytest.mark.parametrize("case", ["label 10", "label x", "label '; DROP", "no label", "no file",
                                  "not an image", "blank", "too big", "not multipart"])
def test_bad_input_gets_a_json_4xx_and_stores_nothing(client, store, mnist, case):
    drawing = canvas_png(mnist.x_test[0])
    response = {
        "label 10": lambda: post(client, drawing, label=10),
        "label x": lambda: post(client, drawing, label="x"),
        "label '; DROP": lambda: post(client, drawing, label="1'; DROP TABLE drawings; --"),
        "no label": lambda: post(client, drawing),
        "no file": lambda: client.post("/api/feedback", data={"label": "3"},
                                       headers={"Content-Type": "multipart/form-data; boundary=x"}),
        "not an image": lambda: post(client, b"not an image at all", label=3),
        "blank": lambda: post(client, blank_png(), label=3),
        "too big": lambda: post(client, b"\0" * (MAX_BODY_BYTES + 1), label=3),
        "not multipart": lambda: client.post("/api/feedback", content=drawing,
                                             headers={"Content-Type": "image/png"}),
    }[case]()
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]
    assert len(store.collected()) == 0


def test_without_a_store_the_routes_are_not_there(predictor):
    with TestClient(create_app(predictor), base_url=LOCAL) as client:
        assert client.get("/api/feedback/summary").status_code == 404
        response = client.post("/api/feedback", files={"file": ("a.png", b"x", "image/png")}, data={"label": "1"})
        assert response.status_code == 404 and "error" in response.json()


def test_serve_stops_at_start_naming_a_store_it_cannot_open(mlp_run, store_url, tmp_path):
    unusable = (str(tmp_path / "missing folder" / "feedback.sqlite") if "://" not in store_url
                else store_url.replace("/test_", "/missing_", 1))
    completed = subprocess.run(
        [sys.executable, "-m", "mnist_digits.cli", "serve", str(mlp_run), "--port", "0",
         "--feedback-db", unusable], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnist-digits: error: feedback store")
    assert ("missing folder" if "://" not in store_url else "missing_") in lines[0]


def test_the_postgresql_fixture_stops_its_server_and_deletes_its_folder(postgres_admin_url):
    with running_postgresql() as url:
        folder = Path(url.split("host=")[1])
        assert (folder / ".s.PGSQL.5432").exists()
    assert not folder.exists()


# --- the command ------------------------------------------------------------------------------


def test_the_feedback_command_counts_measures_draws_and_exports(store, store_url, mlp_run, mnist,
                                                                 predictor, tmp_path, capsys):
    from mnist_digits import cli

    labels = mnist.y_test[:50]
    for n, label in enumerate(labels):  # the page's model said 1 for every drawing
        store.add(f"drawing {n}".encode(), mnist.x_test[n] / 255.0, int(label), 1, TRICKY_NAME,
                  model_test_accuracy=0.9812)
    figure, export = tmp_path / "confusion.png", tmp_path / "export"
    assert cli.main(["feedback", store_url, "--model", str(mlp_run), "--figure", str(figure),
                     "--export", str(export)]) == 0
    out = capsys.readouterr().out
    assert "50 drawings" in out
    assert "per digit 0-9: " + " ".join(str(int((labels == d).sum())) for d in range(10)) in out
    right = (labels == 1).mean()
    assert f"model {TRICKY_NAME}: right on {right:.2%} of the 50 it answered (MNIST test: 98.12%)" in out
    model_right = np.mean([a.digit for a in predictor.predict_prepared(mnist.x_test[:50] / 255.0)] == labels)
    assert f"mlp run on the collected drawings: {model_right:.2%}" in out
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert len(idx.read_idx(export / "train-images-idx3-ubyte.gz")) + \
        len(idx.read_idx(export / "t10k-images-idx3-ubyte.gz")) == 50


def test_the_feedback_command_names_a_store_it_cannot_open(tmp_path, capsys):
    from mnist_digits import cli

    assert cli.main(["feedback", str(tmp_path / "nowhere" / "f.sqlite")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mnist-digits: error: feedback store") and "nowhere" in error


# --- training on collected drawings ---------------------------------------------------------------


def fill_store(url: str, images: np.ndarray, labels: np.ndarray) -> None:
    store = open_store(url)
    for n, (image, label) in enumerate(zip(images, labels)):
        store.add(f"drawing {n}".encode(), image / 255.0, int(label), None, "mlp")
    store.close()


def test_train_with_extra_data_joins_the_drawings_and_reports_the_held_out_ones(mnist, tmp_path, capsys):
    from mnist_digits import cli

    url = str(tmp_path / "feedback.sqlite")
    fill_store(url, mnist.x_test[:100], mnist.y_test[:100])
    feedback.export_idx(open_store(url).collected(), tmp_path / "export")
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "mlp", "--epochs", "1", "--quiet", "--out", str(out),
                     "--extra-data", str(tmp_path / "export")]) == 0
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    extra = config["extra_data"]
    assert extra["train"] + extra["held_out"] == 100 and extra["repeats"] > 1
    assert config["data"]["train"] == len(mnist.x_train) + extra["repeats"] * extra["train"]
    assert metrics["test"]["count"] == 10_000  # measured on MNIST only
    assert metrics["collected"]["held_out"] == extra["held_out"]
    assert 0.5 < metrics["collected"]["held_out_accuracy"] <= 1.0
    assert "## Collected drawings" in (out / "report.md").read_text()
    assert last_line.startswith(f"collected drawings held out: {metrics['collected']['held_out_accuracy']:.2%}")


def test_finetune_reports_before_and_after(mlp_run, mnist, store_url, tmp_path, capsys):
    from mnist_digits import cli

    fill_store(store_url, mnist.x_test[:200], mnist.y_test[:200])
    out = tmp_path / "finetuned"
    assert cli.main(["finetune", str(mlp_run), "--extra-data", store_url, "--epochs", "1", "--quiet",
                     "--out", str(out)]) == 0
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    metrics = json.loads((out / "metrics.json").read_text())
    base = json.loads((mlp_run / "metrics.json").read_text())
    collected = metrics["collected"]
    assert collected["before"]["mnist_test_accuracy"] == base["test"]["accuracy"]
    assert collected["mnist_test_drop_points"] == pytest.approx(
        100 * (base["test"]["accuracy"] - metrics["test"]["accuracy"]), abs=1e-3)
    assert f"{base['test']['accuracy']:.2%} -> {metrics['test']['accuracy']:.2%}" in last_line
    assert json.loads((out / "config.json").read_text())["finetuned_from"] == str(mlp_run)
    assert "| before (" in (out / "report.md").read_text()


def test_a_fall_in_mnist_accuracy_over_the_limit_is_said_plainly(capsys):
    from mnist_digits import cli
    from mnist_digits.pipeline import collected_metrics

    class Guess:  # a model that answers 3 to everything
        def predict_proba(self, images):
            return np.eye(10)[np.full(len(images), 3)]

    extra = feedback.ExtraData("test", np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8),
                               np.zeros((4, 28, 28), np.uint8), np.array([3, 3, 1, 2], np.uint8))
    before = {"run": "base", "mnist_test_accuracy": 0.9810, "held_out_accuracy": 0.25}
    fell = collected_metrics(Guess(), extra, 0.9770, before)
    assert fell["held_out_accuracy"] == 0.5 and fell["mnist_test_fell"]
    cli._print_collected({"collected": fell})
    assert "WARNING: MNIST test accuracy fell 0.40 points" in capsys.readouterr().out
    assert not collected_metrics(Guess(), extra, 0.9785, before)["mnist_test_fell"]
