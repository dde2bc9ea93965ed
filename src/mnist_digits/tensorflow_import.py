"""Import TensorFlow without its C++ start-up lines on stderr.

TensorFlow prints oneDNN and absl notices while it loads, ignoring TF_CPP_MIN_LOG_LEVEL;
they drown a command's own output. stderr is silenced only for the import itself; a
failed import still raises, after stderr is back.
"""

import os


def import_tensorflow_quietly() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
