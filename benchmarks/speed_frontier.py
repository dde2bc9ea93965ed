"""The time-to-accuracy frontier: every registered model and two baselines, each trained as a
whole process (start to exit: import, data, fit, evaluation, figures, report), N seeds,
alternating in one run.

Baselines, as whole processes too (their code is reused from the other benchmarks):
    quickstart      the TensorFlow beginner quickstart (benchmarks/mlp_vs_quickstart.py):
                    784-128-10, Adam, batch 32, 5 epochs, then model.evaluate
    keras-example   the Keras example CNN (benchmarks/model_table.py): 15 epochs, batch 128
Ours: `mnist-digits train --model M --seed S --out TMP --quiet`, test accuracy from its
metrics.json, and where its seconds went from config.json's "timings".

Prints a Markdown table (seconds and test accuracy, mean +- sd over seeds; the ratio of
each seed's seconds to the quickstart's seconds for the same seed, mean +- sd) and draws
docs/images/speed-frontier.png: test error (log) against whole-process seconds (log).

    .venv/bin/python benchmarks/speed_frontier.py                       # everything, 3 seeds
    .venv/bin/python benchmarks/speed_frontier.py --models quickstart mlp cnn-fast
    .venv/bin/python benchmarks/speed_frontier.py --quick               # does it work? (~3 min)
    .venv/bin/python benchmarks/speed_frontier.py --replot results.json # table and figure again

Each trial's result is saved as it comes (--save, default speed-frontier.json in the current
folder), so an interrupted run keeps what it measured.

Times are only comparable within one run: the trials alternate so that a busy machine
slows every model alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

QUICKSTART, KERAS_EXAMPLE = "quickstart", "keras-example"
BASELINES = (QUICKSTART, KERAS_EXAMPLE)
FIGURE = Path(__file__).resolve().parent.parent / "docs" / "images" / "speed-frontier.png"
TRIAL_TIMEOUT = 3600


def baseline_trial(name: str, seed: int, epochs: int | None) -> dict:
    """Run in the child process: one baseline, import to evaluation; prints its accuracy."""
    from mnist_digits.tensorflow_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    if name == QUICKSTART:
        from mlp_vs_quickstart import quickstart

        return {"accuracy": quickstart(seed)["accuracy"]}
    import numpy as np
    from model_table import train_keras_example

    from mnist_digits.data import load_mnist, to_model_input
    from mnist_digits.classifiers import KerasClassifier

    data = load_mnist()
    model, _, _ = train_keras_example(data, seed, epochs)
    probabilities = KerasClassifier(model, name).predict_proba(to_model_input(data.x_test))
    return {"accuracy": float(np.mean(probabilities.argmax(axis=1) == data.y_test))}


def trial(name: str, seed: int, epochs: int | None, folder: Path) -> dict:
    """One whole process; returns its wall-clock seconds and test accuracy."""
    if name in BASELINES:
        command = [sys.executable, __file__, "--one", name, "--seed", str(seed)]
    else:
        out = folder / f"{name}-{seed}"
        command = [sys.executable, "-m", "mnist_digits.cli", "train", "--model", name, "--seed", str(seed),
                   "--out", str(out), "--force", "--quiet"]
    if epochs:
        command += ["--epochs", str(epochs)]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=TRIAL_TIMEOUT)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"{name} seed {seed} failed:\n{finished.stderr[-2000:]}")
    if name in BASELINES:
        return {"seconds": seconds, **json.loads(finished.stdout.strip().splitlines()[-1])}
    metrics = json.loads((out / "metrics.json").read_text())
    timings = json.loads((out / "config.json").read_text()).get("timings", {})
    return {"seconds": seconds, "accuracy": metrics["test"]["accuracy"], "timings": timings}


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(results: dict[str, list[dict]], header: str) -> str:
    quickstart = results.get(QUICKSTART)
    lines = [header, "",
             "| model | seeds | whole process, s | test accuracy | seconds vs quickstart (paired by seed) |",
             "|---|---:|---:|---:|---:|"]
    for name, trials in results.items():
        seconds, seconds_sd = mean_sd([t["seconds"] for t in trials])
        accuracy, accuracy_sd = mean_sd([t["accuracy"] for t in trials])
        ratio = "-"
        if quickstart:
            ratios = [t["seconds"] / q["seconds"] for t, q in zip(trials, quickstart)]
            ratio_mean, ratio_sd = mean_sd(ratios)
            ratio = f"{ratio_mean:.2f} ± {ratio_sd:.2f}"
        label = f"{name} (baseline)" if name in BASELINES else f"`{name}`"
        lines.append(f"| {label} | {len(trials)} | {seconds:.1f} ± {seconds_sd:.1f} | "
                     f"{accuracy:.2%} ± {100 * accuracy_sd:.2f} | {ratio} |")
    return "\n".join(lines)


def phases(results: dict[str, list[dict]]) -> str:
    """Our models' mean seconds per phase of the train command (config.json "timings")."""
    lines = []
    for name, trials in results.items():
        timings = [t["timings"] for t in trials if t.get("timings")]
        if timings:
            keys = [key for key in timings[0] if key != "total"]
            lines.append(f"{name}: " + ", ".join(
                f"{key} {statistics.fmean(t.get(key, 0.0) for t in timings):.1f}" for key in keys))
    return "\n".join(lines)


def draw(results: dict[str, list[dict]], target: Path, title: str) -> None:
    """Test error (log) against whole-process seconds (log): each model at its mean, with
    bars spanning its seeds' lowest to highest; baselines as open squares."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    from mnist_digits.runs import atomic_path

    figure = Figure(figsize=(8, 5.5))
    axes = figure.subplots()
    for name, trials in results.items():
        seconds = [t["seconds"] for t in trials]
        errors = [100 * (1 - t["accuracy"]) for t in trials]
        x, y = statistics.fmean(seconds), statistics.fmean(errors)
        baseline = name in BASELINES
        axes.errorbar(x, y, xerr=[[x - min(seconds)], [max(seconds) - x]],
                      yerr=[[y - min(errors)], [max(errors) - y]],
                      fmt="s" if baseline else "o", markersize=8, capsize=3,
                      color="gray" if baseline else None, mfc="none" if baseline else None)
        axes.annotate(f"{name} (baseline)" if baseline else name, (x, y), xytext=(6, 5),
                      textcoords="offset points", fontsize=9)
    axes.set_xscale("log")
    axes.set_yscale("log")
    # Plain numbers on the log axes: 1, 2, 3, 5 of each decade.
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "235" else ""))
    axes.set_xlabel("whole process, seconds (import to report; log scale)")
    axes.set_ylabel("test error, % (log scale)")
    axes.grid(alpha=0.3, which="both")
    axes.set_title(title, fontsize=10)
    with atomic_path(target, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=120, bbox_inches="tight", format="png")


def machine() -> str:
    from model_table import machine as describe_machine

    return describe_machine()


def main() -> None:
    from mnist_digits.models import MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[QUICKSTART, KERAS_EXAMPLE, *MODELS],
                        choices=[*BASELINES, *MODELS],
                        help="what to measure (default: the two baselines and every registered model)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model (default: 3)")
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 1 epoch (the quickstart keeps its 5): checks the script, not the models")
    parser.add_argument("--figure", type=Path, default=FIGURE, help=f"where to draw (default: {FIGURE})")
    parser.add_argument("--save", type=Path, default=Path("speed-frontier.json"),
                        help="the results so far, after each trial (default: speed-frontier.json)")
    parser.add_argument("--replot", type=Path, metavar="JSON",
                        help="measure nothing: the table and figure from results saved by --save")
    parser.add_argument("--one", choices=BASELINES, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one baseline trial
        print(json.dumps(baseline_trial(args.one, args.seed, args.epochs)))
        return
    if args.replot:
        saved = json.loads(args.replot.read_text())
        results, header, seeds = saved["results"], saved["header"], saved["seeds"]
    else:
        seeds, epochs = (1, 1) if args.quick else (args.seeds, None)
        header = (f"Measured {date.today().isoformat()} on {machine()}; whole processes, {seeds} seed(s), "
                  "alternating" + (" -- QUICK RUN (1 epoch): not the models' real accuracy" if args.quick else ""))
        results: dict[str, list[dict]] = {name: [] for name in args.models}
        with tempfile.TemporaryDirectory() as folder:
            for seed in range(seeds):
                # Each seed in another order, so no model always runs first (or after the same one).
                order = args.models[seed % len(args.models):] + args.models[:seed % len(args.models)]
                for name in order:
                    result = trial(name, seed, epochs if name != QUICKSTART else None, Path(folder))
                    results[name].append(result)
                    print(f"{name} seed {seed}: {result['accuracy']:.2%} in {result['seconds']:.1f} s", flush=True)
                    args.save.write_text(json.dumps({"header": header, "seeds": seeds, "results": results}))
    # Only models with every seed measured: the ratios pair trials by seed.
    complete = len(results.get(QUICKSTART) or next(iter(results.values())))
    results = {name: trials[:complete] for name, trials in results.items() if trials}
    print()
    print(table(results, header))
    print()
    print("Seconds per phase of `mnist-digits train` (mean over seeds):")
    print(phases(results))
    draw(results, args.figure, f"MNIST: test error against time on {os.cpu_count()} CPU cores"
                               f" ({date.today().isoformat()}, {seeds} seed(s) each)")
    print(f"\nFigure: {args.figure}")


if __name__ == "__main__":
    main()
