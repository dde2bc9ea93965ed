"""Import TensorFlow without its C++ start-up lines on stderr.

TensorFlow prints oneDNN and absl notices while it loads, ignoring TF_CPP_MIN_LOG_LEVEL;
they drown a command's own output. stderr is silenced only for the import itself; a
failed import still raises, after stderr is back. After the import, C++ log lines are
kept to fatal ones (level 3): on a machine with CUDA libraries but no GPU, TensorFlow
logs "failed call to cuInit" as an error on first use. Set TF_CPP_MIN_LOG_LEVEL=0 to see
them all.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_stderr():
    """Silence what C++ code writes straight to file descriptor 2 (TensorFlow's start-up,
    the TFLite converter's statistics); Python exceptions still carry the errors."""
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some notebooks): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:  # loaded already: nothing to silence
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_stderr():
        import tensorflow  # noqa: F401
