"""evaluation: temperature scaling and the expected calibration error, each checked against
an independent computation (SciPy's optimizer on the logits, a per-bin loop written from
the definition), not against the functions that use them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from mnist_digits.evaluation import expected_calibration_error, fit_temperature


def overconfident(count: int, temperature: float, seed: int = 0):
    """Probabilities of a classifier made overconfident on purpose: softmax(logits / T)
    with labels drawn from softmax(logits), so temperature T undoes it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (count, 10))
    labels = np.array([rng.choice(10, p=p) for p in softmax(logits, axis=1)])
    return softmax(logits / temperature, axis=1), labels


def test_fit_temperature_finds_the_minimum_of_the_log_loss():
    probabilities, labels = overconfident(4000, temperature=0.5)
    logits = np.log(probabilities)

    def negative_log_likelihood(t):
        return -log_softmax(logits / t, axis=1)[np.arange(len(labels)), labels].mean()

    expected = minimize_scalar(negative_log_likelihood, bounds=(0.01, 100), method="bounded",
                               options={"xatol": 1e-8}).x
    fitted = fit_temperature(probabilities, labels)
    assert fitted == pytest.approx(expected, rel=1e-3)
    # And it undoes the overconfidence made here: logits were halved in temperature, T = 2.
    assert fitted == pytest.approx(2.0, rel=0.1)


def test_fit_temperature_leaves_a_calibrated_classifier_alone():
    probabilities, labels = overconfident(4000, temperature=1.0, seed=1)
    assert fit_temperature(probabilities, labels) == pytest.approx(1.0, abs=0.08)


def test_expected_calibration_error_by_its_definition():
    """ECE = sum over confidence bins of (share of images) x |mean confidence - accuracy|."""
    probabilities, labels = overconfident(3000, temperature=0.6, seed=2)
    confidence, right = probabilities.max(1), probabilities.argmax(1) == labels
    expected = 0.0
    for low in np.arange(15) / 15:
        members = (confidence > low) & (confidence <= low + 1 / 15)
        if members.any():
            expected += members.mean() * abs(confidence[members].mean() - right[members].mean())
    assert expected_calibration_error(probabilities, labels) == pytest.approx(expected, abs=1e-9)


def test_expected_calibration_error_of_two_hand_made_cases():
    # Always 90% confident and always right: off by 0.1. Right 9 times in 10: calibrated.
    probabilities = np.full((10, 10), 0.1 / 9)
    probabilities[:, 3] = 0.9
    assert expected_calibration_error(probabilities, np.full(10, 3)) == pytest.approx(0.1)
    assert expected_calibration_error(probabilities, np.array([3] * 9 + [4])) == pytest.approx(0.0, abs=1e-12)
