"""Model + a person's images -> answers: the digit, a calibrated confidence, the ten
probabilities, and whether the answer is unsure. Shared by `mnist-digits predict` and
the HTTP server, so every method is safe to call from several threads at once.

    predictor = Predictor.from_path("runs/mlp-...")
    predictor.predict_image("my_seven.jpg")   # Answer(digit=7, confidence=0.98, ...)
"""

from __future__ import annotations

import math
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from tokenize import TokenError

import numpy as np

from .decode import IMAGE_SUFFIXES
from .errors import DataError, InputImageError, first_line
from .evaluation import UNSURE_BELOW, apply_temperature
from .preprocess import prepare, prepare_many

# Worker processes take about a second to start (Python, NumPy, SciPy, Pillow): worth
# it from a few thousand images on.
WORKERS_FROM = 2000
# The most data one IDX or .npy batch file may hold (a million 28x28 uint8 images take 784
# MB); a header claiming more is refused before anything is read.
MAX_BATCH_BYTES = 2**30


def usable_cpus() -> int:
    """The cores this process may run on: its CPU affinity (what a container or
    `taskset` allows), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Answer:
    """What the model read in one image."""

    digit: int
    confidence: float  # calibrated probability of `digit`
    probabilities: list[float]  # calibrated, one per digit 0-9
    unsure: bool  # confidence below the predictor's threshold
    # The 28x28 the model saw, when the answer came from an image.
    prepared: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Failure:
    """An input that got no answer, and why, in one line."""

    error: str


class Predictor:
    """A classifier with its calibration, answering for prepared or raw images."""

    def __init__(self, classifier, unsure_below: float = UNSURE_BELOW):
        self.classifier = classifier
        self.temperature = float(classifier.temperature)
        self.unsure_below = float(unsure_below)
        # The classifier's traced function is not promised to be re-entrant: one call at a time.
        self._model_lock = threading.Lock()

    @classmethod
    def from_path(cls, path, engine: str = "tensorflow", **kwargs) -> "Predictor":
        from .litert import load_classifier  # not at start-up: it may load TensorFlow

        return cls(load_classifier(path, engine), **kwargs)

    def probabilities(self, images) -> np.ndarray:
        """Calibrated probabilities (n, 10) for prepared images (n, 28, 28) in [0, 1]."""
        images = np.asarray(images, dtype=np.float32).reshape(-1, 28, 28)
        if len(images) == 0:
            return np.zeros((0, 10), dtype=np.float32)
        with self._model_lock:
            raw = np.asarray(self.classifier.predict_proba(images), dtype=np.float64)
        return apply_temperature(raw, self.temperature)

    def _answer(self, probabilities: np.ndarray, prepared: np.ndarray | None = None) -> Answer:
        digit = int(np.argmax(probabilities))
        confidence = float(probabilities[digit])
        return Answer(digit, confidence, [float(p) for p in probabilities],
                      confidence < self.unsure_below, prepared)

    def predict_prepared(self, images) -> list[Answer]:
        """Answers for images already prepared (n, 28, 28), one model call."""
        return [self._answer(row) for row in self.probabilities(images)]

    def predict_image(self, source) -> Answer:
        """The answer for one image (path, bytes, PIL image or array), with `prepared`.
        Raises InputImageError for bad input (NoDigitFound for an image with no digit)."""
        prepared = prepare(source)
        return self._answer(self.probabilities(prepared[None])[0], prepared)

    def predict_images(self, sources: Iterable) -> list[Answer | Failure]:
        """An Answer (with `prepared`) or a Failure for each image, in order; the good
        ones go through the model in one call."""
        return self.answer_prepared(prepare_many(sources))

    def answer_prepared(self, results: list[tuple[np.ndarray | None, str | None]]) -> list[Answer | Failure]:
        """Answers for `prepare_many` results: one model call for all the good ones."""
        good = [image for image, _ in results if image is not None]
        calibrated = iter(self.probabilities(np.stack(good)) if good else [])
        return [Failure(error) if image is None else self._answer(next(calibrated), image)
                for image, error in results]


def load_predictor(path, engine: str = "litert", **kwargs) -> tuple[Predictor, str]:
    """(the predictor, the engine it runs on): a Keras model that LiteRT cannot run is run
    through TensorFlow, with a note on stderr saying so."""
    from .litert import ConversionError

    try:
        return Predictor.from_path(path, engine, **kwargs), engine
    except ConversionError as error:
        print(f"Note: {error}; running it through TensorFlow instead.", file=sys.stderr, flush=True)
        return Predictor.from_path(path, "tensorflow", **kwargs), "tensorflow"


# --- inputs: files, folders and batches -> (name, source) pairs ----------------------


def is_batch_file(path: Path) -> bool:
    """A .npy array or an IDX file (t10k-images-idx3-ubyte, digits.idx, ... .gz)."""
    name = path.name.lower()
    if name.endswith(IMAGE_SUFFIXES):
        return False
    return name.endswith((".npy", "ubyte", "ubyte.gz", ".idx", ".idx.gz")) or "idx" in name


def _read_npy(path: Path) -> np.ndarray:
    """A .npy array, its header checked against the file's size before any data is read:
    a header claiming terabytes costs nothing, pickled objects are refused."""
    try:
        with open(path, "rb") as handle:
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,  # 3.0 is for text field
                           (2, 0): np.lib.format.read_array_header_2_0}  # names: never images
            version = np.lib.format.read_magic(handle)
            if version not in read_header:
                raise InputImageError(f".npy format version {version[0]}.{version[1]} is not supported")
            shape, _, dtype = read_header[version](handle)
            data_bytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
            if dtype.kind not in "biuf":
                raise InputImageError(f".npy array of {dtype} values is not images (numbers expected)")
            if data_bytes > MAX_BATCH_BYTES:
                raise InputImageError(f".npy header says {data_bytes:,} bytes of data, over the limit "
                                      f"of {MAX_BATCH_BYTES:,}; split the batch")
            if os.fstat(handle.fileno()).st_size - handle.tell() != data_bytes:
                raise InputImageError(f".npy header says {data_bytes:,} bytes of data but the file "
                                      "holds another amount; it is truncated or damaged")
            handle.seek(0)  # read_array reads the header again
            return np.lib.format.read_array(handle, allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError, TokenError) as error:  # numpy's words for a bad header
        raise InputImageError(f"not a readable .npy array ({first_line(error)})") from None


def _read_batch(path: Path) -> np.ndarray:
    """An IDX or .npy batch -> images (n, h, w[, c]); 784-long rows become 28x28."""
    if path.name.lower().endswith(".npy"):
        array = _read_npy(path)
    else:
        from .idx import read_idx

        try:
            array = read_idx(path, max_bytes=MAX_BATCH_BYTES)
        except DataError as error:
            raise InputImageError(str(error).replace(f"{path}: ", "")) from None
    if array.ndim == 2 and array.shape[1] == 784:
        array = array.reshape(-1, 28, 28)
    elif array.ndim == 2:
        array = array[None]
    if array.ndim not in (3, 4) or array.size == 0:
        raise InputImageError(f"batch of shape {array.shape} is not images "
                              "(expected count x height x width, or count x 784)")
    return array


def _not_a_regular_file(path: Path) -> InputImageError | None:
    """The error for a path that is no regular file (checked by stat, following links,
    before anything opens it): a FIFO would block, a link to /dev/zero never end."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return InputImageError("no such file or folder")
    except OSError as error:
        return InputImageError(f"cannot read ({error.strerror})")
    if not stat.S_ISREG(mode):
        return InputImageError("not a regular file (a FIFO, device or socket); pass image files")
    return None


def collect_inputs(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[str, object]]:
    """(name, source) for each image in `paths`: files, folders walked for images
    (sorted, hidden files skipped), and each image of an IDX/.npy batch. A source is a
    path, an array, or an InputImageError for an input that cannot be used at all --
    a missing one, or anything but a regular file or folder."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = False
            for root, folders, files in os.walk(path):
                folders[:] = sorted(f for f in folders if not f.startswith("."))
                for file in sorted(files):
                    if not file.startswith(".") and file.lower().endswith(IMAGE_SUFFIXES):
                        found = True
                        image = Path(root) / file
                        yield str(image), _not_a_regular_file(image) or image
            if not found:
                yield str(path), InputImageError(
                    f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif problem := _not_a_regular_file(path):
            yield str(path), problem
        elif is_batch_file(path):
            try:
                batch = _read_batch(path)
            except InputImageError as error:
                yield str(path), error
                continue
            for index in range(len(batch)):
                yield f"{path}[{index}]", batch[index]
        else:
            yield str(path), path


def _worker_context():
    """Fresh worker processes: never a fork of this one (TensorFlow's threads do not
    survive a fork). A fork server imports the preparation code once and forks the
    workers from that clean process; where there is none, each worker is spawned."""
    if "forkserver" in get_all_start_methods():
        context = get_context("forkserver")
        context.set_forkserver_preload(["mnist_digits.preprocess"])
        return context
    return get_context("spawn")


def predict_inputs(predictor: Predictor | Callable[[], Predictor], inputs: Iterable[tuple[str, object]],
                   chunk_size: int = 256, workers: int | None = None) -> Iterator[tuple[str, Answer | Failure]]:
    """(name, answer) for each input, in order, a chunk at a time (one model call per
    chunk), so a big folder streams instead of waiting for the end.

    Preparing images is most of the work: it runs in `workers` processes (default: one
    per CPU from WORKERS_FROM inputs on; below that, starting them costs more than
    they save), the model in this one. `predictor` may be a function that loads one:
    it is called once the workers are busy, so loading TensorFlow and the model (seconds)
    overlaps with preparing the first images.
    """
    inputs = list(inputs)
    chunks = [inputs[start:start + chunk_size] for start in range(0, len(inputs), chunk_size)]
    if workers is None:
        workers = usable_cpus() if len(inputs) >= WORKERS_FROM else 1
    usable = [[source for _, source in chunk if not isinstance(source, InputImageError)]
              for chunk in chunks]
    if workers > 1 and len(chunks) > 1:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=_worker_context())
        prepared_chunks = pool.map(prepare_many, usable)
    else:
        pool = None
        prepared_chunks = map(prepare_many, usable)
    try:
        if not isinstance(predictor, Predictor):
            predictor = predictor()
        for chunk, results in zip(chunks, prepared_chunks):
            answers = iter(predictor.answer_prepared(results))
            for name, source in chunk:
                if isinstance(source, InputImageError):
                    yield name, Failure(str(source))
                else:
                    yield name, next(answers)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def prepared_png_name(name: str, used: set[str]) -> str:
    """A file name for an input's prepared image: its stem (batch items get their index),
    made unique among `used` (which it updates)."""
    stem = Path(name).name
    if stem.endswith("]") and "[" in stem:  # "batch.npy[17]" -> "batch-17"
        base, index = stem[:-1].rsplit("[", 1)
        stem = f"{Path(base).stem}-{index}"
    else:
        stem = Path(stem).stem
    candidate, number = f"{stem}.png", 2
    while candidate in used:
        candidate, number = f"{stem}-{number}.png", number + 1
    used.add(candidate)
    return candidate


# --- answers as the command prints them -------------------------------------------------


def answer_record(name: str, answer: Answer | Failure) -> dict:
    """The JSON object for one input: file, digit, confidence, probabilities, unsure --
    or file, error."""
    if isinstance(answer, Failure):
        return {"file": name, "error": answer.error}
    return {"file": name, "digit": answer.digit, "confidence": round(answer.confidence, 6),
            "probabilities": [round(p, 6) for p in answer.probabilities],
            "unsure": answer.unsure}


def answer_line(name: str, answer: Answer, top_k: int) -> str:
    """One line for a person: `seven.jpg: 7  98.4%  (top 3: 7 98.4%, 1 1.0%, 2 0.3%)`."""
    probabilities = answer.probabilities
    ranked = sorted(range(10), key=lambda digit: -probabilities[digit])[:top_k]
    top = ", ".join(f"{digit} {probabilities[digit]:.1%}" for digit in ranked)
    flag = "  unsure" if answer.unsure else ""
    return f"{name}: {answer.digit}  {answer.confidence:.1%}  (top {top_k}: {top}){flag}"
