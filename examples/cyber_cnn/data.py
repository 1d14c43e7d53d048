"""river's bundled ``Phishing`` data set as numpy arrays, for the cyber_cnn example.

1,250 web pages, each described by 9 features and labelled phishing (548) or legitimate (702).
The data file ships inside the ``river`` wheel (``river/datasets/phishing.csv.gz``), so nothing is
downloaded. Feature values are already in [0, 1] (0, 0.5 or 1), which ``ap_fixed<16,6>`` holds
exactly.
"""

from __future__ import annotations

import numpy as np

#: The 9 features, in the order of the model input.
FEATURES = (
    "empty_server_form_handler",
    "popup_window",
    "https",
    "request_from_other_domain",
    "anchor_from_other_domain",
    "is_popular",
    "long_url",
    "age_of_domain",
    "ip_in_url",
)
#: Class indices: 0 legitimate, 1 phishing.
CLASSES = ("legitimate", "phishing")


def load_phishing() -> tuple[np.ndarray, np.ndarray]:
    """All 1,250 samples: ``x`` float32 of shape (1250, 9), ``y`` int64 class indices.

    Raises:
        SystemExit: ``river`` is not installed (the message says how to install it).
    """
    try:
        from river import datasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("the cyber_cnn example needs river (its Phishing data set): pip install river, or "
                         "pip install -e '.[examples]' from the repository") from exc
    xs, ys = [], []
    for features, label in datasets.Phishing():
        xs.append([float(features[name]) for name in FEATURES])
        ys.append(int(bool(label)))
    return np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.int64)


def phishing_split(seed: int = 0, n_train: int = 1000,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle (seeded) and split: ``x_train, y_train, x_test, y_test``.

    ``x`` arrays have shape (n, 9, 1): 9 positions of one channel, the input of a Conv1D.
    """
    x, y = load_phishing()
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order][..., None], y[order]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]
