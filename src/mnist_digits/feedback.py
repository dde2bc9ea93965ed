"""The corrections store: drawings people labelled on the page, kept in a real database.

    store = open_store("feedback.sqlite")           # or "postgresql://user@host/db"
    store.add(drawing_png, prepared, label=7, predicted=1, model="mlp")
    store.summary("mlp")                            # counts per digit, the model's accuracy
    collected = store.collected()                   # every drawing as arrays
    export_idx(collected, "collected/")             # the four-file IDX layout + SHA256SUMS

SQLAlchemy Core over SQLite (the default: a file, WAL mode so several server workers can
write, synchronous=NORMAL) or PostgreSQL through psycopg 3 (several servers). Every value goes to the database
as a bound parameter, never inside SQL text. The schema has a version (table
`schema_version`); MIGRATIONS brings any older store up to date when it is opened.

The same drawing sent again (same bytes: SHA-256 of the PNG) is stored once; the repeat
only counts up that row's `duplicates`. 20% of the drawings, chosen by a hash of their
random id so the choice never moves, are held out: for measuring, never for training.
"""

from __future__ import annotations

import gzip
import hashlib
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from . import idx
from .errors import DataError, FeedbackStoreError, first_line
from .runs import write_bytes, write_text

# Percent of drawings held out from training, by id hash.
HELD_OUT_PERCENT = 20
# How long a SQLite writer waits for another one before giving up (ms).
SQLITE_BUSY_TIMEOUT_MS = 10_000
# The exported layout: MNIST's own file names, the held-out drawings as the t10k pair.
EXPORT_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CHECKSUM_FILE = "SHA256SUMS"
# Training on collected drawings: their share of the training split, and the most times
# one drawing is repeated to reach it.
EXTRA_SHARE = 0.05
MAX_REPEATS = 50
# Fine-tuning (pipeline.finetune_run): a few epochs at a tenth of the recipe's learning
# rate, from the run's weights.
FINETUNE_EPOCHS = 3
FINETUNE_LEARNING_RATE_FACTOR = 0.1
# Training on collected drawings may cost this many points of MNIST test accuracy, no more,
# before the report and the command say so.
MAX_MNIST_DROP_POINTS = 0.3

metadata = sa.MetaData()
schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))
drawings = sa.Table(
    "drawings", metadata,
    sa.Column("id", sa.String(32), primary_key=True),                  # random (uuid4 hex)
    sa.Column("content_sha256", sa.String(64), nullable=False, unique=True),  # of the PNG as sent
    sa.Column("drawing", sa.LargeBinary, nullable=False),              # the PNG as sent
    sa.Column("prepared", sa.LargeBinary, nullable=False),             # 28x28 uint8, MNIST-like
    sa.Column("label", sa.SmallInteger, nullable=False),               # what the person said
    sa.Column("predicted", sa.SmallInteger),                           # what the model answered
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(200), nullable=False),
    sa.Column("model_test_accuracy", sa.Float),                        # its MNIST test accuracy
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),  # UTC
    sa.Column("duplicates", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint("label BETWEEN 0 AND 9", name="label_is_a_digit"),
)


def _create_drawings(connection) -> None:
    drawings.create(connection)


def _index_drawings_by_day(connection) -> None:
    # Plain DDL: an sa.Index on the table object would also join step 1's CREATE TABLE.
    connection.execute(sa.text("CREATE INDEX drawings_created ON drawings (created)"))


# Step i brings a store from schema version i to i + 1. Append, never edit a released step.
MIGRATIONS = (_create_drawings, _index_drawings_by_day)
SCHEMA_VERSION = len(MIGRATIONS)


def database_url(given: str) -> sa.URL:
    """A store name as the user gives it -> SQLAlchemy URL: a file path means SQLite;
    postgresql:// means psycopg 3."""
    if "://" not in given:
        return sa.URL.create("sqlite", database=str(Path(given)))
    try:
        url = sa.make_url(given)
    except sa.exc.ArgumentError:
        raise FeedbackStoreError(f"{given!r} is not a database URL; give a file name "
                                 "(SQLite) or postgresql://user@host/database") from None
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if url.drivername == "sqlite":
        return url
    raise FeedbackStoreError(f"--feedback-db {url.drivername}://...: the store is SQLite "
                             "(a file name) or PostgreSQL (postgresql://...)")


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    engine = sa.create_engine(url)

    # SQLAlchemy's recipe: let SQLAlchemy, not the sqlite3 module, begin transactions, and
    # begin them IMMEDIATE so a writer waits (busy timeout) instead of failing halfway.
    @sa.event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        dbapi_connection.execute("PRAGMA journal_mode = WAL")
        # SQLite's advice for WAL: no fsync per commit, still never corrupt; a power cut may
        # lose the last corrections, a crashed server none.
        dbapi_connection.execute("PRAGMA synchronous = NORMAL")

    @sa.event.listens_for(engine, "begin")
    def on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@dataclass
class Collected:
    """Every stored drawing as arrays, oldest first."""

    ids: list[str]
    images: np.ndarray          # (n, 28, 28) uint8, white ink on black like MNIST
    labels: np.ndarray          # (n,) uint8
    predicted: np.ndarray       # (n,) int, -1 where the model's answer was not given
    models: list[str]
    model_test_accuracy: list[float | None]
    created: list[datetime]
    duplicates: np.ndarray      # (n,) how many times each was sent again

    def __len__(self) -> int:
        return len(self.ids)

    def held_out(self) -> np.ndarray:
        return held_out_mask(self.ids)


def held_out_mask(ids: list[str]) -> np.ndarray:
    """True for the HELD_OUT_PERCENT of ids held out from training: a hash of the id
    decides, so a drawing stays on its side however many are added."""
    return np.array([int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big") % 100
                     < HELD_OUT_PERCENT for i in ids], dtype=bool)


class FeedbackStore:
    """One database of labelled drawings. Safe to use from several threads and processes."""

    def __init__(self, engine: sa.Engine, name: str):
        self.engine = engine
        self.name = name  # for messages: the URL without its password

    def _failed(self, error: Exception, doing: str) -> FeedbackStoreError:
        return FeedbackStoreError(f"feedback store {self.name}: cannot {doing} "
                                  f"({first_line(getattr(error, 'orig', None) or error)})")

    def migrate(self) -> int:
        """Bring the schema up to SCHEMA_VERSION, and prove the store can be written.
        Returns the version it was at."""
        try:
            with self.engine.begin() as connection:
                if sa.inspect(connection).has_table("schema_version"):
                    version = connection.execute(sa.select(schema_version.c.version)).scalar_one()
                else:
                    schema_version.create(connection)
                    connection.execute(schema_version.insert().values(version=0))
                    version = 0
                if version > SCHEMA_VERSION:
                    raise FeedbackStoreError(
                        f"feedback store {self.name} has schema version {version}, newer than this "
                        f"mnist-digits knows ({SCHEMA_VERSION}); upgrade mnist-digits")
                for step in MIGRATIONS[version:]:
                    step(connection)
                # A write even when nothing needed migrating: a read-only store fails here.
                connection.execute(schema_version.update().values(version=SCHEMA_VERSION))
        except sa.exc.SQLAlchemyError as error:
            raise self._failed(error, "open and write it") from None
        return version

    def add(self, drawing: bytes, prepared: np.ndarray, label: int, predicted: int | None,
            model: str, model_version: str = "", model_test_accuracy: float | None = None
            ) -> tuple[str, bool]:
        """Store one labelled drawing. Returns (id, duplicate): a drawing already stored
        (same bytes) is not stored again; its row's `duplicates` counts the repeat."""
        if not 0 <= int(label) <= 9:
            raise FeedbackStoreError(f"label must be a digit 0-9 (got {label})")
        pixels = np.round(np.clip(np.asarray(prepared, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
        if pixels.shape != (28, 28):
            raise FeedbackStoreError(f"prepared image must be 28x28 (got {pixels.shape})")
        content = hashlib.sha256(drawing).hexdigest()
        row = {"id": uuid.uuid4().hex, "content_sha256": content, "drawing": drawing,
               "prepared": pixels.tobytes(), "label": int(label),
               "predicted": None if predicted is None else int(predicted),
               "model": model, "model_version": model_version,
               "model_test_accuracy": model_test_accuracy,
               "created": datetime.now(timezone.utc), "duplicates": 0}
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(drawings).values(row).on_conflict_do_nothing(
            index_elements=[drawings.c.content_sha256]).returning(drawings.c.id)
        try:
            with self.engine.begin() as connection:
                if connection.execute(insert).first() is not None:
                    return row["id"], False
                repeated = drawings.c.content_sha256 == content
                connection.execute(drawings.update().where(repeated)
                                   .values(duplicates=drawings.c.duplicates + 1))
                return connection.execute(sa.select(drawings.c.id).where(repeated)).scalar_one(), True
        except sa.exc.SQLAlchemyError as error:
            raise self._failed(error, "store the drawing") from None

    def summary(self, model: str | None = None) -> dict:
        """Counts per digit, repeats, and `model`'s accuracy on the drawings it answered."""
        per_label = sa.select(drawings.c.label, sa.func.count(), sa.func.sum(drawings.c.duplicates)
                              ).group_by(drawings.c.label)
        answered = sa.select(sa.func.count(), sa.func.sum(
            sa.case((drawings.c.predicted == drawings.c.label, 1), else_=0))
        ).where(drawings.c.predicted.is_not(None), drawings.c.model == model)
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(per_label).all()
                count, right = connection.execute(answered).one()
        except sa.exc.SQLAlchemyError as error:
            raise self._failed(error, "read it") from None
        per_digit = {str(digit): 0 for digit in range(10)}
        per_digit.update({str(label): number for label, number, _ in rows})
        return {"count": sum(number for _, number, _ in rows),
                "duplicates": int(sum(repeats or 0 for _, _, repeats in rows)),
                "per_digit": per_digit, "model": model, "answered": count,
                "accuracy": (right or 0) / count if count else None}

    def collected(self) -> Collected:
        """Every drawing, oldest first."""
        columns = (drawings.c.id, drawings.c.prepared, drawings.c.label, drawings.c.predicted,
                   drawings.c.model, drawings.c.model_test_accuracy, drawings.c.created,
                   drawings.c.duplicates)
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(sa.select(*columns).order_by(drawings.c.created,
                                                                       drawings.c.id)).all()
        except sa.exc.SQLAlchemyError as error:
            raise self._failed(error, "read it") from None
        images = np.frombuffer(b"".join(row.prepared for row in rows), dtype=np.uint8)
        return Collected(
            ids=[row.id for row in rows], images=images.reshape(-1, 28, 28),
            labels=np.array([row.label for row in rows], dtype=np.uint8),
            predicted=np.array([-1 if row.predicted is None else row.predicted for row in rows], dtype=int),
            models=[row.model for row in rows],
            model_test_accuracy=[row.model_test_accuracy for row in rows],
            created=[row.created for row in rows],
            duplicates=np.array([row.duplicates for row in rows], dtype=int))

    def close(self) -> None:
        self.engine.dispose()


def open_store(given: str) -> FeedbackStore:
    """Open (creating or migrating) the store named by a file path or URL. Raises
    FeedbackStoreError, naming it, if it cannot be opened or written."""
    url = database_url(given)
    name = url.render_as_string(hide_password=True)
    try:
        engine = _sqlite_engine(url) if url.drivername == "sqlite" else sa.create_engine(url)
    except (ImportError, sa.exc.SQLAlchemyError) as error:
        raise FeedbackStoreError(f"feedback store {name}: cannot open it ({first_line(error)})") from None
    store = FeedbackStore(engine, name)
    try:
        store.migrate()
    except BaseException:
        engine.dispose()
        raise
    return store


# --- what was collected, in numbers -----------------------------------------------------


def accuracy_of(predicted: np.ndarray, labels: np.ndarray) -> float | None:
    return float(np.mean(predicted == labels)) if len(labels) else None


def describe(collected: Collected) -> dict:
    """Per digit, per model (its stored answers' accuracy next to its MNIST test accuracy),
    per day (UTC)."""
    answered = collected.predicted >= 0
    per_model = {}
    for model in sorted(set(collected.models)):
        mine = np.array([m == model for m in collected.models]) & answered
        test = next((a for m, a in zip(collected.models, collected.model_test_accuracy)
                     if m == model and a is not None), None)
        per_model[model] = {"answered": int(mine.sum()),
                            "accuracy": accuracy_of(collected.predicted[mine], collected.labels[mine]),
                            "mnist_test_accuracy": test}
    days = Counter(created.astimezone(timezone.utc).date().isoformat() if created.tzinfo
                   else created.date().isoformat() for created in collected.created)
    return {"count": len(collected), "duplicates": int(collected.duplicates.sum()),
            "held_out": int(collected.held_out().sum()),
            "per_digit": {str(d): int((collected.labels == d).sum()) for d in range(10)},
            "per_model": per_model, "per_day": dict(sorted(days.items()))}


def confusion_counts(labels: np.ndarray, predicted: np.ndarray) -> list[list[int]]:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, predicted, labels=list(range(10))).tolist()


def assess(collected: Collected, classifier=None) -> dict:
    """describe(), plus the answers behind a confusion matrix: those of `classifier` (a
    loaded model, run on every collected drawing, and on the held-out ones apart) next to
    its MNIST test accuracy -- or, without one, the stored answers of the model most
    drawings were answered by."""
    from .data import to_model_input

    result = describe(collected)
    if classifier is not None:
        predicted = classifier.predict_proba(to_model_input(collected.images)).argmax(axis=1)
        held_out = collected.held_out()
        result["assessed"] = {
            "model": classifier.name, "source": "run on the collected drawings",
            "accuracy": accuracy_of(predicted, collected.labels),
            "held_out_accuracy": accuracy_of(predicted[held_out], collected.labels[held_out]),
            "mnist_test_accuracy": classifier.info.get("test", {}).get("accuracy"),
            "confusion_matrix": confusion_counts(collected.labels, predicted)}
    elif result["per_model"]:
        model = max(result["per_model"], key=lambda name: result["per_model"][name]["answered"])
        mine = np.array([m == model for m in collected.models]) & (collected.predicted >= 0)
        result["assessed"] = {
            "model": model, "source": "its answers on the page", **result["per_model"][model],
            "confusion_matrix": confusion_counts(collected.labels[mine], collected.predicted[mine])}
    return result


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def assessment_lines(result: dict) -> list[str]:
    """What `mnist-digits feedback` prints."""
    lines = [f"{result['count']:,} drawing{'' if result['count'] == 1 else 's'} ({result['duplicates']:,} repeats not stored again; "
             f"{result['held_out']:,} held out from training)",
             "  per digit 0-9: " + " ".join(str(n) for n in result["per_digit"].values()),
             "  per day: " + (", ".join(f"{day} {n}" for day, n in result["per_day"].items()) or "-")]
    for model, row in result["per_model"].items():
        lines.append(f"  model {model}: right on {_percent(row['accuracy'])} of the {row['answered']} "
                     f"it answered (MNIST test: {_percent(row['mnist_test_accuracy'])})")
    assessed = result.get("assessed")
    if assessed and "held_out_accuracy" in assessed:
        lines.append(f"{assessed['model']} {assessed['source']}: {_percent(assessed['accuracy'])} "
                     f"(held-out {_percent(assessed['held_out_accuracy'])}); "
                     f"MNIST test {_percent(assessed['mnist_test_accuracy'])}")
    return lines


# --- the collected set as files, and back ------------------------------------------------


def export_idx(collected: Collected, folder: str | Path) -> dict[str, str]:
    """Write the collected drawings as MNIST's four gzipped IDX files (the held-out ones as
    the t10k pair) and SHA256SUMS. Returns {file name: sha256}."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FeedbackStoreError(f"--export {folder} exists and is not a folder")
    held_out = collected.held_out()
    arrays = {"train_images": collected.images[~held_out], "train_labels": collected.labels[~held_out],
              "test_images": collected.images[held_out], "test_labels": collected.labels[held_out]}
    checksums = {}
    for key, name in EXPORT_FILES.items():
        # mtime=0: the same drawings give the same bytes, and so the same checksums.
        content = gzip.compress(idx.encode_idx(arrays[key]), mtime=0)
        write_bytes(folder / name, content)
        checksums[name] = hashlib.sha256(content).hexdigest()
    write_text(folder / CHECKSUM_FILE, "".join(f"{sha}  {name}\n" for name, sha in checksums.items()))
    return checksums


@dataclass
class ExtraData:
    """Collected drawings for training: a training part and a held-out part."""

    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_held_out: np.ndarray
    y_held_out: np.ndarray


def training_repeats(mnist_count: int, extra_count: int) -> int:
    """How many times each collected drawing joins the training split: enough that they make
    up about EXTRA_SHARE of it (a few hundred drawings would vanish among 55,000 digits), at
    most MAX_REPEATS (a handful of drawings must not be learnt by heart)."""
    if not extra_count:
        return 0
    return int(np.clip(round(EXTRA_SHARE * mnist_count / extra_count), 1, MAX_REPEATS))


def join_training(data, extra: ExtraData):
    """MNIST (data.Mnist) with the collected training drawings added, repeated. Validation
    and test stay MNIST's. Returns (joined, repeats)."""
    from dataclasses import replace

    repeats = training_repeats(len(data.x_train), len(extra.x_train))
    joined = replace(data, x_train=np.concatenate([data.x_train, np.repeat(extra.x_train, repeats, axis=0)]),
                     y_train=np.concatenate([data.y_train, np.repeat(extra.y_train, repeats)]))
    return joined, repeats


def read_export(folder: Path) -> ExtraData:
    """An exported folder, its files checked against its SHA256SUMS."""
    sums = folder / CHECKSUM_FILE
    if not sums.is_file():
        raise DataError(f"{folder}: no {CHECKSUM_FILE}; pass a folder written by "
                        "mnist-digits feedback --export, or the feedback database")
    for line in sums.read_text().splitlines():
        expected, name = line.split(maxsplit=1)
        path = folder / name.strip()
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise DataError(f"{path}: missing or does not match {CHECKSUM_FILE}; export it again")
    arrays = {key: (idx.read_images if key.endswith("images") else idx.read_labels)(folder / name)
              for key, name in EXPORT_FILES.items()}
    return ExtraData(str(folder), arrays["train_images"], arrays["train_labels"],
                     arrays["test_images"], arrays["test_labels"])


def load_extra(source: str) -> ExtraData:
    """--extra-data SOURCE: a folder written by --export, or a feedback store."""
    if Path(source).is_dir():
        return read_export(Path(source))
    if "://" not in source and not Path(source).is_file():
        raise DataError(f"--extra-data {source}: no such folder or database file")
    store = open_store(source)
    try:
        collected = store.collected()
    finally:
        store.close()
    held_out = collected.held_out()
    return ExtraData(store.name, collected.images[~held_out], collected.labels[~held_out],
                     collected.images[held_out], collected.labels[held_out])
