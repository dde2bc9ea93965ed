"""The `mnist-digits` command: argument parsing, and nothing else of substance.

Each sub-command calls the library. Errors a user can cause arrive here as
MnistDigitsError and leave as one line on stderr with exit code 2 (1 when only some
inputs failed); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

from . import __version__
from .errors import MnistDigitsError, UsageError
# The library's choices and defaults. None of these modules imports TensorFlow (or SciPy),
# so `--help` stays quick; the commands import the rest when they run.
from .evaluation import UNSURE_BELOW
from .export import DEFAULT_MAX_ACCURACY_DROP, FORMATS, QUANTIZATIONS, REPRESENTATIVE_IMAGES
from .feedback import FINETUNE_EPOCHS, MAX_MNIST_DROP_POINTS
from .litert import ENGINES
from .models import DEFAULT_MODEL, MODELS
from .tensorflow_import import import_tensorflow_quietly

PROG = "mnist-digits"
EXTRA_DATA_HELP = ("drawings collected on the page (a feedback database, or a folder written by "
                   "'feedback --export'): 80%% join the training split, repeated so they count; "
                   "20%%, chosen by id, are held out and reported")
TTA_HELP = ("test-time augmentation: also average each member over the image rotated 6 degrees "
            "each way and scaled 7%% down and up (5x the inference cost)")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", metavar="DIR",
                       help="folder with the four MNIST files or mnist.npz "
                            "(default: $MNIST_DIGITS_DATA, else the download cache)")
    group.add_argument("--mirror", metavar="URL",
                       help="download from this mirror first (default: $MNIST_DIGITS_MIRROR)")


def _load_data(args):
    from .data import load_mnist

    return load_mnist(args.data_dir, args.mirror)


def cmd_data(args) -> int:
    data = _load_data(args)
    print(f"MNIST in {data.source}")
    for name, sha in data.checksums.items():
        print(f"  {name}  sha256 {sha[:16]}...  ok")
    print("Checksums passed.")
    for split in ("train", "validation", "test"):
        images, labels = data.split(split)
        per_digit = " ".join(str(int((labels == d).sum())) for d in range(10))
        print(f"  {split:<10} {len(images):>6,} images   per digit 0-9: {per_digit}")
    return 0


def _load_data_beside_tensorflow(args, timings):
    """MNIST read while TensorFlow imports in a thread: reading, gunzip and SHA-256 release
    the GIL, so the two overlap (on the shared machine both took 19.3 s so, 21.0 s one after
    the other: 3 alternating pairs, within its noise). A first-time download's progress bar
    is hidden while TensorFlow's start-up messages are."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        importing = pool.submit(import_tensorflow_quietly)
        try:
            with timings.phase("data"):
                data = _load_data(args)
        finally:
            with timings.phase("tensorflow import (beyond the data)"):
                importing.result()
    return data


def _arguments(args) -> dict:
    """The command's arguments as config.json records them."""
    return {name: value for name, value in vars(args).items() if name != "handler"}


def cmd_train(args) -> int:
    from .pipeline import train_run
    from .timings import Timings, describe

    timings = Timings(whole_process=True)
    if args.ensemble is not None:  # N seeds, one model averaging their probabilities
        from .ensemble import train_ensemble

        if args.extra_data:
            raise UsageError("--extra-data trains one model: leave out --ensemble")

        run_dir, metrics, interrupted = train_ensemble(
            args.model, _load_data_beside_tensorflow(args, timings), args.ensemble, out=args.out,
            force=args.force, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
            resume=args.resume,
            test_time_augmentation=args.tta,
            verbose=0 if args.quiet else ("auto" if sys.stdout.isatty() else 2),
            arguments=_arguments(args))
        print(f"{metrics['model']}{' (interrupted)' if interrupted else ''}: test accuracy "
              f"{metrics['test']['accuracy']:.2%}; run folder {run_dir}")
        return 130 if interrupted else 0
    if args.resume or args.tta:
        raise UsageError(f"--{'resume' if args.resume else 'tta'} is for ensembles: add --ensemble N")
    extra = _load_extra_data(args)
    data = _load_data_beside_tensorflow(args, timings)
    verbose = "auto" if sys.stdout.isatty() else 2
    run_dir, metrics, interrupted = train_run(
        args.model, data, out=args.out, force=args.force, epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, verbose=0 if args.quiet else verbose,
        arguments=_arguments(args), timings=timings,
        extra=extra,
    )
    if args.verbose:
        print(describe(timings.rounded()))
    if interrupted:
        print(f"Interrupted: kept the best model so far in {run_dir} "
              f"(test accuracy {metrics['test']['accuracy']:.2%}).")
        return 130
    print(f"{args.model}: test accuracy {metrics['test']['accuracy']:.2%} "
          f"(hardest digit {metrics['hardest_digit']}, easiest {metrics['easiest_digit']}); "
          f"run folder {run_dir}")
    _print_collected(metrics)
    return 0


def _load_extra_data(args):
    if not args.extra_data:
        return None
    from .feedback import load_extra

    return load_extra(args.extra_data)


def _print_collected(metrics: dict) -> None:
    """The last line after training on collected drawings: held-out and MNIST accuracy,
    and plainly whether MNIST accuracy fell too far."""
    collected = metrics.get("collected")
    if not collected:
        return
    held_out = collected["held_out_accuracy"]
    line = (f"collected drawings held out: {'-' if held_out is None else f'{held_out:.2%}'} "
            f"of {collected['held_out']}")
    before = collected.get("before")
    if before:
        was = before["held_out_accuracy"]
        line += (f" (before {'-' if was is None else f'{was:.2%}'}); MNIST test "
                 f"{before['mnist_test_accuracy']:.2%} -> {collected['mnist_test_accuracy']:.2%}")
        if collected["mnist_test_fell"]:
            line += (f"; WARNING: MNIST test accuracy fell {collected['mnist_test_drop_points']:.2f} "
                     f"points, more than {MAX_MNIST_DROP_POINTS:g}")
    print(line)


def cmd_finetune(args) -> int:
    from .pipeline import finetune_run

    extra = _load_extra_data(args)
    run_dir, metrics, interrupted = finetune_run(
        args.run, _load_data(args), extra, out=args.out, force=args.force, epochs=args.epochs,
        seed=args.seed, verbose=0 if args.quiet else ("auto" if sys.stdout.isatty() else 2),
        arguments=_arguments(args))
    print(f"{metrics['model']} fine-tuned{' (interrupted)' if interrupted else ''}: run folder {run_dir}")
    _print_collected(metrics)
    return 130 if interrupted else 0


def cmd_evaluate(args) -> int:
    from .pipeline import evaluate_model

    data = _load_data(args)
    out_dir, metrics = evaluate_model(args.model, data, args.out, args.force)
    print(f"{metrics['model']}: test accuracy {metrics['test']['accuracy']:.2%}, "
          f"loss {metrics['test']['loss']:.4f}; metrics, figures and report in {out_dir}")
    return 0


def cmd_ensemble(args) -> int:
    from .ensemble import ensemble_runs

    run_dir, metrics = ensemble_runs(args.runs, _load_data(args), out=args.out, force=args.force,
                                     test_time_augmentation=args.tta)
    print(f"ensemble of {len(args.runs)}{' with test-time views' if args.tta else ''}: test accuracy "
          f"{metrics['test']['accuracy']:.2%}; run folder {run_dir}")
    return 0


def cmd_predict(args) -> int:
    import json
    import warnings

    from PIL import Image

    # Not at start-up: preparing images needs SciPy, which takes most of a second to import.
    from .predict import (Failure, Predictor, answer_line, answer_record, collect_inputs,
                          load_predictor, predict_inputs, prepared_png_name)
    from .preprocess import to_png
    from .runs import write_bytes

    if not 1 <= args.top_k <= 10:
        raise UsageError(f"--top-k must be between 1 and 10 (got {args.top_k})")
    if not 0.0 <= args.unsure_below <= 1.0:
        raise UsageError(f"--unsure-below must be between 0 and 1 (got {args.unsure_below})")
    if args.save_prepared and os.path.exists(args.save_prepared) and not os.path.isdir(args.save_prepared):
        raise UsageError(f"--save-prepared {args.save_prepared} exists and is not a folder")
    # Images that large are refused with their own message; Pillow's warning adds nothing.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    inputs = list(collect_inputs(args.inputs))
    progress = None

    def predictor_with_progress() -> Predictor:
        nonlocal progress
        predictor, _ = load_predictor(args.model, args.engine, unsure_below=args.unsure_below)
        if len(inputs) > 1000:  # only now: a model that fails to load shows no bar
            from tqdm import tqdm

            progress = tqdm(total=len(inputs), unit="image", file=sys.stderr, disable=None)
        return predictor

    def show(line: str, to=None) -> None:  # around the progress bar when there is one
        (progress.write if progress is not None else print)(line, file=to or sys.stdout)

    used_names: set[str] = set()
    failed = unsure = 0
    try:
        for name, answer in predict_inputs(predictor_with_progress, inputs):
            if progress is not None:
                progress.update()
            failed += isinstance(answer, Failure)
            unsure += not isinstance(answer, Failure) and answer.unsure
            if args.save_prepared and not isinstance(answer, Failure):
                write_bytes(os.path.join(args.save_prepared, prepared_png_name(name, used_names)),
                            to_png(answer.prepared))
            if args.json:
                show(json.dumps(answer_record(name, answer)))
            elif isinstance(answer, Failure):
                show(f"{PROG}: error: {name}: {answer.error}", to=sys.stderr)
            else:
                show(answer_line(name, answer, args.top_k))
    except BrokenPipeError:  # `... | head`: the reader has all it wants
        sys.stdout = open(os.devnull, "w")  # nothing more to flush at exit
        return 1 if failed else 0
    finally:
        if progress is not None:
            progress.close()
    if not args.json and len(inputs) > 1:
        print(f"{len(inputs)} inputs: {len(inputs) - failed} answered ({unsure} unsure), "
              f"{failed} failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_read(args) -> int:
    import json

    # Not at start-up: preparing images needs SciPy, which takes most of a second to import.
    from .predict import collect_inputs, load_predictor, prepared_png_name
    from .read import annotated_png, number_line, read_inputs
    from .runs import write_bytes

    if not 0.0 <= args.unsure_below <= 1.0:
        raise UsageError(f"--unsure-below must be between 0 and 1 (got {args.unsure_below})")
    if args.save_annotated and os.path.exists(args.save_annotated) and not os.path.isdir(args.save_annotated):
        raise UsageError(f"--save-annotated {args.save_annotated} exists and is not a folder")
    inputs = list(collect_inputs(args.inputs))
    predictor, _ = load_predictor(args.model, args.engine, unsure_below=args.unsure_below)
    used_names: set[str] = set()
    failed = 0
    with _progress(len(inputs), "image") as show:
        for name, source, result in read_inputs(predictor, inputs):
            failed += isinstance(result, str)
            if isinstance(result, str):
                show(json.dumps({"file": name, "error": result}) if args.json
                     else f"{PROG}: error: {name}: {result}", error=not args.json)
                continue
            if args.save_annotated:
                write_bytes(os.path.join(args.save_annotated, prepared_png_name(name, used_names)),
                            annotated_png(source, result))
            show(json.dumps({"file": name, **result.record()}) if args.json else number_line(name, result))
    return 1 if failed else 0


@contextlib.contextmanager
def _progress(total: int, unit: str):
    """A `show(line, error=False)` that prints around a progress bar (stderr, above 1,000
    inputs, terminals only) advanced once per line shown."""
    bar = None
    if total > 1000:
        from tqdm import tqdm

        bar = tqdm(total=total, unit=unit, file=sys.stderr, disable=None)

    def show(line: str, error: bool = False) -> None:
        stream = sys.stderr if error else sys.stdout
        if bar is None:
            print(line, file=stream)
        else:
            bar.write(line, file=stream)
            bar.update()

    try:
        yield show
    except BrokenPipeError:  # `... | head`: the reader has all it wants
        sys.stdout = open(os.devnull, "w")  # nothing more to flush at exit
    finally:
        if bar is not None:
            bar.close()


def cmd_serve(args) -> int:
    from .predict import usable_cpus
    from .serve import serve

    serve(args.model, host=args.host, port=args.port, access_log=not args.quiet,
          allow_hosts=tuple(args.allow_host), feedback_db=args.feedback_db,
          workers=usable_cpus() if args.workers is None else args.workers, engine=args.engine)
    return 0


def cmd_export(args) -> int:
    from .export import export_model
    from .model_card import format_size

    if args.max_accuracy_drop < 0:
        raise UsageError(f"--max-accuracy-drop must be 0 or more (got {args.max_accuracy_drop:g})")
    data = _load_data(args)
    result = export_model(args.model, data, format=args.format, quantize=args.quantize, out=args.out,
                          version=args.version, force=args.force,
                          max_accuracy_drop=args.max_accuracy_drop)
    change = 100 * (result.test_accuracy - result.source_test_accuracy)
    print(f"Exported {result.form} to {result.path}")
    print(f"  {'form':<16} {'size':>10}  test accuracy")
    print(f"  {'keras (source)':<16} {format_size(result.source_size_bytes):>10}  "
          f"{result.source_test_accuracy:.2%}")
    print(f"  {result.form:<16} {format_size(result.size_bytes):>10}  {result.test_accuracy:.2%}  "
          f"({change:+.2f} points; largest probability difference {result.max_abs_difference:.2g})")
    print(f"Model card: {result.card}")
    return 0


def cmd_feedback(args) -> int:
    from .feedback import assess, assessment_lines, export_idx, open_store

    store = open_store(args.db)
    try:
        collected = store.collected()
    finally:
        store.close()
    classifier = None
    if args.model:
        from .classifiers import load_classifier

        classifier = load_classifier(args.model)
    result = assess(collected, classifier)
    print("\n".join(assessment_lines(result)))
    if args.figure and result.get("assessed"):
        from .figures import confusion_matrix

        assessed = result["assessed"]
        confusion_matrix(assessed["confusion_matrix"], args.figure,
                         title=f"{assessed['model']}: confusion matrix (collected drawings)")
        print(f"Confusion matrix: {args.figure}")
    if args.export:
        export_idx(collected, args.export)
        print(f"Exported as IDX (held-out drawings as the t10k pair) with SHA256SUMS: {args.export}")
    return 0


def _data_parser(commands) -> None:
    data = commands.add_parser("data", help="get MNIST (folder, cache or verified download) and say what is there",
                               description="Find or download the four MNIST files, verify their SHA-256, "
                                           "and print where they are and the split sizes.")
    _add_data_options(data)
    data.set_defaults(handler=cmd_data)


def _train_parser(commands) -> None:
    train = commands.add_parser("train", help="train a model and write a run folder with metrics, figures, report",
                                description="Train a registered model with its default recipe and write a "
                                            "run folder: model.keras, config.json, history.csv, metrics.json, "
                                            "figures/, report.md, tensorboard/. Ctrl-C stops and keeps the best model.")
    train.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS),
                       help=f"which network (default: {DEFAULT_MODEL}, the seed network 784-128-10)")
    train.add_argument("--epochs", type=int, metavar="N", help="override the recipe's epochs")
    train.add_argument("--batch-size", type=int, metavar="N", help="override the recipe's batch size")
    train.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same numbers (default: 0)")
    train.add_argument("--out", metavar="DIR", help="run folder (default: runs/<model>-<timestamp>)")
    train.add_argument("--force", action="store_true", help="replace an existing non-empty run folder")
    train.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    train.add_argument("--verbose", action="store_true",
                       help="at the end, where the seconds went (also in config.json)")
    train.add_argument("--ensemble", type=int, metavar="N",
                       help="train N copies with seeds SEED..SEED+N-1 and save one model averaging "
                            "their probabilities (members' run folders under members/)")
    train.add_argument("--resume", action="store_true",
                       help="with --ensemble and --out: keep the members already trained to the end "
                            "in that folder (after Ctrl-C or a crash, or to grow the ensemble) and "
                            "train only the rest")
    train.add_argument("--tta", action="store_true", help=f"with --ensemble: {TTA_HELP}")
    train.add_argument("--extra-data", metavar="SOURCE", help=EXTRA_DATA_HELP)
    _add_data_options(train)
    train.set_defaults(handler=cmd_train)


def _finetune_parser(commands) -> None:
    finetune = commands.add_parser(
        "finetune", help="a few more epochs for a trained run, with the drawings collected on the page",
        description="Continue training a run folder's model for a few epochs at a tenth of its "
                    "recipe's learning rate, on MNIST with the collected drawings joined, and write "
                    "a new run folder whose report shows MNIST test and held-out collected accuracy "
                    "before and after.")
    finetune.add_argument("run", metavar="RUN", help="run folder written by mnist-digits train")
    finetune.add_argument("--extra-data", metavar="SOURCE", required=True, help=EXTRA_DATA_HELP)
    finetune.add_argument("--epochs", type=int, default=FINETUNE_EPOCHS, metavar="N",
                          help=f"epochs (default: {FINETUNE_EPOCHS})")
    finetune.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    finetune.add_argument("--out", metavar="DIR", help="run folder (default: runs/<model>-finetuned-<timestamp>)")
    finetune.add_argument("--force", action="store_true", help="replace an existing non-empty run folder")
    finetune.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    _add_data_options(finetune)
    finetune.set_defaults(handler=cmd_finetune)


def _evaluate_parser(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="metrics, figures and report for a saved model",
                                   description="Evaluate a run folder or model file on MNIST and write "
                                               "metrics.json, figures/ and report.md.")
    evaluate.add_argument("model", metavar="MODEL", help="run folder or model file")
    evaluate.add_argument("--out", metavar="DIR",
                          help="where to write (default: the run folder itself, or <file>-evaluation/)")
    evaluate.add_argument("--force", action="store_true", help="replace an existing non-empty --out folder")
    _add_data_options(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)


def _ensemble_parser(commands) -> None:
    ensemble = commands.add_parser(
        "ensemble", help="combine trained run folders into one model averaging their probabilities",
        description="Combine run folders written by 'train' (any models, e.g. several seeds of cnn) "
                    "into one model.keras that averages their probabilities, and write a run folder "
                    "with its metrics, figures and report. The result works with evaluate, predict, "
                    "serve and export like any model.")
    ensemble.add_argument("runs", metavar="RUN", nargs="+", help="run folders written by mnist-digits train")
    ensemble.add_argument("--tta", action="store_true", help=TTA_HELP)
    ensemble.add_argument("--out", metavar="DIR", help="run folder (default: runs/ensemble-<timestamp>)")
    ensemble.add_argument("--force", action="store_true", help="replace an existing non-empty run folder")
    _add_data_options(ensemble)
    ensemble.set_defaults(handler=cmd_ensemble)


def _predict_parser(commands) -> None:
    predict = commands.add_parser(
        "predict", help="read digits from your own images",
        description="Prepare each image the way MNIST digits were made (upright, ink found, "
                    "cropped, scaled into 20x20, centred by mass in 28x28) and print the digit, "
                    "its calibrated confidence and the top guesses. Exit code 1 if any input failed.")
    predict.add_argument("model", metavar="MODEL", help="run folder or model file")
    predict.add_argument("inputs", metavar="INPUT", nargs="+",
                         help="image files (png, jpg, bmp, gif, webp, tif), folders (walked), "
                              "or an IDX/.npy batch of images")
    predict.add_argument("--top-k", type=int, default=3, metavar="K",
                         help="show the K most likely digits (default: 3)")
    predict.add_argument("--json", action="store_true",
                         help="one JSON object per input on stdout: file, digit, confidence, "
                              "probabilities, unsure -- or file, error")
    predict.add_argument("--save-prepared", metavar="DIR",
                         help="write the 28x28 image the model saw for each input as PNG into DIR")
    predict.add_argument("--unsure-below", type=float, default=UNSURE_BELOW, metavar="P",
                         help="mark answers with calibrated confidence below P as unsure "
                              f"(default: {UNSURE_BELOW:g})")
    _add_engine_option(predict)
    predict.set_defaults(handler=cmd_predict)


def _read_parser(commands) -> None:
    read = commands.add_parser(
        "read", help="read whole numbers: several digits in one image, line by line",
        description="Find the digits in each image (pieces of one digit joined, touching digits "
                    "split where the model reads the pieces most confidently), prepare each like an "
                    "MNIST digit and print the number, left to right, one line of digits per line. "
                    "Exit code 1 if any input failed.")
    read.add_argument("model", metavar="MODEL", help="run folder or model file")
    read.add_argument("inputs", metavar="INPUT", nargs="+",
                      help="image files (png, jpg, bmp, gif, webp, tif) or folders (walked)")
    read.add_argument("--json", action="store_true",
                      help="one JSON object per input on stdout: file, text, digits (digit, confidence, "
                           "alternatives, unsure, box [x0, y0, x1, y1]), unsure -- or file, error")
    read.add_argument("--save-annotated", metavar="DIR",
                      help="write a copy of each image with the digits' boxes and values drawn on it "
                           "as PNG into DIR")
    read.add_argument("--unsure-below", type=float, default=UNSURE_BELOW, metavar="P",
                      help=f"mark digits with calibrated confidence below P as unsure (default: {UNSURE_BELOW:g})")
    _add_engine_option(read)
    read.set_defaults(handler=cmd_read)


def _serve_parser(commands) -> None:
    serve = commands.add_parser("serve", help="HTTP API and a page to draw a digit on",
                                description="Serve a page at / to draw a digit on (or upload a photo) "
                                            "and an HTTP API: POST /api/predict, POST /api/predict/batch, POST /api/read, "
                                            "GET /api/health, GET /api/model; OpenAPI docs at /docs.")
    serve.add_argument("model", metavar="MODEL", help="run folder or model file")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default: 127.0.0.1, this machine only; "
                            "0.0.0.0 opens it to the network, without authentication)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    serve.add_argument("--quiet", action="store_true", help="no log line per request")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="also answer requests for this Host name (repeatable; default: loopback "
                            "names and --host only, which stops DNS rebinding)")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="server processes, each with its own copy of the model "
                            "(default: one per core available)")
    serve.add_argument("--feedback-db", metavar="URL",
                       help="collect corrections from the page (Right / Wrong buttons, POST "
                            "/api/feedback) in this store: a file name (SQLite) or "
                            "postgresql://user@host/database")
    _add_engine_option(serve)
    serve.set_defaults(handler=cmd_serve)


def _add_engine_option(command) -> None:
    command.add_argument("--engine", choices=ENGINES, default="litert",
                         help="what runs a Keras model (run folder, .keras): litert (default) converts it "
                              "once, cached, with the same answers to 1e-4, and then starts in a second "
                              "and holds ~550 MiB less than tensorflow, which runs it as trained; exports "
                              "run as they are")



def _feedback_parser(commands) -> None:
    feedback = commands.add_parser(
        "feedback", help="what people corrected on the page: counts, accuracy, export as IDX",
        description="Summarise a feedback store written by 'serve --feedback-db': drawings per "
                    "digit, per model and per day, each model's accuracy on them next to its MNIST "
                    "test accuracy; optionally a confusion-matrix figure and an IDX export.")
    feedback.add_argument("db", metavar="DB", help="the store: a SQLite file or postgresql://... URL")
    feedback.add_argument("--model", metavar="MODEL",
                          help="run this model (run folder or model file) on the collected drawings")
    feedback.add_argument("--figure", metavar="PNG",
                          help="write the confusion matrix of the collected drawings here")
    feedback.add_argument("--export", metavar="DIR",
                          help="write the drawings as MNIST's four gzipped IDX files (the held-out "
                               "20%% as the t10k pair) and SHA256SUMS, for --extra-data or any reader")
    feedback.set_defaults(handler=cmd_feedback)


def _export_parser(commands) -> None:
    export = commands.add_parser(
        "export", help=f"SavedModel for TF Serving, TFLite ({', '.join(QUANTIZATIONS)})",
        description="Export a trained model as a SavedModel in TensorFlow Serving layout "
                    "(OUT/VERSION/saved_model.pb) or as TFLite (OUT/model.tflite), with model_info.json "
                    "and MODEL_CARD.md beside it. The export is measured on the full test set; if it "
                    "loses more accuracy than allowed, nothing is written and the exit code is 1.")
    export.add_argument("model", metavar="MODEL", help="run folder or .keras file")
    export.add_argument("--format", required=True, choices=FORMATS,
                        help="savedmodel (TF Serving) or tflite (LiteRT: phones, microcontrollers)")
    export.add_argument("--quantize", choices=QUANTIZATIONS,
                        help="tflite only: float32 (default), float16 weights, or int8 everywhere "
                             f"(calibrated on {REPRESENTATIVE_IMAGES} training images)")
    export.add_argument("--out", metavar="DIR",
                        help="export folder (default: <run folder>/export/<form>)")
    export.add_argument("--version", type=int, metavar="N",
                        help="savedmodel only: the version folder under --out (default: 1)")
    export.add_argument("--force", action="store_true",
                        help="replace an existing export (for savedmodel: only its version folder)")
    export.add_argument("--max-accuracy-drop", type=float, default=DEFAULT_MAX_ACCURACY_DROP, metavar="POINTS",
                        help="fail if test accuracy falls more than this many percentage points "
                             f"below the Keras model's (default: {DEFAULT_MAX_ACCURACY_DROP:g})")
    _add_data_options(export)
    export.set_defaults(handler=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Handwritten digits with TensorFlow: get MNIST, train, evaluate, "
                    "predict digits and read whole numbers in your own images, serve a drawing "
                    "page that learns from corrections, export.",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add_parser in (_data_parser, _train_parser, _finetune_parser, _evaluate_parser, _ensemble_parser,
                       _predict_parser, _read_parser, _serve_parser, _feedback_parser, _export_parser):
        add_parser(commands)
    return parser


def _positive(args) -> None:
    for name in ("epochs", "batch_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (`kill`, a container stopping) ends the command through SystemExit, so that
    `finally` blocks run: no staging folder, partial download or temporary file stays."""
    if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _exit_cleanly_on_sigterm()
    # `data` never needs TensorFlow (downloads are plain HTTP); `predict`, `read` and `serve`
    # load it with --engine tensorflow only (LiteRT converts in a child process: a server ~550
    # MiB smaller), `predict` while its worker processes already prepare the images; `train`
    # imports it beside reading the data; `feedback` only with --model.
    if args.handler not in (cmd_data, cmd_predict, cmd_read, cmd_serve, cmd_train, cmd_feedback):
        import_tensorflow_quietly()
    try:
        _positive(args)
        return args.handler(args)
    except MnistDigitsError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mnist-digits data | head -1`: the reader has all it wants
        sys.stdout = open(os.devnull, "w")  # nothing more to flush at exit
        return 0


def run() -> None:
    """The process entry point (`mnist-digits`, `python -m mnist_digits.cli`): main(), the
    exit handlers, then exit without the interpreter's module-by-module teardown: with
    TensorFlow loaded it took 10 s after a one-epoch `train` on the shared machine; 0.6 s
    from the last timing to the process's end remained without it (measured).
    An exception (a bug) still leaves the ordinary way, with its traceback."""
    import atexit

    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken (`| head`): nothing left to write
            pass
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    run()
