"""The seed network: our default `mlp` recipe against the TensorFlow beginner quickstart.

Baseline (tensorflow.org/tutorials/quickstart/beginner): the same 784-128-10 network with
Dropout 0.2, Adam at its default rate, batch 32, 5 epochs, `model.fit` on NumPy arrays of
all 60,000 training images. Ours: `mnist_digits.training.train("mlp", ...)`, its default
recipe on the 55,000-image training split (validating on the other 5,000 every epoch,
which is counted in its time). Each trial runs in a fresh process, the two alternating,
on the same machine in the same run. Target: >= 98.0% test accuracy in <= 0.75x the
quickstart's fit time.

    python benchmarks/mlp_vs_quickstart.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date


def quickstart(seed: int) -> dict:
    import keras

    from mnist_digits.data import load_mnist

    data = load_mnist()
    # The quickstart trains on all 60,000 training images.
    import numpy as np

    x_train = np.concatenate([data.x_train, data.x_val]) / 255.0
    y_train = np.concatenate([data.y_train, data.y_val])
    keras.utils.set_random_seed(seed)
    model = keras.models.Sequential([
        keras.layers.Input((28, 28)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=5, verbose=0)
    seconds = time.perf_counter() - started
    _, accuracy = model.evaluate(data.x_test / 255.0, data.y_test, verbose=0)
    return {"seconds": seconds, "accuracy": float(accuracy)}


def ours(seed: int) -> dict:
    from mnist_digits.data import load_mnist, to_model_input
    from mnist_digits.training import train

    data = load_mnist()
    result = train("mlp", data, seed=seed, verbose=0)
    probabilities = result.model.predict(to_model_input(data.x_test), batch_size=1000, verbose=0)
    accuracy = float((probabilities.argmax(axis=1) == data.y_test).mean())
    return {"seconds": result.seconds, "accuracy": accuracy}


def trial(which: str, seed: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    output = subprocess.run([sys.executable, __file__, "--one", which, "--seed", str(seed)],
                            capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--one", choices=["quickstart", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps((quickstart if args.one == "quickstart" else ours)(args.seed)))
        return

    results = {"quickstart": [], "ours": []}
    for seed in args.seeds:
        for which in ("quickstart", "ours"):
            results[which].append(trial(which, seed))
            r = results[which][-1]
            print(f"  seed {seed} {which:<10} test accuracy {r['accuracy']:.4f}  fit {r['seconds']:.1f} s",
                  file=sys.stderr)

    def summary(rows, key):
        values = [r[key] for r in rows]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.mean(values), sd

    q_acc, q_acc_sd = summary(results["quickstart"], "accuracy")
    q_time, q_time_sd = summary(results["quickstart"], "seconds")
    o_acc, o_acc_sd = summary(results["ours"], "accuracy")
    o_time, o_time_sd = summary(results["ours"], "seconds")
    # Paired: each seed's two trials ran back to back, so they share the machine's state at
    # that moment; the ratio per seed cancels most of the +-30% drift between runs.
    ratios = [o["seconds"] / q["seconds"] for o, q in zip(results["ours"], results["quickstart"])]
    ratio, ratio_sd = statistics.mean(ratios), (statistics.stdev(ratios) if len(ratios) > 1 else 0.0)
    print(f"\nmlp vs TensorFlow quickstart, {date.today()}, {platform.machine()} "
          f"{os.cpu_count()} cores, seeds {args.seeds}\n")
    print("| recipe | test accuracy | fit time (s) | time ratio (per seed, mean ± sd) |")
    print("|---|---:|---:|---:|")
    print(f"| TF quickstart (baseline): batch 32, 5 epochs, 60k images | "
          f"{100 * q_acc:.2f}% ± {100 * q_acc_sd:.2f} | {q_time:.1f} ± {q_time_sd:.1f} | 1.00 |")
    print(f"| mnist-digits `mlp` default recipe | {100 * o_acc:.2f}% ± {100 * o_acc_sd:.2f} | "
          f"{o_time:.1f} ± {o_time_sd:.1f} | {ratio:.2f} ± {ratio_sd:.2f} |")
    print(f"\nper-seed time ratios: {', '.join(f'{r:.2f}' for r in ratios)}")
    met = o_acc >= 0.98 and ratio <= 0.75
    print(f"\ntarget (>= 98.0% in <= 0.75x the quickstart's time): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
