"""`mnist-digits serve`: an HTTP API and a page to draw a digit on (see app.py).

    from mnist_digits.predict import Predictor
    from mnist_digits.serve import create_app, running, serve

    serve("runs/mlp-...")                          # blocks; what the command does
    with running(create_app(Predictor.from_path("runs/mlp-..."))) as url:
        ...                                        # a server in a background thread
    with_feedback(create_app(predictor), predictor, open_store("feedback.sqlite"))  # + /api/feedback
"""

from .app import MAX_BATCH, create_app
from .feedback_api import with_feedback
from .limits import MAX_BODY_BYTES
from .server import running, serve

__all__ = ["create_app", "with_feedback", "serve", "running", "MAX_BODY_BYTES", "MAX_BATCH"]
