"""Classical baselines: scikit-learn classifiers on the same pixels, to show what a CNN buys.

Each is fitted on the training images (flattened, scaled to 0–1) and scored on the test
set, with its fit and prediction times.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC

from .data import Dataset, Split
from .errors import DigitsError

BASELINES: dict[str, tuple[str, Callable[[], ClassifierMixin]]] = {
    "logistic": ("logistic regression (lbfgs, 100 iterations)", lambda: LogisticRegression(max_iter=100)),
    "knn": ("k-nearest neighbours (k=3)", lambda: KNeighborsClassifier(n_neighbors=3, n_jobs=-1)),
    "svc": ("support vector machine (RBF kernel, C=5)", lambda: SVC(C=5, kernel="rbf", gamma="scale")),
    "forest": ("random forest (100 trees)", lambda: RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=0)),
}


def features(split: Split) -> np.ndarray:
    return split.images.reshape(len(split), -1).numpy().astype(np.float32) / 255


def run_baselines(data: Dataset, names: list[str] | None = None, subset: int | None = None) -> list[dict]:
    """Fit each named baseline (default: all) on the first ``subset`` training images (default: all)."""
    names = names or list(BASELINES)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise DigitsError(f"unknown baseline {unknown[0]!r}: choose from {', '.join(BASELINES)}")
    train = data.train.first(subset)
    x_train, y_train = features(train), train.labels.numpy()
    if len(y_train) < 3 or len(np.unique(y_train)) < 2:  # k-NN's k; the others need two classes
        raise DigitsError(f"--subset {len(y_train)}: the baselines need 3 training images or more, of two "
                          "classes or more")
    test = data.test_split("score the baselines on")
    x_test, y_test = features(test), test.labels.numpy()
    results = []
    for name in names:
        description, build = BASELINES[name]
        classifier = build()
        tick = time.perf_counter()
        with warnings.catch_warnings():
            # A fixed iteration budget is the point of the baseline, not a problem to report.
            warnings.simplefilter("ignore", ConvergenceWarning)
            classifier.fit(x_train, y_train)
        fit_seconds = time.perf_counter() - tick
        tick = time.perf_counter()
        predictions = classifier.predict(x_test)
        predict_seconds = time.perf_counter() - tick
        results.append({"baseline": name, "description": description, "train_images": len(y_train),
                        "accuracy": float((predictions == y_test).mean()), "fit_seconds": fit_seconds,
                        "predict_images_per_s": len(y_test) / predict_seconds})
    return results
