"""MODEL_CARD.md for an export: what the model is, how it was made and measured, how to
call it, and what it is not for. Rendered from model_info.json content alone:
{"metrics": source metrics.json, "config": source config.json, "export": export facts}.
"""

from __future__ import annotations


def format_size(size_bytes: int | None) -> str:
    """A file size for people: 812 bytes, 398.2 KB, 1.27 MB ("?" if unknown)."""
    if size_bytes is None:
        return "?"
    if size_bytes < 1024:
        return f"{size_bytes} bytes"
    if size_bytes < 1024 ** 2:
        return f"{size_bytes / 1024:.1f} KB"
    return f"{size_bytes / 1024 ** 2:.2f} MB"


def render_model_card(info: dict) -> str:
    metrics, config, export = info.get("metrics", {}), info.get("config", {}), info.get("export", {})
    model = export.get("model") or config.get("model", "model")
    form = export.get("form", "export")
    sections = [
        _summary(model, form, export),
        _how_to_call(form, export),
        _data(config),
        _recipe(config),
        _metrics(metrics, export),
        _calibration(metrics, form),
        _intended_use(),
    ]
    return "\n\n".join(section.strip() for section in sections) + "\n"


def _summary(model: str, form: str, export: dict) -> str:
    source_accuracy = export.get("source_test_accuracy")
    accuracy = export.get("test_accuracy")
    rows = ""
    if accuracy is not None and source_accuracy is not None:
        rows = f"""
| | Keras model (source) | This export ({form}) |
|-|---------------------:|---------------------:|
| Test accuracy ({export.get('test_count', 10000):,} images) | {source_accuracy:.2%} | {accuracy:.2%} |
| Size | {format_size(export.get('source_size_bytes'))} | {format_size(export.get('size_bytes'))} |

Largest difference of any probability from the Keras model's over the test set:
{export.get('max_abs_difference', float('nan')):.2g}.
"""
    return f"""
# Model card: {model} ({form})

A handwritten-digit classifier (0-9) trained on MNIST with `mnist-digits`, exported as
**{_describe_form(form)}** from `{export.get('source', 'unknown')}` on {export.get('created', 'an unknown date')}.
{rows}"""


def _describe_form(form: str) -> str:
    return {
        "savedmodel": "a TensorFlow SavedModel in TensorFlow Serving layout",
        "tflite-float32": "a TensorFlow Lite model with float32 weights",
        "tflite-float16": "a TensorFlow Lite model with float16 weights (float32 input and output)",
        "tflite-int8": "a fully integer TensorFlow Lite model (int8 weights, activations, input and output)",
    }.get(form, form)


def _how_to_call(form: str, export: dict) -> str:
    signature = export.get("signature", {"name": "serving_default", "input": "images",
                                         "output": "probabilities"})
    name, input_name, output_name = signature["name"], signature["input"], signature["output"]
    text = f"""
## How to call it

- **Input** `{input_name}`: float32, shape `[batch, 28, 28]`, values 0-1 (pixel / 255), a white
  digit on a black background, scaled into a 20x20 box and centred by its centre of mass in the
  28x28 frame -- exactly as MNIST digits were made. For a photo or scan, prepare it with
  `mnist_digits.preprocess.prepare` (or use `mnist-digits predict`), which does these steps.
- **Output** `{output_name}`: float32, shape `[batch, 10]`, the softmax probabilities of the
  digits 0-9; the answer is the index of the largest.
- Signature `{name}`. With mnist-digits, any export works like a run folder:
  `mnist-digits predict EXPORT image.png`, `mnist-digits evaluate EXPORT --out DIR`,
  `mnist-digits serve EXPORT`, or in Python `mnist_digits.load_classifier(EXPORT).predict_proba(images)`.
"""
    if form == "savedmodel":
        text += f"""
```bash
saved_model_cli show --dir {export.get('version', 1)} --tag_set serve --signature_def {name}
# TensorFlow Serving: mount the folder that holds the version folder {export.get('version', 1)}/
docker run -p 8501:8501 -v "$PWD:/models/mnist" -e MODEL_NAME=mnist tensorflow/serving
curl -d '{{"instances": [[[0.0, ...28 values...], ...28 rows...]]}}' \\
     http://localhost:8501/v1/models/mnist:predict     # -> {{"predictions": [[10 probabilities]]}}
```

```python
import tensorflow as tf
serve = tf.saved_model.load("{export.get('version', 1)}").signatures["{name}"]
probabilities = serve({input_name}=tf.constant(images, tf.float32))["{output_name}"].numpy()
```
"""
    else:
        quantize = ""
        prepare = "images.astype(np.float32)"
        if form == "tflite-int8":
            prepare = "np.round(images / scale + zero_point).clip(-128, 127).astype(np.int8)"
            quantize = """
The int8 model takes and returns int8 tensors. Quantise the input with the input tensor's
scale and zero point, and dequantise the output with the output tensor's
(`(q - zero_point) * scale`); probabilities come in steps of 1/256. mnist-digits does both.
"""
        text += f"""{quantize}
```python
import numpy as np
from ai_edge_litert.interpreter import Interpreter

interpreter = Interpreter(model_path="model.tflite")
runner = interpreter.get_signature_runner("{name}")
scale, zero_point = runner.get_input_details()["{input_name}"]["quantization"]
output = runner({input_name}={prepare})["{output_name}"]
```
"""
    return text


def _data(config: dict) -> str:
    data = config.get("data")
    if not data:
        return "## Data\n\nUnknown: the export was made from a model file without its run folder."
    checksums = "\n".join(f"| `{name}` | `{sha}` |" for name, sha in data.get("sha256", {}).items())
    return f"""
## Data

MNIST (LeCun, Cortes and Burges): 28x28 grey-level images of handwritten digits written by
US Census Bureau employees and American high-school students. The 60,000 training images are
split into {data.get('train', '?'):,} for training and the last {data.get('validation', '?'):,} for validation
(model selection and calibration); the {data.get('test', '?'):,} test images were used only to measure.
Read from `{data.get('source', '?')}`, each file checked against its SHA-256:

| File | SHA-256 |
|------|---------|
{checksums}
"""


def _recipe(config: dict) -> str:
    if not config:
        return "## Training recipe\n\nUnknown: the export was made from a model file without its run folder."
    recipe = ", ".join(f"{key} {value}" for key, value in config.get("recipe", {}).items())
    versions = ", ".join(f"{key} {value}" for key, value in config.get("versions", {}).items()
                         if key != "platform")
    return f"""
## Training recipe

- Network `{config.get('model')}`, {config.get('parameters', 0):,} parameters.
- Recipe: {recipe or 'unknown'}; seed {config.get('seed')}.
- Kept the weights of epoch {config.get('best_epoch')} (best validation accuracy); training took
  {config.get('train_seconds', 0):.1f} s{' and was interrupted' if config.get('interrupted') else ''}.
- Command: `{config.get('command', '?')}`
- Versions: {versions or 'unknown'}.
"""


def _metrics(metrics: dict, export: dict) -> str:
    if not metrics.get("per_class"):
        return "## Metrics\n\nThe source model's metrics are unknown (no metrics.json beside it)."
    splits = "\n".join(f"| {split} | {metrics[split]['accuracy']:.2%} | {metrics[split]['loss']:.4f} | "
                       f"{metrics[split]['count']:,} |"
                       for split in ("train", "validation", "test") if split in metrics)
    export_classes = export.get("per_class", {})
    rows = []
    for digit, values in metrics["per_class"].items():
        own = export_classes.get(digit)
        rows.append(f"| {digit} | {values['support']:,} | {values['precision']:.2%} | "
                    f"{values['recall']:.2%} | {values['f1']:.2%} | "
                    f"{format(own['recall'], '.2%') if own else '-'} |")
    confused = ", ".join(f"{pair['true']} read as {pair['predicted']} ({pair['count']})"
                         for pair in metrics.get("most_confused", []))
    return f"""
## Metrics

Of the Keras source model, per split:

| Split | Accuracy | Loss | Images |
|-------|---------:|-----:|-------:|
{splits}

Per digit on the test set (precision, recall and F1 of the Keras model; the last column is
this export's own recall, measured when it was exported):

| Digit | Test images | Precision | Recall | F1 | Recall of this export |
|------:|------------:|----------:|-------:|---:|----------------------:|
{chr(10).join(rows)}

Hardest digit {metrics.get('hardest_digit')}, easiest {metrics.get('easiest_digit')}.
Most often confused: {confused or 'none'}.
"""


def _calibration(metrics: dict, form: str) -> str:
    calibration = metrics.get("calibration")
    if not calibration:
        return "## Calibration\n\nNo calibration was fitted (no validation split)."
    note = (" The int8 export's probabilities come in steps of 1/256 and are renormalised to sum to 1 "
            "before scaling." if form == "tflite-int8" else "")
    return f"""
## Calibration

A temperature T = {calibration['temperature']:.3f} was fitted on the validation split
({calibration.get('method', 'temperature scaling')}); calibrated probabilities are
softmax(log p / T); T above 1 means the raw probabilities were over-confident, below 1
under-confident. Expected calibration error on the test set: {calibration['test_ece_before']:.4f}
before, {calibration['test_ece_after']:.4f} after. `mnist-digits predict` and `serve` apply it; the
exported graph returns the uncalibrated probabilities. The temperature was fitted on the Keras
model's outputs and carries over to the export, whose probabilities match them closely.{note}
"""


def _intended_use() -> str:
    return """
## Intended use and limits

- **Intended**: reading one handwritten digit 0-9 per image, prepared like MNIST; teaching,
  demonstrations, baselines, and testing a deployment path (TF Serving, mobile, microcontroller).
- **One centred digit**: not several digits, not a digit off-centre or among other marks; split
  and centre first (`mnist_digits.preprocess.prepare` centres one digit).
- **Digits only**: not letters, other characters, symbols or other scripts' numerals. The model
  always answers one of 0-9, often with high confidence, whatever it is shown.
- **Handwriting like MNIST's**: American writers of the 1990s; other styles (e.g. a crossed 7,
  a 1 with a long flag), thick markers or faint pencil are read less well than the test figures say.
- **Not for decisions about people** (grading, identity, forms processed without a human check).
- Confidence is a hint, not a guarantee; use the calibrated probabilities and reject low ones.
"""

