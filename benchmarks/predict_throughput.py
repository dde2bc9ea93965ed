"""Throughput of `mnist-digits predict` on a folder of small PNGs, decoding and
preparation included, against a naive pipeline measured in the same run.

    .venv/bin/python benchmarks/predict_throughput.py [MODEL] [--count 10000] [--size 28]

MODEL is a run folder or model file (default: the newest runs/mlp-*; else an mlp is
trained into a temporary folder first, about half a minute). The images are MNIST test
digits written as dark ink on white PNGs. Target: >= 2,000 images/s on 2 cores.

Rows:
    plain resize (baseline)  decode, invert, squash to 28x28, one model call: what a naive script does
    decode only              Pillow decoding alone: the floor under any pipeline
    predict, 1 process       collect_inputs + predict_inputs with workers=1
    predict, N processes     the same with one worker process per CPU (what the command does
                             from 2,000 images on)
    mnist-digits predict     the installed command, end to end (start-up, model load), with
                             --engine tensorflow (TensorFlow imported, the Keras model run)
    ... --engine litert      the command as it runs by default: the model converted for LiteRT
                             (converted before timing: the cache is warm), no TensorFlow import
    ... TFLite export        the same command given the model exported as float32 TFLite

Every command must exit 0 and answer every image (a command that fails fast would look
fast), and LiteRT and the TFLite export must give the Keras model's digit for every image;
the script stops with an error otherwise.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def newest_mlp_run() -> Path | None:
    runs = sorted(Path("runs").glob("mlp-*/model.keras"), key=lambda p: p.stat().st_mtime)
    return runs[-1].parent if runs else None


def make_folder(folder: Path, count: int, size: int) -> None:
    from mnist_digits.data import load_mnist

    images = load_mnist().x_test
    for index in range(count):
        image = Image.fromarray(255 - images[index % len(images)])
        if size != 28:
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        image.save(folder / f"{index:05d}.png")


def timed(function) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of this process and of its finished children (the
    CPU figure hardly depends on how busy the machine is; the wall time does)."""
    def cpu():
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    start_wall, start_cpu = time.perf_counter(), cpu()
    function()
    return time.perf_counter() - start_wall, cpu() - start_cpu


def check_answers(result: subprocess.CompletedProcess, name: str, count: int) -> np.ndarray:
    """The digits a `predict --json` run answered, after checking it answered all `count`."""
    import json

    if result.returncode != 0:
        raise SystemExit(f"the {name} command failed (exit {result.returncode}): {result.stderr[-500:]}")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    digits = [line.get("digit") for line in lines]
    if len(lines) != count or None in digits:
        raise SystemExit(f"the {name} command answered {sum(d is not None for d in digits)} of {count} images")
    return np.array(digits)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="run folder or model file")
    parser.add_argument("--count", type=int, default=10_000, help="number of PNGs (default: 10000)")
    parser.add_argument("--size", type=int, default=28, help="side of each PNG in px (default: 28)")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from mnist_digits.data import load_mnist
    from mnist_digits.export import export_model
    from mnist_digits.litert import load_classifier
    from mnist_digits.predict import Predictor, collect_inputs, predict_inputs
    from mnist_digits.decode import load_image

    with tempfile.TemporaryDirectory(prefix="predict-throughput-") as scratch:
        scratch = Path(scratch)
        model = args.model or newest_mlp_run()
        if model is None:
            from mnist_digits.pipeline import train_run

            print("no runs/mlp-* found: training an mlp first ...", file=sys.stderr)
            model, _, _ = train_run("mlp", load_mnist(), out=scratch / "mlp", verbose=0)
        folder = scratch / "pngs"
        folder.mkdir()
        make_folder(folder, args.count, args.size)
        files = sorted(folder.iterdir())
        predictor = Predictor.from_path(model)
        predictor.predict_prepared(np.zeros((1, 28, 28), np.float32))  # trace the model once

        def plain_resize():
            images = [np.asarray(Image.eval(load_image(f).convert("L"), lambda v: 255 - v)
                                 .resize((28, 28), Image.Resampling.BILINEAR), np.float32) / 255
                      for f in files]
            predictor.predict_prepared(np.stack(images))

        def decode_only():
            for f in files:
                np.asarray(load_image(f))

        def predict(workers):
            return lambda: list(predict_inputs(predictor, collect_inputs([folder]), workers=workers))

        tflite = export_model(model, load_mnist(), format="tflite", out=scratch / "tflite").path
        load_classifier(model, "litert")  # converted now: the command's timing is a warm start
        workers = os.cpu_count() or 1

        answers = {}

        def command(model_path, name, *options):
            """The command, end to end; its answers kept to be checked after the timing."""
            run = [sys.executable, "-m", "mnist_digits.cli", "predict", str(model_path), str(folder), "--json",
                   *options]

            def call():
                answers[name] = subprocess.run(run, capture_output=True, text=True)
            return call

        rows = [
            ("plain resize (baseline)", timed(plain_resize)),
            ("decode only", timed(decode_only)),
            ("predict, 1 process", timed(predict(1))),
            # The workers are children of the fork server, not of this process: their
            # CPU time cannot be counted here.
            (f"predict, {workers} processes", (timed(predict(workers))[0], None)),
            ("mnist-digits predict (command)", (timed(command(model, "keras", "--engine", "tensorflow"))[0],
                                                None)),
            ("... --engine litert", (timed(command(model, "litert"))[0], None)),
            ("... TFLite export", (timed(command(tflite, "tflite"))[0], None)),
        ]
    # A command that failed fast would look fast: each must have answered every image, and
    # LiteRT and the TFLite export must give the Keras model's answers.
    digits = {name: check_answers(result, name, args.count) for name, result in answers.items()}
    for name in ("litert", "tflite"):
        differ = int(np.sum(digits["keras"] != digits[name]))
        if differ:
            raise SystemExit(f"{name} answered {differ} of {args.count:,} images differently from Keras")
    baseline = args.count / rows[0][1][0]
    load = os.getloadavg()
    print(f"{args.count:,} PNGs of {args.size}x{args.size} px, model {model}, {workers} CPUs, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"The three commands exited 0 and answered all {args.count:,} images; LiteRT and the TFLite "
          "export gave the same digit as the Keras model for every one.")
    print(f"{'pipeline':<32}{'seconds':>9}{'images/s':>11}{'vs baseline':>13}"
          f"{'CPU s':>9}{'images/CPU s':>14}")
    for name, (seconds, cpu_seconds) in rows:
        rate = args.count / seconds
        cpu = (f"{cpu_seconds:>9.2f}{args.count / cpu_seconds:>14,.0f}" if cpu_seconds
               else f"{'-':>9}{'-':>14}")
        print(f"{name:<32}{seconds:>9.2f}{rate:>11,.0f}{rate / baseline:>12.2f}x{cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
