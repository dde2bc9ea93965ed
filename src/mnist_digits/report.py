"""report.md for a run: the numbers, the figures, and the original write-up's claims
side by side with what was measured."""

from __future__ import annotations

from .feedback import MAX_MNIST_DROP_POINTS
from .runs import FIGURES_DIR, write_text

# What the original write-up said, as loosely as it said it.
WRITE_UP_CLAIMS = {
    "test_accuracy": "about 98% (elsewhere \"99%\", \"97% on validation/test\")",
    "train_epoch_5": "99% after 5 epochs",
    "train_epoch_10": "99.5% after 10 epochs",
    "hardest_digit": "5",
    "easiest_digit": "1",
}


AUGMENTATION = ("rotation_degrees", "zoom", "shift_pixels")
RECIPE_EXTRAS = ("warmup_epochs", "label_smoothing", *AUGMENTATION)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _epoch_value(history: dict, key: str, epoch: int) -> float | None:
    values = history.get(key, [])
    return values[epoch - 1] if len(values) >= epoch else None


def render(metrics: dict, config: dict, history: dict | None, figures: list[str]) -> str:
    model = config.get("model", "model")
    history = history or {}
    lines = [f"# Report: `{model}`", ""]
    if config.get("interrupted"):
        lines += ["> Training was interrupted (Ctrl-C); this is the best model up to then.", ""]
    lines += ["## Accuracy", "", "| split | images | accuracy | 95% interval | loss |",
              "|---|---:|---:|---:|---:|"]
    for split in ("train", "validation", "test"):
        if split in metrics:
            s = metrics[split]
            interval = s.get("accuracy_95_interval")  # older metrics.json files have none
            between = f"{_percent(interval[0])}–{_percent(interval[1])}" if interval else "–"
            lines.append(f"| {split} | {s['count']:,} | {_percent(s['accuracy'])} | {between} | "
                         f"{s['loss']:.4f} |")
    lines += ["", "The 95% interval (Wilson) is where the model's accuracy on digits like these lies, "
                  "given how many images were counted: two models whose test accuracies differ by "
                  "less than its width may differ by chance."]
    recipe = config.get("recipe")
    if recipe:
        # The recipe's extras (warm-up, label smoothing, augmentation) where it has them.
        extras = "".join(f", {key.replace('_', ' ')} {recipe[key]:g}" for key in RECIPE_EXTRAS
                         if recipe.get(key))
        lines += ["", f"Recipe: {recipe['epochs']} epochs, batch {recipe['batch_size']}, Adam "
                      f"{recipe['learning_rate']:g} with {recipe['schedule']} schedule{extras}, seed "
                      f"{config.get('seed')}; training took {config.get('train_seconds', 0):.1f} s "
                      f"(best validation accuracy at epoch {config.get('best_epoch')})."]
    if config.get("members"):
        lines += ["", f"Ensemble of {len(config['members'])} members, probabilities averaged"
                      f"{' with test-time views (rotated, scaled)' if config.get('test_time_augmentation') else ''}:", "",
                  "| member | seed | test accuracy | training time |", "|---|---:|---:|---:|"]
        lines += [f"| {m['model']} | {m['seed']} | {_percent(m['test_accuracy'])} | "
                  f"{m['train_seconds'] or 0:.0f} s |" for m in config["members"]]
    if metrics.get("collected"):
        lines += _collected_section(metrics["collected"], config.get("extra_data", {}))
    lines += ["", "## Per digit (test set)", "",
              "| digit | precision | recall | F1 | images |", "|---|---:|---:|---:|---:|"]
    for digit, row in metrics["per_class"].items():
        lines.append(f"| {digit} | {_percent(row['precision'])} | {_percent(row['recall'])} | "
                     f"{_percent(row['f1'])} | {row['support']} |")
    hardest, easiest = metrics["hardest_digit"], metrics["easiest_digit"]
    lines += ["", f"**Hardest digit: {hardest}** (recall {_percent(metrics['per_class'][str(hardest)]['recall'])}); "
                  f"**easiest digit: {easiest}** (recall {_percent(metrics['per_class'][str(easiest)]['recall'])})."]
    if metrics.get("most_confused"):
        lines += ["", "Most confused pairs (true → predicted, test images):", ""]
        lines += [f"- {p['true']} → {p['predicted']}: {p['count']}" for p in metrics["most_confused"]]
    calibration = metrics.get("calibration")
    if calibration:
        lines += ["", f"Confidence calibration: temperature {calibration['temperature']:.3f} fitted on the "
                      f"validation split; expected calibration error on test "
                      f"{_percent(calibration['test_ece_before'])} → {_percent(calibration['test_ece_after'])}."]
    lines += ["", "## The original write-up against this run", "",
              "| claim | write-up | measured |", "|---|---|---|",
              f"| test accuracy | {WRITE_UP_CLAIMS['test_accuracy']} | {_percent(metrics['test']['accuracy'])} |",
              f"| training accuracy, epoch 5 | {WRITE_UP_CLAIMS['train_epoch_5']} | "
              f"{_percent(_epoch_value(history, 'accuracy', 5))} |",
              f"| training accuracy, epoch 10 | {WRITE_UP_CLAIMS['train_epoch_10']} | "
              f"{_percent(_epoch_value(history, 'accuracy', 10))} |",
              f"| hardest digit | {WRITE_UP_CLAIMS['hardest_digit']} | {hardest} |",
              f"| easiest digit | {WRITE_UP_CLAIMS['easiest_digit']} | {easiest} |",
              "", _training_accuracy_note(metrics, config), ""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{name}]({FIGURES_DIR}/{name}.png)" for name in figures]
        lines.append("")
    return "\n".join(lines)


def _collected_section(collected: dict, extra_data: dict) -> list[str]:
    """Drawings collected on the page (`--extra-data`): MNIST test and held-out accuracy,
    before and after when fine-tuning."""
    lines = ["", "## Collected drawings", "",
             f"{collected['train']:,} drawings from {collected['source']} joined the training split"
             f"{' (each repeated %d times)' % extra_data['repeats'] if extra_data.get('repeats') else ''}; "
             f"{collected['held_out']:,} more, chosen by a hash of their id, were held out and only measured.",
             "", "| model | MNIST test | held-out collected |", "|---|---:|---:|"]
    before = collected.get("before")
    if before:
        lines.append(f"| before ({before['run']}) | {_percent(before['mnist_test_accuracy'])} | "
                     f"{_percent(before['held_out_accuracy'])} |")
    lines.append(f"| {'after' if before else 'this run'} | {_percent(collected['mnist_test_accuracy'])} | "
                 f"{_percent(collected['held_out_accuracy'])} |")
    if collected.get("mnist_test_fell"):
        lines += ["", f"> **MNIST test accuracy fell by {collected['mnist_test_drop_points']:.2f} points** "
                      f"(more than {MAX_MNIST_DROP_POINTS:g}): the collected drawings pulled the model "
                      "away from MNIST."]
    return lines


def _training_accuracy_note(metrics: dict, config: dict) -> str:
    """Why the per-epoch training accuracy sits below the validation accuracy."""
    recipe = config.get("recipe") or {}
    augmented = any(recipe.get(key) for key in AUGMENTATION)
    note = ("Training accuracy per epoch is measured as Keras reports it: with dropout active"
            + (" and on augmented images" if augmented else ""))
    if "train" in metrics:
        note += f"; on the training split at the end, without either: {_percent(metrics['train']['accuracy'])}"
    return note + "."


def write_report(target, metrics: dict, config: dict, history: dict | None, figures: list[str]) -> None:
    write_text(target, render(metrics, config, history, figures))
