"""predict: Predictor (shared with the server) and the `mnist-digits predict` command."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from scipy.special import softmax

from mnist_digits import cli
from mnist_digits.errors import InputImageError, NoDigitFound
from mnist_digits.idx import encode_idx
from mnist_digits.predict import Failure, Predictor, collect_inputs, predict_inputs, prepared_png_name

GOOD = [0, 1, 2, 3, 4, 7]  # test digits the seed network reads right: 7 2 1 0 4 9


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _on_paper(digit: np.ndarray, size: int = 120) -> Image.Image:
    """A test digit as dark ink on white paper, bigger and off-centre."""
    ink = Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BICUBIC)
    page = Image.new("L", (size * 2, int(size * 1.5)), 255)
    page.paste(ink, (size // 3, size // 5))
    return page


@pytest.fixture(scope="module")
def predictor(mlp_run):
    return Predictor.from_path(mlp_run)


@pytest.fixture(scope="module")
def digits_folder(mnist, tmp_path_factory):
    """Good images (one in a sub-folder), a hidden file, a non-image, and bad images."""
    folder = tmp_path_factory.mktemp("digits")
    (folder / "more").mkdir()
    for index in GOOD:
        target = folder / ("more" if index == 7 else ".") / f"digit-{index}.png"
        target.write_bytes(_png(_on_paper(mnist.x_test[index])))
    (folder / ".hidden.png").write_bytes(b"macOS resource fork")
    (folder / "notes.txt").write_text("not looked at")
    (folder / "empty.png").write_bytes(b"")
    (folder / "renamed.jpg").write_text("a text file with an image name")
    (folder / "blank.png").write_bytes(_png(Image.new("L", (50, 50), 255)))
    return folder


def _expected(mnist, index):
    return int(mnist.y_test[index])


# --- Predictor ---------------------------------------------------------------------------


def test_answers_carry_calibrated_probabilities(predictor, mnist):
    images = mnist.x_test[:20].astype(np.float32) / 255
    answers = predictor.predict_prepared(images)
    raw = predictor.classifier.predict_proba(images)
    # Temperature scaling from its definition, softmax(log p / T), not the package's own function.
    calibrated = softmax(np.log(raw) / predictor.temperature, axis=1)
    assert predictor.temperature == predictor.classifier.temperature != 1.0
    for answer, expected in zip(answers, calibrated):
        assert answer.prepared is None
        assert answer.probabilities == pytest.approx(list(expected), abs=1e-6)
        assert sum(answer.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert answer.digit == int(np.argmax(expected))
        assert answer.confidence == max(answer.probabilities)
        assert answer.unsure == (answer.confidence < predictor.unsure_below)
    assert np.mean([a.digit for a in answers] == mnist.y_test[:20]) >= 0.95


def test_low_confidence_is_marked_unsure(mlp_run, mnist):
    strict = Predictor.from_path(mlp_run, unsure_below=1.01)
    assert all(a.unsure for a in strict.predict_prepared(mnist.x_test[:5] / 255.0))
    # An ambiguous image: two digits blended half and half.
    blend = (mnist.x_test[0] / 255.0 + mnist.x_test[1] / 255.0) / 2
    assert Predictor.from_path(mlp_run).predict_prepared(blend[None])[0].unsure


def test_predict_image_reads_a_photo_like_digit(predictor, mnist):
    answer = predictor.predict_image(_png(_on_paper(mnist.x_test[0])))
    assert answer.digit == 7 and not answer.unsure
    assert answer.prepared.shape == (28, 28) and answer.prepared.dtype == np.float32


def test_predict_image_says_no_digit_instead_of_guessing(predictor):
    with pytest.raises(NoDigitFound, match="no digit found"):
        predictor.predict_image(Image.new("L", (64, 64), 255))


def test_predict_images_answers_each_in_order_with_one_model_call(mlp_run, mnist):
    predictor = Predictor.from_path(mlp_run)
    calls = []
    real = predictor.classifier.predict_proba
    predictor.classifier.predict_proba = lambda images: calls.append(len(images)) or real(images)
    sources = [_png(_on_paper(mnist.x_test[0])), b"", mnist.x_test[1], b"GIF89a broken", mnist.x_test[2]]
    answers = predictor.predict_images(sources)
    assert calls == [3]
    assert [getattr(a, "digit", None) for a in answers] == [7, None, 2, None, 1]
    assert answers[1] == Failure("empty file (0 bytes), not an image")
    assert "\n" not in answers[3].error and answers[4].prepared.shape == (28, 28)


def test_predictor_is_safe_from_many_threads(predictor, mnist):
    sources = [_png(_on_paper(mnist.x_test[i % 8], size=60 + i)) for i in range(48)]
    expected = [predictor.predict_image(source).probabilities for source in sources]
    with ThreadPoolExecutor(8) as pool:
        singles = list(pool.map(lambda s: predictor.predict_image(s).probabilities, sources))
        batches = list(pool.map(lambda i: predictor.predict_images(sources[i:i + 6]), range(0, 48, 6)))
    assert singles == expected
    # A batch may differ from single images in the last bits of float arithmetic.
    assert np.allclose([a.probabilities for batch in batches for a in batch], expected, atol=1e-6)


# --- inputs ------------------------------------------------------------------------------------


def test_folders_are_walked_for_images_only(digits_folder):
    names = [Path(name).name for name, _ in collect_inputs([digits_folder])]
    assert names == ["blank.png", "digit-0.png", "digit-1.png", "digit-2.png", "digit-3.png",
                     "digit-4.png", "empty.png", "renamed.jpg", "digit-7.png"]


def test_missing_input_and_empty_folder_are_errors_of_their_own(tmp_path):
    (tmp_path / "empty").mkdir()
    found = dict(collect_inputs([tmp_path / "nowhere.png", tmp_path / "empty"]))
    assert "no such file" in str(found[str(tmp_path / "nowhere.png")])
    assert "no images" in str(found[str(tmp_path / "empty")])


def test_worker_processes_give_the_same_answers(predictor, mnist):
    inputs = [(f"digit-{i}", mnist.x_test[i]) for i in range(40)] + [("bad", b"")]
    alone = list(predict_inputs(predictor, inputs, chunk_size=8, workers=1))
    pooled = list(predict_inputs(predictor, inputs, chunk_size=8, workers=2))
    assert [name for name, _ in pooled] == [name for name, _ in inputs]
    assert [getattr(a, "probabilities", None) for _, a in pooled] == \
        [getattr(a, "probabilities", None) for _, a in alone]
    assert pooled[-1][1] == Failure("empty file (0 bytes), not an image")


def test_prepared_file_names_are_unique():
    used: set[str] = set()
    names = [prepared_png_name(n, used) for n in ["a/seven.jpg", "b/seven.png", "batch.npy[3]"]]
    assert names == ["seven.png", "seven-2.png", "batch-3.png"]


# --- the command ------------------------------------------------------------------------------


def _run(capsys, *argv):
    code = cli.main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_answers_one_line_per_input_and_exit_1_when_any_failed(capsys, mlp_run, digits_folder, mnist):
    code, out, err = _run(capsys, mlp_run, digits_folder, "--json")
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    by_name = {Path(line["file"]).name: line for line in lines}
    assert len(lines) == 9
    for index in GOOD:
        answer = by_name[f"digit-{index}.png"]
        assert set(answer) == {"file", "digit", "confidence", "probabilities", "unsure"}
        assert answer["digit"] == _expected(mnist, index)
        assert len(answer["probabilities"]) == 10
    assert set(by_name["empty.png"]) == {"file", "error"}
    assert "no digit found" in by_name["blank.png"]["error"]
    assert "not an image" in by_name["renamed.jpg"]["error"]


def test_text_answers_with_top_k_and_exit_0_when_all_read(capsys, mlp_run, digits_folder):
    files = [digits_folder / "digit-0.png", digits_folder / "more" / "digit-7.png"]
    code, out, err = _run(capsys, mlp_run, *files, "--top-k", "2")
    assert code == 0 and err.strip().endswith("2 inputs: 2 answered (0 unsure), 0 failed")
    first, second = out.splitlines()
    assert first.startswith(f"{files[0]}: 7  ") and "(top 2: 7 " in first
    assert second.startswith(f"{files[1]}: 9  ") and second.count("%") == 3


def test_save_prepared_writes_the_28x28_the_model_saw(capsys, mlp_run, digits_folder, tmp_path):
    out_dir = tmp_path / "prepared"
    code, _, _ = _run(capsys, mlp_run, digits_folder / "digit-0.png", digits_folder / "blank.png",
                      "--save-prepared", out_dir)
    assert code == 1
    assert [p.name for p in out_dir.iterdir()] == ["digit-0.png"]
    saved = Image.open(out_dir / "digit-0.png")
    assert saved.size == (28, 28) and saved.mode == "L"


def test_idx_and_npy_batches_answer_each_image(capsys, mlp_run, mnist, tmp_path):
    (tmp_path / "batch-idx3-ubyte").write_bytes(encode_idx(mnist.x_test[:5]))
    np.save(tmp_path / "batch.npy", mnist.x_test[5:9].reshape(4, 784))
    code, out, _ = _run(capsys, mlp_run, tmp_path / "batch-idx3-ubyte", tmp_path / "batch.npy", "--json")
    answers = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [a["file"].rsplit("/", 1)[-1] for a in answers[:2]] == ["batch-idx3-ubyte[0]", "batch-idx3-ubyte[1]"]
    assert np.mean([a["digit"] for a in answers] == mnist.y_test[:9]) >= 8 / 9


def test_a_pickled_npy_is_refused_without_unpickling(capsys, mlp_run, tmp_path, pickle_payload):
    objects, marker = pickle_payload  # shaped like a batch of 28x28 images
    np.save(tmp_path / "objects.npy", objects, allow_pickle=True)
    code, out, _ = _run(capsys, mlp_run, tmp_path / "objects.npy", "--json")
    assert code == 1 and "object values is not images" in json.loads(out)["error"]  # refused from its header
    assert not marker.exists(), "the .npy was unpickled"


@pytest.mark.parametrize("argv, message", [
    (["no-such-model", "x.png"], "does not exist"),
    (["{model}", "x.png", "--top-k", "0"], "--top-k must be between 1 and 10"),
    (["{model}", "x.png", "--unsure-below", "2"], "--unsure-below must be between 0 and 1"),
])
def test_bad_model_or_flags_exit_2_with_one_line(capsys, mlp_run, argv, message):
    code, out, err = _run(capsys, *[a.format(model=mlp_run) for a in argv])
    assert code == 2 and out == ""
    assert err.startswith("mnist-digits: error: ") and message in err and err.count("\n") == 1


def test_the_command_never_shows_a_traceback(mlp_run, digits_folder, tmp_path):
    """The installed command, end to end, on every kind of bad input at once."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "truncated.png").write_bytes(_png(Image.effect_noise((200, 200), 50))[:300])
    (bad / "bomb.gif").write_bytes(b"GIF89a\xff\xff\xff\xff\x00\x00\x00;")
    frames = [Image.new("L", (20, 20), 0), Image.new("L", (20, 20), 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    (bad / "animated.gif").write_bytes(buffer.getvalue())
    command = [sys.executable, "-m", "mnist_digits.cli", "predict", str(mlp_run),
               str(digits_folder), str(bad), str(tmp_path / "missing.png")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mnist-digits: error: ")]
    assert len(errors) == 7, result.stderr
    assert len(result.stdout.splitlines()) == len(GOOD)


# --- hostile inputs: each one error line, the others still answered ---------------------------

def npy_claiming(shape, dtype="|u1", body=b"\0" * 64) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + body


def test_hostile_files_are_one_error_line_each_and_never_block(mlp_run, mnist, tmp_path):
    folder = tmp_path / "scanned"
    folder.mkdir()
    (folder / "digit-7.png").write_bytes(_png(_on_paper(mnist.x_test[0])))
    os.mkfifo(folder / "digit.png")  # opening it would wait for a writer forever
    (folder / "zero.png").symlink_to("/dev/zero")  # reading it would never end
    (tmp_path / "huge.npy").write_bytes(npy_claiming((2**20, 1024, 1024)))  # 2^40 bytes, says the header
    os.mkfifo(tmp_path / "batch.npy")
    np.save(tmp_path / "good.npy", mnist.x_test[1:3])
    command = [sys.executable, "-m", "mnist_digits.cli", "predict", str(mlp_run), str(folder),
               str(tmp_path / "huge.npy"), str(tmp_path / "batch.npy"), str(tmp_path / "good.npy")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mnist-digits: error: ")]
    assert sorted(line.split(": ")[2].rsplit("/", 1)[-1] for line in errors) == [
        "batch.npy", "digit.png", "huge.npy", "zero.png"], result.stderr
    assert sum("not a regular file" in line for line in errors) == 3
    assert "1,099,511,627,776 bytes" in next(line for line in errors if "huge.npy" in line)
    answered = [line.split(": ")[0].rsplit("/", 1)[-1] for line in result.stdout.splitlines()]
    assert answered == ["digit-7.png", "good.npy[0]", "good.npy[1]"], result.stdout


@pytest.mark.parametrize("content, message", [
    (npy_claiming((3, 28, 28), body=b"\0" * 100), "truncated or damaged"),
    (npy_claiming((2, 28, 28), "<U1", body=b"\0" * 2 * 28 * 28 * 4), "not images"),
    (npy_claiming((2**62, 2**62)), "over the limit"),
    (b"\x93NUMPY\x01\x00\x06\x00\x00\x00\x00'''", "not a readable .npy"),  # found by fuzzing: TokenError
])
def test_npy_headers_are_checked_before_loading(tmp_path, content, message):
    (tmp_path / "batch.npy").write_bytes(content)
    ((name, error),) = collect_inputs([tmp_path / "batch.npy"])
    assert isinstance(error, InputImageError) and message in str(error)


def npy_like():
    """Mostly near-valid .npy files: a real header (any shape, numeric or not) and any data."""
    header = st.builds(
        lambda shape, dtype, fortran: npy_claiming(tuple(shape), dtype, body=b"").replace(
            b"'fortran_order': False", b"'fortran_order': " + str(fortran).encode()),
        st.lists(st.integers(0, 2**40), max_size=5), st.sampled_from(["|u1", "<f4", ">f8", "|b1", "<c8", "|O", "<U2", "|V3"]),
        st.booleans())
    return st.one_of(st.binary(max_size=300), st.builds(bytes.__add__, header, st.binary(max_size=3000)))


@given(content=npy_like(), name=st.sampled_from(["batch.npy", "batch-idx3-ubyte", "batch.idx.gz"]))
def test_fuzz_batch_readers_end_in_images_or_an_input_error(content, name):
    """Any bytes as a batch file: images or the project's InputImageError, never another
    exception (fuzz profile: see conftest.py)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
        for _, source in collect_inputs([path]):
            assert isinstance(source, (np.ndarray, InputImageError)), source
            if isinstance(source, np.ndarray):
                assert source.dtype.kind in "biuf" and source.ndim in (2, 3)


def test_a_progress_bar_runs_above_1000_inputs_on_a_terminal(capsys, mlp_run, mnist, tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for count, shown in ((1000, False), (1001, True)):
        (tmp_path / "batch-idx3-ubyte").write_bytes(encode_idx(mnist.x_test[:count]))
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        code = cli.main(["predict", str(mlp_run), str(tmp_path / "batch-idx3-ubyte"), "--json"])
        answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # no bar in them
        assert code == 0 and len(answers) == count
        assert (f"{count}/{count}" in terminal.getvalue()) == shown, terminal.getvalue()[-300:]
