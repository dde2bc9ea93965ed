"""The project's exception types: errors a user can cause and fix.

Each carries one line saying what is wrong and what to do, and the exit code the
command ends with. The command's entry point (cli.main) is the one place that turns
them into messages; anything else that escapes is a bug and keeps its traceback.
"""


class MnistDigitsError(Exception):
    """A problem the user can fix; `str(error)` is the one line shown to them."""

    exit_code = 2


class DataError(MnistDigitsError):
    """MNIST files missing, damaged, or not downloadable."""


class ModelFileError(MnistDigitsError):
    """A path that is not a usable model, run folder or export."""


class RunFolderError(MnistDigitsError):
    """A run folder that cannot be created or written."""


class RunInterruptedError(MnistDigitsError):
    """Ctrl-C while training a run that was to replace another: the old one stays."""

    exit_code = 130


class InputImageError(MnistDigitsError):
    """An image that cannot be read or holds no digit."""


class NoDigitFound(InputImageError):
    """A readable image with no digit in it (a blank canvas, no contrast)."""


class TooManyMarks(InputImageError):
    """A readable image with far more marks than a number has (a page of text)."""


class FeedbackStoreError(MnistDigitsError):
    """A feedback database that cannot be opened, migrated, read or written."""


class UsageError(MnistDigitsError):
    """Arguments that do not make sense together."""


def first_line(error: BaseException) -> str:
    """The first line of a library's exception message, to quote inside one of ours."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
