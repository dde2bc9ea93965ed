"""The model table: every registered model trained with its default recipe, beside two
baselines measured in the same run -- the seed network (`mlp`) and the Keras example CNN
(keras-io examples/vision/mnist_convnet.py: Conv32-3x3, MaxPool, Conv64-3x3, MaxPool,
Flatten, Dropout 0.5, Dense 10; Adam, batch 128, 15 epochs, validation_split 0.1).

For each: parameters, forward FLOPs per image (2 per multiply-add, conv and dense layers),
epochs, training time (model.fit only, validation included: not the whole `train` command,
which also loads data, evaluates 70,000 images and draws figures), test accuracy (mean +-
sd over seeds), ratios to the Keras example per seed (mean +- sd), inference images/s
(batches of 1024, as evaluate/predict run). With two or more seeds of a model, the row
"<model> x k" is the ensemble of those k seed models (averaged probabilities), and
"+ TTA" the same averaged over test-time views (the image rotated 6 degrees each way and
scaled 7% down and up, ensemble.TTA_VIEWS) -- no extra training.

    .venv/bin/python benchmarks/model_table.py                       # everything, 1 seed
    .venv/bin/python benchmarks/model_table.py --models cnn --seeds 5  # cnn, its 5-ensemble
    .venv/bin/python benchmarks/model_table.py --quick               # does it work? (~2 min)

Run it on a quiet machine: other processes make the times meaningless. The table is
printed as Markdown with the date and machine, ready for the README.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import date

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

KERAS_EXAMPLE = "keras-example"


def keras_example_model():
    """keras-io mnist_convnet.py, with a Reshape in front so it takes (n, 28, 28) like ours."""
    import keras

    return keras.Sequential([
        keras.Input(shape=(28, 28), name="image"),
        keras.layers.Reshape((28, 28, 1)),
        keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ], name="keras_example")


def train_keras_example(data, seed: int, epochs: int | None):
    """The example's own recipe: all 60,000 training images, 10% held out by Keras."""
    import keras

    from mnist_digits.data import to_model_input
    from mnist_digits.training import seed_everything

    seed_everything(seed)
    model = keras_example_model()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"],
                  jit_compile=False)
    x = to_model_input(np.concatenate([data.x_train, data.x_val]))
    y = np.concatenate([data.y_train, data.y_val])
    epochs = epochs or 15
    started = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=epochs, validation_split=0.1, verbose=0)
    return model, time.perf_counter() - started, epochs


def train_registered(name: str, data, seed: int, epochs: int | None):
    from mnist_digits.training import train

    result = train(name, data, epochs=epochs, seed=seed, verbose=0)
    return result.model, result.seconds, result.recipe.epochs


def forward_flops(model) -> int:
    """Multiply-adds x 2 of the conv and dense layers for one image (nested models too)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
            total += 2 * height * width * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(np.prod(layer.kernel.shape))
    return total


def images_per_second(classifier, images: np.ndarray, repeats: int = 3) -> float:
    classifier.predict_proba(images[:1024])  # trace once
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        classifier.predict_proba(images)
        best = min(best, time.perf_counter() - started)
    return len(images) / best


@dataclass
class Row:
    name: str
    parameters: int = 0
    flops: int = 0
    epochs: int = 0
    seconds: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    throughput: float = 0.0
    note: str = ""

    def accuracy_text(self) -> str:
        mean = statistics.fmean(self.accuracies)
        if len(self.accuracies) > 1:
            return f"{mean:.2%} ± {statistics.stdev(self.accuracies):.2%} (n={len(self.accuracies)})"
        return f"{mean:.2%}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores visible, load average at start {load}"


def ratio_text(values: list[float], baseline: list[float]) -> str:
    """The ratio to the baseline: per seed (the two trained back to back with the same
    seed, so they share the machine's state) as mean ± sd when both have every seed;
    else the ratio of the means (an ensemble row against the baseline's mean)."""
    if len(values) == len(baseline) > 1:
        ratios = [value / base for value, base in zip(values, baseline)]
        return f"{statistics.fmean(ratios):.2f}x ± {statistics.stdev(ratios):.2f}"
    return f"{statistics.fmean(values) / statistics.fmean(baseline):.2f}x"


def markdown(rows: list[Row], baseline: Row | None, header: str) -> str:
    lines = [header, "",
             "| model | parameters | MFLOPs/image | epochs | fit time | test accuracy | "
             "test errors vs Keras example | fit time vs Keras example | inference images/s |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for row in rows:
        seconds = statistics.fmean(row.seconds) if row.seconds else 0.0
        if baseline:
            base_errors = [1 - a for a in baseline.accuracies]
            error_ratio = (ratio_text([1 - a for a in row.accuracies], base_errors)
                           if min(base_errors) > 0 else "-")
            time_ratio = ratio_text(row.seconds, baseline.seconds) if row.seconds else "-"
        else:
            error_ratio = time_ratio = "-"
        time_text = f"{seconds:.0f} s" if row.seconds else row.note or "-"
        lines.append(f"| {row.name} | {row.parameters:,} | {row.flops / 1e6:.2f} | {row.epochs or '-'} | "
                     f"{time_text} | {row.accuracy_text()} | {error_ratio} | {time_ratio} | "
                     f"{row.throughput:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    from mnist_digits.models import MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[KERAS_EXAMPLE, *MODELS],
                        help=f"rows to measure (default: {KERAS_EXAMPLE} and every registered model)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per model (default 1)")
    parser.add_argument("--epochs", type=int, help="override every recipe's epochs")
    parser.add_argument("--no-tta", action="store_true", help="skip the test-time augmentation rows")
    parser.add_argument("--quick", action="store_true",
                        help="10,000 training images and 1 epoch: checks the script, not the models")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args()

    from mnist_digits.data import load_mnist, to_model_input
    from mnist_digits.ensemble import combine
    from mnist_digits.classifiers import KerasClassifier

    header = f"Measured {date.today().isoformat()} on {machine()}"
    data = load_mnist()
    if args.quick:
        data = data.subset(train=10_000, test=10_000)
        args.epochs = args.epochs or 1
        header += " -- QUICK RUN (10,000 training images, 1 epoch): not the models' real accuracy"
    test_images = to_model_input(data.x_test)
    rows: list[Row] = []
    # Seed-major order: each seed's models train back to back, so the per-seed ratios to the
    # baseline compare runs made in the same state of the machine.
    trained = {name: [] for name in args.models}
    rows_by_name = {name: Row(name) for name in args.models}
    for seed in range(args.seeds):
        for name in args.models:
            row = rows_by_name[name]
            if name == KERAS_EXAMPLE:
                model, seconds, epochs = train_keras_example(data, seed, args.epochs)
            else:
                model, seconds, epochs = train_registered(name, data, seed, args.epochs)
            classifier = KerasClassifier(model, name)
            accuracy = float(np.mean(classifier.predict_proba(test_images).argmax(1) == data.y_test))
            row.seconds.append(seconds)
            row.accuracies.append(accuracy)
            row.parameters, row.flops, row.epochs = model.count_params(), forward_flops(model), epochs
            trained[name].append(model)
            print(f"{name} seed {seed}: {accuracy:.2%} in {seconds:.0f} s", flush=True)
    for name in args.models:
        row, models = rows_by_name[name], trained[name]
        row.throughput = images_per_second(KerasClassifier(models[-1], name), test_images)
        rows.append(row)
        if len(models) > 1:
            for tta in (False, True) if not args.no_tta else (False,):
                ensemble = combine(models, test_time_augmentation=tta)
                views = 5 if tta else 1
                label = f"{name} x {len(models)}" + (" + TTA" if tta else "")
                classifier = KerasClassifier(ensemble, label)
                accuracy = float(np.mean(classifier.predict_proba(test_images).argmax(1) == data.y_test))
                rows.append(Row(label, ensemble.count_params(), row.flops * len(models) * views,
                                row.epochs, [sum(row.seconds)], [accuracy],
                                images_per_second(classifier, test_images)))
                print(f"{label}: {accuracy:.2%}", flush=True)

    baseline = next((r for r in rows if r.name == KERAS_EXAMPLE), None)
    table = markdown(rows, baseline, header)
    print()
    print(table)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()
