"""Prediction heads ``q(·|z)`` for cross-fitted conditional-entropy estimates and bounds.

A *head* maps features to a predicted label distribution. By the scoring-rule identity
(THEORY §5.0), the expected held-out score ``E S_Ω(q(Z), Y)`` of **any** head fitted
without the evaluation sample is ``>= H_Ω(Y|Z)``; better heads make it tighter. This
module fits a small family of cheap heads, selects one by an inner validation split
*inside the fitting data*, calibrates its temperature there, and scores it on held-out
folds.

Head family (``HEADS``):

``prior``
    Class frequencies, ignoring ``z``: scores ``H_Ω(Y)`` up to ``O(K/n)``. It keeps the
    selected head honest when the features carry no information.
``logistic``
    Multinomial logistic regression on standardized features, ``C`` chosen on the inner
    split from a grid; from 64 features on also on the few columns whose class means
    differ most (screened on the fitting rows).
``gaussian``
    Class-conditional Gaussians with Ledoit–Wolf shrinkage, shared or per-class covariance.
``knn``
    Neighbour label frequencies with additive smoothing, ``k`` chosen on the inner split.
``mlp``
    One hidden ReLU layer trained with Adam (NumPy), early stopping on the inner split;
    with at least one fitting row per weight also a lighter-regularized, longer-trained
    candidate, on standardized and on quantile-normalized features.
``scores``
    When the features are ``n_classes`` scores (a logits layer): their softmax, with a
    fitted temperature. The network's own prediction is then one of the candidates.
``table``
    When feature rows repeat (discrete codes, binarized or quantized features): label
    frequencies of each distinct row, shrunk towards the class frequencies by a
    pseudo-count chosen on the inner split; rows never seen in fitting get the class
    frequencies. Tried only when the fitting rows hold at most half as many distinct
    rows as samples.

``logistic``, ``gaussian`` and ``mlp`` also come on quantile-normalized features (each
coordinate mapped through its empirical CDF to a standard normal), which undoes monotone
warps of single coordinates (heavy tails, saturations). Up to 64 features ``logistic``
also comes after one step of iterative Gaussianization (``ica``, ``ica_linear``), and up
to 16 after a two-layer monotone flow fitted by maximum likelihood (``flow``): these undo
bijections of the form (monotone per coordinate ∘ linear), once or twice.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 600)
>>> z = rng.normal(size=(600, 3)) + 2.0 * y[:, None]
>>> head = select_head(z, y, n_classes=2, omega="shannon", random_state=0)
>>> head.name in HEADS
True
>>> head.predict(z[:2]).shape
(2, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from estimators.entropies import scoring_rule
from estimators.errors import ValidationError, unknown_name_error

__all__ = [
    "HEADS",
    "DEFAULT_HEADS",
    "FittedHead",
    "CrossFit",
    "select_head",
    "cross_fit",
    "mixed_scores",
    "score_range",
    "debiased_terms",
]

Predictor = Callable[[np.ndarray], np.ndarray]  # z -> log-probabilities (n, K)


@dataclass(frozen=True)
class FittedHead:
    """A fitted head: ``predict(z)`` gives probabilities of shape ``(n_samples, n_classes)``.

    Attributes
    ----------
    name : str
        Head family (a key of ``HEADS``).
    params : dict
        Hyper-parameters chosen on the inner split, and the temperature.
    inner_scores : dict
        Mean inner-validation score of every candidate (the selection record).
    """

    name: str
    params: dict[str, Any]
    log_predict: Predictor = field(repr=False)
    inner_scores: dict[str, float] = field(default_factory=dict)
    refit: Callable[[np.ndarray, np.ndarray], Predictor] | None = field(default=None, repr=False)

    def predict(self, z: np.ndarray) -> np.ndarray:
        """Predicted probabilities, rows summing to one."""
        return np.exp(self.log_predict(z))


# ----------------------------------------------------------------------------- scoring


def score_range(omega: str, n_classes: int, *, alpha: float = 1.5, eps: float = 1e-3) -> float:
    """Upper end ``B`` of the (mixed) scoring rule: every term lies in ``[0, B]``.

    ``shannon``: ``log(K/eps)`` after mixing ``q <- (1-eps) q + eps/K``;
    ``squared``/``sparsemax``/``zero_one``: 1; ``tsallis``: ``1/(alpha-1)``.
    """
    if omega == "shannon":
        return float(np.log(n_classes / eps))
    if omega == "tsallis":
        return float(1.0 / (alpha - 1.0))
    return 1.0


def mixed_scores(
    proba: np.ndarray, y: np.ndarray, *, omega: str, alpha: float = 1.5, eps: float = 1e-3
) -> np.ndarray:
    """Scoring-rule terms of ``proba`` at labels ``y``, bounded to ``[0, score_range]``.

    For ``shannon`` the prediction is first mixed with the uniform distribution
    (weight ``eps``); the mixture is itself a predictor, so its expected score is still
    ``>= H_Ω(Y|Z)``.
    """
    if omega == "shannon":
        k = proba.shape[1]
        proba = (1.0 - eps) * proba + eps / k
    s = scoring_rule(proba, y, omega=omega, alpha=alpha)
    return np.clip(s, 0.0, score_range(omega, proba.shape[1], alpha=alpha, eps=eps))


def _selection_omega(omega: str) -> str:
    # the 0-1 score is flat almost everywhere: choose heads by log loss instead
    return "shannon" if omega == "zero_one" else omega


# ----------------------------------------------------------------------------- heads


def _log_normalize(logits: np.ndarray) -> np.ndarray:
    """Return row-wise ``logits − logsumexp(logits)``.

    Plain NumPy: scipy's ``logsumexp`` dispatch costs as much as the work on a minibatch.
    """
    top = logits.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    shifted = logits - top
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _standardizer(z: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Centre and scale each column; a column constant up to rounding keeps scale 1.

    "Constant" is relative to the column's own magnitude, so the map (and every head
    built on it) is the same for ``z`` and ``c * z`` at any scale ``c``.
    """
    mu = z.mean(0)
    sd = z.std(0)
    size = np.abs(z).max(0) if len(z) else np.zeros(z.shape[1:])
    sd = np.where(sd > 64 * np.finfo(np.float64).eps * size, sd, 1.0)
    return lambda x: (x - mu) / sd


def _settled(caught: list[Any], category: type[Warning] | None = None) -> bool:
    """Whether no solver warned (``category``, by default scikit-learn's) of stopping early."""
    from sklearn.exceptions import ConvergenceWarning

    return not any(issubclass(w.category, category or ConvergenceWarning) for w in caught)


def _fast_ica(a: np.ndarray) -> tuple[Any, bool]:
    """FastICA on ``a`` (seeded), run to convergence where the components are identified.

    Returns the fitted model and whether it converged. A first pass stops early
    (``tol=1e-2``); when it settles, a second pass goes on from its rotation to
    ``tol=1e-4``. Stopped early, FastICA left mixed-sinh features of dimension 8 barely
    rotated after 1-3 iterations (logistic excess 0.16 nats against 0.03 converged,
    K = 10, 4,000 rows). Where either pass does not settle (nearly Gaussian directions,
    whose rotation the data do not identify, e.g. Gaussian mixtures), the early-stopped
    rotation is kept: iterated on, it drifts with the rounding of the input, and
    estimates would change with the units of the features.
    """
    import warnings

    from sklearn.decomposition import FastICA

    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")  # recorded, never shown: a partial rotation is a map too
        ica = FastICA(whiten="unit-variance", random_state=0, max_iter=100, tol=1e-2).fit(a)
        if _settled(caught) and np.isfinite(ica.components_).all():
            caught.clear()
            start = ica.components_ @ np.linalg.pinv(ica.whitening_)  # rows: whitened space
            fine = FastICA(whiten="unit-variance", w_init=start, max_iter=100, tol=1e-4).fit(a)
            if _settled(caught) and np.isfinite(fine.components_).all():
                return fine, True
    return ica, False


def _skew_contrast(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FastICA contrast ``G(y) = y³ / 3``: ``g = y²`` and ``g'`` averaged over samples."""
    return y * y, (2.0 * y).mean(axis=-1)


def _skewed_ica(a: np.ndarray) -> Any | None:
    """FastICA with a skewness contrast, kept only if every component it finds is skewed.

    Warps such as leaky or plain ReLUs make skewed sources that are nearly mesokurtic;
    the symmetric ``logcosh`` contrast barely identifies those, a third-moment contrast
    does: on mixtures through a two-layer leaky-ReLU network (``invnet``, K = 10,
    d = 32, 5,000 rows, seeds 0-2, after the quantile map) the Amari distance to the
    true unmixing is 0.012-0.014 against 0.060-0.066, and the logistic excess
    0.059-0.068 nats against 0.108-0.121 after ``logcosh`` (``benchmarks/ica_contrast.py``).
    Returns ``None`` unless FastICA converges and
    every component's sample skewness exceeds five standard errors (``5 √(6/n)``):
    symmetric sources have no third moment to find, and a subspace of them would be left
    unrotated.
    """
    import warnings

    from sklearn.decomposition import FastICA

    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        ica = FastICA(
            whiten="unit-variance", fun=_skew_contrast, random_state=0, max_iter=200, tol=1e-4
        ).fit(a)
    w = ica.components_
    if not (_settled(caught) and np.isfinite(w).all()):
        return None
    with np.errstate(all="ignore"):
        s = (a - ica.mean_) @ w.T
        s = (s - s.mean(0)) / s.std(0)
        skew = np.abs((s**3).mean(0))
    return ica if np.all(skew > 5.0 * np.sqrt(6.0 / len(a))) else None


class _Cauchy:
    """Cauchy source density for :func:`_ml_unmixing` (``log_lik``: minus the log-density)."""

    def log_lik(self, y: np.ndarray) -> np.ndarray:
        return np.log1p(y * y)

    def score_and_der(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = 1.0 + y * y
        return 2.0 * y / r, 2.0 * (1.0 - y * y) / (r * r)


def _ml_unmixing(centred: np.ndarray, w0: np.ndarray) -> np.ndarray:
    """Refine the unmixing ``w0`` (``s = centred @ w0.T``) by maximum likelihood.

    FastICA keeps the sources white: uncorrelated in the *sample*, whose covariance is
    far off the true one for heavy-tailed sources, so every source keeps a share of the
    others. Maximum likelihood over all invertible matrices (Picard, no orthogonality
    constraint) drops that constraint; a Cauchy source density gives a score that
    decays in the tails as heavy-tailed sources' does, and the Hessian approximation's
    eigenvalues are kept >= 1 (the Cauchy log-density is not concave: at picard's
    default 0.01 it often ran out of iterations). Mixed-sinh features, K = 2, d = 32,
    5,000 rows, seeds 0-2: logistic excess 0.15-0.16 nats after FastICA, 0.04-0.05 after
    this (0.005 on the true sources). Returns ``w0`` if the refinement does not converge.
    """
    import warnings

    from picard import picard

    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        _, w, _ = picard(
            centred.T,
            fun=_Cauchy(),
            ortho=False,
            extended=False,
            whiten=False,
            centering=False,
            w_init=w0,
            max_iter=100,
            tol=1e-3,
            lambda_min=1.0,
            check_fun=False,
        )
    if _settled(caught, UserWarning) and np.isfinite(w).all():  # picard's warning
        return np.asarray(w)
    return w0


def _class_centred(a: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    """Subtract from each row its class's mean (when every class present has 2+ rows).

    The data the unmixing is fitted on. Under a class-conditional model the sources are
    independent *within* each class, but a class-dependent shift makes them dependent in
    the pooled data, so the pooled independent components are not the sources. Centred
    per class, the cross-moments ``E[g(s_i) s_j]`` that ICA's estimating equations set to
    zero vanish at the true unmixing again (``E[s_j | y] = 0`` and independence given
    ``y``). Mixed-sinh mixtures, K = 2, d = 32, logistic on 5,000 rows, seeds 0-1: excess
    0.038 / 0.051 nats pooled, 0.000 / 0.002 centred, and still 0.044 pooled with the
    unmixing fitted on 50,000 rows (a bias, not noise). Without labels, or with a class
    of one row, the pooled data.
    """
    if y is None:
        return a
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        return a
    sums = np.zeros((len(classes), a.shape[1]))
    np.add.at(sums, inverse, a)
    return a - (sums / counts[:, None])[inverse]


def _unmixing(a: np.ndarray, first: str, y: np.ndarray | None) -> tuple[np.ndarray, bool] | None:
    """Unmixing matrix ``w`` (``s = (a − mean(a)) @ w.T``) and whether it came skewed.

    Fitted on :func:`_class_centred` data. After a quantile map the components come
    from a skewness contrast when it finds skewed sources (:func:`_skewed_ica`), from
    FastICA's ``logcosh`` otherwise. After a ``standard`` first map (linear mixtures of
    warped, often heavy-tailed sources, whose sample skewness is too noisy to test)
    converged ``logcosh`` components are refined by maximum likelihood
    (:func:`_ml_unmixing`). After a quantile map they are not: its output has no heavy
    tails to correct, and on the invertible-net warp (K = 10, d = 32) a refinement there
    changed nothing or lost up to 0.03 nats. ``None`` for degenerate data.
    """
    if len(a) <= a.shape[1] or np.linalg.matrix_rank(a - a.mean(0)) < a.shape[1]:
        return None  # no rotation to find in degenerate data
    fit_a = _class_centred(a, y)
    skewed = _skewed_ica(fit_a) if first == "quantile" else None
    if skewed is not None:
        return skewed.components_, True
    ica, converged = _fast_ica(fit_a)
    w = ica.components_
    if converged and first == "standard":
        w = _ml_unmixing(fit_a - ica.mean_, w)
    return w, False


def _ica_map(
    z: np.ndarray, first: str = "quantile", y: np.ndarray | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """Map ``first``, independent components (seeded), quantile map: see :func:`_feature_map`.

    The unmixing comes from :func:`_unmixing` (class-centred when the labels ``y`` are
    given). After a skewed unmixing one hinge column per source follows
    (:func:`_hinge_map`).
    """
    inner = _feature_map(z, first)
    a = inner(z)
    found = _unmixing(a, first, y)
    if found is None:
        return inner  # the first map alone
    w, skewed = found
    mean = a.mean(0)
    with np.errstate(all="ignore"):
        s = (a - mean) @ w.T
    if not np.isfinite(s).all():
        return inner
    outer = _feature_map(s, "quantile")
    if not skewed:
        return lambda x: outer((inner(x) - mean) @ w.T)
    hinge = _hinge_map(s)

    def skewed_map(x: np.ndarray) -> np.ndarray:
        v = (inner(x) - mean) @ w.T
        return np.hstack([outer(v), hinge(v)])

    return skewed_map


_HINGE_SCALE = 0.3  # hinge columns at 0.3x scale: L2 shrinks them ~11x harder


def _hinge_map(s: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """One-knot linear spline per source: ``0.3 min(standardized s - its median, 0)``.

    Next to the quantile-mapped sources of a skewed unmixing. A ReLU-type warp bends a
    source at one point, which the quantile map (a Gaussianizing map) does not undo when
    the source's own law is not Gaussian: on ``GM K=2 d=32 invnet`` (logistic head,
    5,000 rows, seeds 0 and 1) the excess was 0.069 / 0.090 nats on the quantile map
    alone and 0.028 / 0.036 with these columns; K = 10: 0.059 / 0.063 -> 0.057 / 0.061.
    At full scale they fit K = 2 better still (0.019 / 0.020) but cost K = 10 0.01, hence
    the shrinkage (``benchmarks/ica_contrast.py`` has the shipped map's numbers).
    """
    std = _standardizer(s)
    knot = np.median(std(s), axis=0)
    return lambda v: _HINGE_SCALE * np.minimum(std(v) - knot, 0.0)


def _flow_map(z: np.ndarray, y: np.ndarray | None) -> Callable[[np.ndarray], np.ndarray]:
    """Standardize, then the two-layer monotone flow of :mod:`estimators._flow`, standardized.

    Initialized at a smooth version of the ``ica`` map: each layer's monotone maps fit a
    quantile map of their input, the unmixing between them is :func:`_unmixing`'s
    (class-centred); then everything is refitted jointly by maximum likelihood under
    class-conditional Gaussians with a shared covariance. Without labels, one class.
    """
    from estimators._flow import fit_flow, monotone_apply, monotone_init

    labels = np.zeros(len(z), dtype=np.int64) if y is None else np.unique(y, return_inverse=True)[1]
    pre = _standardizer(z)
    a0 = np.ascontiguousarray(pre(z), dtype=np.float64)
    first = monotone_init(a0, _feature_map(a0, "quantile")(a0))
    u = monotone_apply(a0, first)
    found = _unmixing(u, "quantile", labels)
    w = np.eye(z.shape[1]) if found is None else found[0]
    mean = u.mean(0)
    with np.errstate(all="ignore"):
        s = (u - mean) @ w.T
        scale = s.std(0)
    if not (np.isfinite(s).all() and np.all(scale > 0)):
        return _ica_map(z, y=y)
    w, s = w / scale[:, None], s / scale
    second = monotone_init(s, _feature_map(s, "quantile")(s))
    flow = fit_flow(a0, labels, int(labels.max()) + 1, first, (w, -w @ mean), second)
    std = _standardizer(flow(a0))
    return lambda x: std(flow(pre(x)))


def _feature_map(
    z: np.ndarray, features: str, y: np.ndarray | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """Return the feature map ``features`` fitted on ``z`` (and labels ``y``, for ``ica*``).

    ``standard``: centre and scale each feature; ``quantile``: map each feature through
    its empirical CDF to a standard normal (undoes any monotone warp of a coordinate,
    e.g. heavy tails or saturations), then standardize; ``ica``: ``quantile``, then the
    independent components of the result (FastICA), each mapped through its CDF again:
    one step of iterative Gaussianization, which also undoes a monotone warp of unknown
    linear combinations of the coordinates; ``ica_linear``: the same on standardized
    features (no quantile map first), for features that are linear mixtures of warped
    sources, whose linear structure a quantile map of each coordinate would break. With
    labels, the ``ica*`` unmixings are fitted on class-centred data
    (:func:`_class_centred`). ``flow``: a smooth version of ``ica`` refitted jointly by
    maximum likelihood under class-conditional Gaussians (:func:`_flow_map`).
    """
    if features == "standard":
        return _standardizer(z)
    if features == "none":
        return lambda x: x
    if features == "ica":
        return _ica_map(z, y=y)
    if features == "ica_linear":
        return _ica_map(z, first="standard", y=y)
    if features == "flow":
        return _flow_map(z, y)
    # standardized first: the quantile map is invariant to that (an increasing affine map
    # of each column) except for its absolute tolerance at the extreme knots, which would
    # otherwise send every value of a column of scale <~ 1e-7 to a bound
    pre = _standardizer(z)
    zp = pre(z)
    qmap = _quantile_map(zp)
    std = _standardizer(qmap(zp))
    return lambda x: std(qmap(pre(x)))


_BOUNDS = 1e-7  # probabilities kept inside [_BOUNDS, 1 - _BOUNDS] before the normal ppf


def _quantile_map(z: np.ndarray, n_quantiles: int = 1000) -> Callable[[np.ndarray], np.ndarray]:
    """Map each column through its empirical CDF (``n_quantiles`` knots) to a standard normal.

    The same map as scikit-learn's ``QuantileTransformer(output_distribution="normal")``
    fitted on all rows (linear-interpolated percentiles; the CDF interpolated upwards and
    downwards and averaged, so tied values share a level; points beyond the extreme knots
    go to the bounds), but the knots come from one sort per column instead of a selection
    per knot (a 4,000 × 32 fit: 0.36 s against 0.01 s; fit and transform: 0.25 s against 0.035 s).
    """
    from scipy import stats

    n = len(z)
    refs = np.linspace(0.0, 1.0, max(1, min(n_quantiles, n)))
    q = (refs * 100.0) / 100.0  # the levels numpy's percentile works with
    pos = (n - 1) * q
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    t = (pos - lo)[:, None]
    zs = np.sort(z, axis=0)
    a, b = zs[lo], zs[hi]
    diff = b - a
    knots = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)  # numpy's lerp
    clip = stats.norm.ppf([_BOUNDS - np.spacing(1), 1 - (_BOUNDS - np.spacing(1))])

    def transform(x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape, dtype=np.float64)
        for j in range(x.shape[1]):
            col, kn = x[:, j], knots[:, j]
            u = 0.5 * (np.interp(col, kn, refs) - np.interp(-col, -kn[::-1], -refs[::-1]))
            u[col + _BOUNDS > kn[-1]] = 1.0
            u[col - _BOUNDS < kn[0]] = 0.0
            out[:, j] = u
        with np.errstate(divide="ignore"):
            return np.clip(stats.norm.ppf(out), clip[0], clip[1])

    return transform


def _class_prior(y: np.ndarray, k: int) -> np.ndarray:
    """Class frequencies with add-½ smoothing (no class gets probability 0)."""
    return (np.bincount(y, minlength=k) + 0.5) / (len(y) + 0.5 * k)


def _fit_prior(z: np.ndarray, y: np.ndarray, k: int, **_: Any) -> Predictor:
    logp = np.log(_class_prior(y, k))
    return lambda x: np.broadcast_to(logp, (len(x), k)).copy()


def _fit_scores(z: np.ndarray, y: np.ndarray, k: int, **_: Any) -> Predictor:
    """Read the features as class scores (a logits layer): ``q = softmax(z)``.

    Nothing is fitted but the temperature. Applies only when ``n_features == n_classes``.
    """
    return lambda x: _log_normalize(np.asarray(x, dtype=np.float64))


def _as_rows(x: np.ndarray) -> np.ndarray:
    """One opaque value per row (its bytes; ``-0.0`` made ``0.0``), for exact matching."""
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float64) + 0.0)
    return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()


def row_encoder(data: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Code each row of ``data`` by its index among the distinct rows.

    Returns the codes and the encoder of new rows (``-1`` for a row equal to no row of
    ``data``).
    """
    uniq, codes = np.unique(_as_rows(data), return_inverse=True)

    def encode(x: np.ndarray) -> np.ndarray:
        rows = _as_rows(x)
        pos = np.minimum(np.searchsorted(uniq, rows), len(uniq) - 1)
        return np.where(uniq[pos] == rows, pos, -1).astype(np.int64)

    return codes.ravel().astype(np.int64), encode


def _fit_table(
    z: np.ndarray, y: np.ndarray, k: int, *, pseudo_count: float = 1.0, **_: Any
) -> Predictor:
    """Label frequencies per distinct row, shrunk towards the class frequencies.

    ``q(y|c) = (n_cy + a π_y) / (n_c + a)`` with ``π`` the (add-½) class frequencies and
    ``a = pseudo_count``; rows never seen in ``z`` get ``π``.
    """
    prior = _class_prior(y, k)
    codes, encode = row_encoder(z)
    counts = np.zeros((int(codes.max()) + 1, k))
    np.add.at(counts, (codes, y), 1.0)
    post = np.log((counts + pseudo_count * prior) / (counts.sum(1, keepdims=True) + pseudo_count))

    def predict(x: np.ndarray) -> np.ndarray:
        c = encode(x)
        out = np.broadcast_to(np.log(prior), (len(x), k)).copy()
        out[c >= 0] = post[c[c >= 0]]
        return out

    return predict


def screened_columns(z: np.ndarray, y: np.ndarray, k: int, m: int) -> np.ndarray:
    """Return the ``m`` columns of ``z`` whose class means differ most (ANOVA ``F`` ranking).

    Score per column: between-class over within-class sum of squares (invariant to each
    column's unit and origin); a column that separates the classes exactly ranks first, a
    constant one last. Ties keep the column order.
    """
    zc = z - z.mean(0)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    sums = np.eye(k)[y].T @ zc
    present = counts > 0
    ssb = (sums[present] ** 2 / counts[present, None]).sum(0)
    sst = (zc * zc).sum(0)
    ssw = np.maximum(sst - ssb, 0.0)
    scale = np.abs(z).max(0)
    constant = np.ptp(z, axis=0) <= 64 * np.finfo(np.float64).eps * scale
    exact = ~constant & (ssw <= 64 * np.finfo(np.float64).eps * sst)
    ratio = np.full(z.shape[1], -1.0)
    ok = ~constant & ~exact
    ratio[ok] = ssb[ok] / ssw[ok]
    ratio[exact] = np.inf
    return np.sort(np.argsort(-ratio, kind="stable")[:m])


def _fit_logistic(
    z: np.ndarray, y: np.ndarray, k: int, *, screen: int | None = None, **hp: Any
) -> Predictor:
    """Fit a multinomial logistic regression, on all columns or on a screened few.

    With ``screen=m`` only the ``m`` columns that :func:`screened_columns` ranks first on
    ``(z, y)`` enter (sparse signals among many features).
    """
    if screen is None or screen >= z.shape[1]:
        return _fit_logistic_all(z, y, k, **hp)
    cols = screened_columns(z, y, k, int(screen))
    pred = _fit_logistic_all(z[:, cols], y, k, **hp)
    return lambda a: pred(np.asarray(a)[:, cols])


def _fit_logistic_all(
    z: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    C: float,
    random_state: int,
    features: str = "standard",
    max_iter: int = 50,
    **_: Any,
) -> Predictor:
    """Fit a multinomial logistic regression by L-BFGS on the exact gradient.

    The objective is ``min_W  C Σ_i CE_i + ½‖W‖²`` (scikit-learn's convention; the
    intercept is not penalized).

    Classes absent from ``y`` get a Laplace-sized share of the probability.
    """
    from scipy.optimize import minimize

    std = _feature_map(z, features, y)
    present = np.unique(y)
    if len(present) < 2:
        return _fit_prior(z, y, k)
    x = np.hstack([std(z), np.ones((len(z), 1))])
    n, d1 = x.shape
    kp = len(present)
    onehot = (y[:, None] == present[None, :]).astype(np.float64)
    penal = np.ones((d1, 1))
    penal[-1] = 0.0  # no penalty on the intercept

    def loss_grad(w_flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = w_flat.reshape(d1, kp)
        logits = x @ w
        # centred, and floored at -60 so exp() never makes subnormal numbers (which slow
        # every later operation tenfold on separable features); e^-60 is 1e-26
        logits = np.maximum(logits - logits.max(1, keepdims=True), -60.0)
        logq = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        loss = -float(np.sum(onehot * logq)) / n + float(np.sum(penal * w * w)) / (2 * C * n)
        grad = x.T @ (np.exp(logq) - onehot) / n + penal * w / (C * n)
        return loss, grad.ravel()

    res = minimize(
        loss_grad,
        np.zeros(d1 * kp),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": 1e-5},
    )
    w_hat = res.x.reshape(d1, kp)
    floor = np.log(0.5 / (len(y) + 0.5 * k))  # absent classes: a Laplace-sized share

    def predict(a: np.ndarray) -> np.ndarray:
        out = np.full((len(a), k), floor)
        xa = np.hstack([std(a), np.ones((len(a), 1))])
        out[:, present] = _log_normalize(xa @ w_hat)
        return _log_normalize(out)

    return predict


def jittered(cov: np.ndarray) -> np.ndarray:
    """``cov`` plus a jitter relative to its own scale, so Cholesky never fails.

    Relative, not absolute: an absolute one would swamp features of scale <~ 1e-6, and
    the Gaussian heads and method must not depend on the units of the features.
    """
    d = cov.shape[0]
    scale = np.trace(cov) / d
    return cov + (1e-9 * scale if scale > 0 else 1.0) * np.eye(d)


def _fit_gaussian(
    z: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    covariance: str,
    features: str = "standard",
    **_: Any,
) -> Predictor:
    from sklearn.covariance import ledoit_wolf

    if features != "none":
        # the same map the candidate was scored on in ``select_head``: Ledoit–Wolf shrinks
        # towards a multiple of the identity, which is not scale-equivariant per column
        fmap = _feature_map(z, features, y)
        inner = _fit_gaussian(fmap(z), y, k, covariance=covariance, features="none")
        return lambda x: inner(fmap(x))

    counts = np.bincount(y, minlength=k)
    classes = np.flatnonzero(counts >= 2)
    if len(classes) < 2:  # too few samples per class to fit Gaussians
        return _fit_prior(z, y, k)
    means = np.stack([z[y == c].mean(0) for c in classes])

    def shrunk(r: np.ndarray) -> np.ndarray:
        cov, _ = ledoit_wolf(r, assume_centered=True)
        return jittered(cov)

    if covariance == "shared":
        resid = np.concatenate([z[y == c] - means[i] for i, c in enumerate(classes)])
        chols = [np.linalg.cholesky(shrunk(resid))] * len(classes)
    else:
        chols = [np.linalg.cholesky(shrunk(z[y == c] - means[i])) for i, c in enumerate(classes)]
    logprior = np.log((counts[classes] + 0.5) / (len(y) + 0.5 * k))
    floor = np.log(0.5 / (len(y) + 0.5 * k))

    def predict(x: np.ndarray) -> np.ndarray:
        ll = np.full((len(x), k), -np.inf)
        for i, c in enumerate(classes):
            sol = np.linalg.solve(chols[i], (x - means[i]).T)
            logdet = 2.0 * np.sum(np.log(np.diag(chols[i])))
            ll[:, c] = -0.5 * np.sum(sol * sol, 0) - 0.5 * logdet + logprior[i]
        post = np.exp(_log_normalize(ll))
        # keep every class possible: a Laplace-sized floor, then renormalize
        post = np.maximum(post, np.exp(floor))
        return np.log(post / post.sum(1, keepdims=True))

    return predict


def _fit_knn(
    z: np.ndarray, y: np.ndarray, k: int, *, n_neighbors: int, smoothing: float = 0.5, **_: Any
) -> Predictor:
    from estimators.neighbors import knn_search

    std = _standardizer(z)
    zs = std(z)
    nn = min(n_neighbors, len(y))

    def predict(x: np.ndarray) -> np.ndarray:
        _, idx = knn_search(std(x), zs, nn)
        counts = np.zeros((len(x), k))
        np.add.at(counts, (np.repeat(np.arange(len(x)), nn), y[idx].ravel()), 1.0)
        return np.log((counts + smoothing) / (nn + smoothing * k))

    return predict


def _fit_mlp(
    z: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    random_state: int,
    features: str = "standard",
    hidden: int = 128,
    epochs: int = 40,
    weight_decay: float = 1e-2,
    lr: float = 2e-3,
    batch_size: int = 256,
    z_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    patience: int = 5,
    activation: str = "relu",
    record: dict[str, Any] | None = None,
    **_: Any,
) -> Predictor:
    """One-hidden-layer ReLU network, Adam, cross-entropy; early stopping on ``z_val``."""
    gen = np.random.default_rng(random_state)
    std = _feature_map(z, features, y)
    x = std(z)
    n, d = x.shape
    params = [
        gen.normal(size=(d, hidden)) * np.sqrt(2.0 / d),
        np.zeros(hidden),
        gen.normal(size=(hidden, k)) * np.sqrt(1.0 / hidden),
        np.log(_class_prior(y, k)),
    ]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    onehot = np.eye(k)[y]

    def forward(p: list[np.ndarray], a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pre = a @ p[0] + p[1]
        h = np.tanh(pre) if activation == "tanh" else np.maximum(pre, 0.0)
        return h, _log_normalize(h @ p[2] + p[3])

    best = (np.inf, [q.copy() for q in params], 0)
    xv = std(z_val) if z_val is not None else None
    step, bad = 0, 0
    for epoch in range(epochs):
        order = gen.permutation(n)
        for start in range(0, n, batch_size):
            b = order[start : start + batch_size]
            h, logq = forward(params, x[b])
            g_out = (np.exp(logq) - onehot[b]) / len(b)
            g_h = (g_out @ params[2].T) * ((1.0 - h * h) if activation == "tanh" else (h > 0))
            grads = [x[b].T @ g_h, g_h.sum(0), h.T @ g_out, g_out.sum(0)]
            grads[0] += weight_decay * params[0]
            grads[2] += weight_decay * params[2]
            step += 1
            for i, g in enumerate(grads):
                m1[i] = 0.9 * m1[i] + 0.1 * g
                m2[i] = 0.999 * m2[i] + 0.001 * g * g
                mh = m1[i] / (1 - 0.9**step)
                vh = m2[i] / (1 - 0.999**step)
                params[i] -= lr * mh / (np.sqrt(vh) + 1e-8)
        if xv is not None and y_val is not None:
            lv = forward(params, xv)[1]
            val = float(-lv[np.arange(len(y_val)), y_val].mean())
            if val < best[0] - 1e-5:
                best, bad = (val, [q.copy() for q in params], epoch + 1), 0
            else:
                bad += 1
                if bad >= patience:
                    break
    final = best[1] if xv is not None else params
    if record is not None:
        record["epochs"] = best[2] if xv is not None else epochs
    return lambda a: forward(final, std(a))[1]


HEADS: dict[str, Callable[..., Predictor]] = {
    "prior": _fit_prior,
    "scores": _fit_scores,
    "logistic": _fit_logistic,
    "gaussian": _fit_gaussian,
    "knn": _fit_knn,
    "mlp": _fit_mlp,
    "table": _fit_table,
}
DEFAULT_HEADS: tuple[str, ...] = (
    "prior",
    "scores",
    "table",
    "logistic",
    "gaussian",
    "knn",
    "mlp",
)


# the flow map costs ~0.6 s per fit at d = 8 (4,000 rows), several at d = 32, where it
# gains little over ``ica`` (``benchmarks/flow_map.py``)
_FLOW_MAX_FEATURES = 16
_LONG_MLP: dict[str, Any] = {"weight_decay": 1e-3, "epochs": 300, "patience": 10}


def _candidates(
    heads: Sequence[str],
    n_fit: int,
    n_features: int,
    n_classes: int = 0,
    n_distinct: int | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Return the grid of (head, hyper-parameters) tried on the inner split.

    ``n_distinct`` (distinct rows among the ``n_fit``; all distinct when ``None``) gates
    the ``table`` head: it needs rows that repeat.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    for name in heads:
        if name not in HEADS:
            raise unknown_name_error("heads", name, HEADS)
        if name == "logistic":
            out += [("logistic", {"C": c, "features": "standard"}) for c in (0.1, 1.0)]
            out += [("logistic", {"C": 1.0, "features": "quantile"})]
            if 2 <= n_features <= 64 and n_fit >= max(100, 10 * n_features):
                out += [("logistic", {"C": 1.0, "features": f}) for f in ("ica", "ica_linear")]
            if 2 <= n_features <= _FLOW_MAX_FEATURES and n_fit >= max(400, 25 * n_features):
                out += [("logistic", {"C": 1.0, "features": "flow"})]
            if n_features >= 64:  # a few informative columns among many
                screened = [{"C": 1.0, "features": "standard", "screen": m} for m in (8, 32)]
                out += [("logistic", hp) for hp in screened]
        elif name == "gaussian":
            for feats in ("standard", "quantile"):
                if n_features <= 2048:
                    out += [("gaussian", {"covariance": "shared", "features": feats})]
                if n_features <= 256:
                    out += [("gaussian", {"covariance": "per_class", "features": feats})]
        elif name == "mlp":
            out += [("mlp", {"features": "standard"})]
            # lighter weight decay, longer budget, once there is >= 1 row per weight: sharp
            # posteriors that the default stops underfitted (0.147 -> 0.070 nats, d = 6, K = 4)
            # and on quantile-normalized features: heavy tails (Cauchy location mixture,
            # d = 4, K = 3, 2,000 rows: excess 0.04 against 0.48 on standardized features)
            if n_fit >= 128 * (n_features + n_classes):
                out += [("mlp", {"features": f, **_LONG_MLP}) for f in ("standard", "quantile")]
        elif name == "scores":
            if n_features == n_classes:
                out += [("scores", {})]
        elif name == "knn":
            out += [("knn", {"n_neighbors": k}) for k in (10, 30, 100) if k <= n_fit // 2]
        elif name == "table":
            if n_distinct is not None and 2 * n_distinct <= n_fit:
                out += [("table", {"pseudo_count": a * n_classes}) for a in (0.1, 0.5, 2.0)]
        else:
            out += [(name, {})]
    return out


# ----------------------------------------------------------------------------- selection


def _temperature(
    logp: np.ndarray, y: np.ndarray, omega: str, alpha: float, eps: float
) -> tuple[float, float]:
    """Temperature minimizing the mean (mixed) score on a validation split."""

    def loss(log_t: float) -> float:
        q = np.exp(_log_normalize(logp / np.exp(log_t)))
        return float(mixed_scores(q, y, omega=omega, alpha=alpha, eps=eps).mean())

    res = minimize_scalar(loss, bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-3})
    base = loss(0.0)
    if res.fun < base:
        return float(np.exp(res.x)), float(res.fun)
    return 1.0, base


def _inner_split(n: int, gen: np.random.Generator, fraction: float) -> tuple[np.ndarray, ...]:
    perm = gen.permutation(n)
    n_val = max(1, int(round(fraction * n)))
    return perm[n_val:], perm[:n_val]


def _score_candidate(
    name: str,
    hp: dict[str, Any],
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    n_classes: int,
    seed: int,
    sel_omega: str,
    alpha: float,
    eps: float,
    calibrate: bool,
) -> tuple[float, dict[str, Any], float]:
    """Fit one candidate on the inner training part and score it on the inner validation part.

    Returns its (calibrated) validation score, its hyperparameters (the MLP's
    early-stopped epoch count included) and temperature.
    """
    z_tr, z_va, y_tr, y_va = data
    record: dict[str, Any] = {}
    extra = {"z_val": z_va, "y_val": y_va, "record": record} if name == "mlp" else {}
    fit_hp = {**hp, "features": "none"} if "features" in hp else hp
    pred = HEADS[name](z_tr, y_tr, n_classes, random_state=seed, **fit_hp, **extra)
    logp = pred(z_va)
    if calibrate and name != "prior":
        temp, val = _temperature(logp, y_va, sel_omega, alpha, eps)
    else:
        temp = 1.0
        val = float(mixed_scores(np.exp(logp), y_va, omega=sel_omega, alpha=alpha, eps=eps).mean())
    hp = {**hp, **({"epochs": max(1, record["epochs"])} if name == "mlp" else {})}
    return val, hp, temp


def at_size(name: str, hp: dict[str, Any], ratio: float) -> dict[str, Any]:
    """Hyper-parameters of head ``name`` for a refit on ``ratio`` times the rows.

    Count-like smoothing scales with the sample: the ``knn`` head's neighbours and the
    ``table`` head's pseudo-count, so a refit on half the rows smooths over the same
    region of feature space (same bias, twice the variance). The learning-curve
    correction (:func:`debiased_terms`) then removes the variance instead of reading the
    wider neighbourhood's extra bias as excess risk (with ``k`` fixed it overshot, down
    to 0.07 nats *below* ``H(Y|Z)`` on discrete codes). Other heads' penalties already
    vanish as ``1/n`` and are kept.
    """
    if name == "knn":
        return {**hp, "n_neighbors": max(1, int(round(hp["n_neighbors"] * ratio)))}
    if name == "table":
        return {**hp, "pseudo_count": hp["pseudo_count"] * ratio}
    return hp


def _no_candidate(heads: Any, n_features: int, n_classes: int, n_fit: int) -> ValidationError:
    return ValidationError(
        f"heads={tuple(heads)!r} has no candidate for these features ({n_features} "
        f"columns, {n_classes} classes, {n_fit} fitting rows): 'scores' needs features "
        "that are class scores (one column per class), 'knn' at least 20 rows, 'table' "
        "discrete codes; add a general head such as 'logistic'"
    )


def select_head(
    z: np.ndarray,
    y: np.ndarray,
    *,
    n_classes: int,
    omega: str = "shannon",
    alpha: float = 1.5,
    eps: float = 1e-3,
    heads: Sequence[str] = DEFAULT_HEADS,
    val_fraction: float = 0.2,
    calibrate: bool = True,
    refit: bool = True,
    random_state: Any = None,
) -> FittedHead:
    """Fit every candidate on an inner split of ``(z, y)``, keep the best, refit it.

    Parameters
    ----------
    z : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    n_classes : int
    omega : str
        Scoring rule used for selection and calibration (``zero_one`` selects by log loss).
    alpha, eps : float
        Tsallis order; mixing weight of the uniform distribution (``shannon``).
    heads : sequence of str
        Head families to try (keys of ``HEADS``).
    val_fraction : float
        Share of ``(z, y)`` held out for selection and temperature calibration.
    calibrate : bool
        Fit a temperature on the inner split.
    refit : bool
        Refit the chosen head on all of ``(z, y)`` (the temperature is kept).
    random_state : None, int or Generator

    Returns
    -------
    FittedHead
    """
    gen = np.random.default_rng(random_state)
    sel_omega = _selection_omega(omega)
    tr, va = _inner_split(len(y), gen, val_fraction)
    seed = int(gen.integers(2**31 - 1))
    scores: dict[str, float] = {}
    best: tuple[float, str, dict[str, Any], float] | None = None
    mapped: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # feature maps fitted once
    n_distinct = len(np.unique(_as_rows(z[tr]))) if "table" in heads else None
    for name, hp in _candidates(heads, len(tr), z.shape[1], n_classes, n_distinct):
        feats = hp.get("features", "none")  # heads without a map take the features as given
        if feats not in mapped:
            fmap = _feature_map(z[tr], feats, y[tr])
            mapped[feats] = (fmap(z[tr]), fmap(z[va]))
        data = (*mapped[feats], y[tr], y[va])
        val, hp, temp = _score_candidate(
            name, hp, data, n_classes, seed, sel_omega, alpha, eps, calibrate
        )
        scores[name + "".join(f" {k}={v}" for k, v in hp.items())] = val
        if best is None or val < best[0]:
            best = (val, name, hp, temp)
    if best is None:
        raise _no_candidate(heads, z.shape[1], n_classes, len(tr))
    _, name, hp, temp = best

    n_ref = len(y) if refit else len(tr)

    def fit_same(z_new: np.ndarray, y_new: np.ndarray) -> Predictor:
        """Return the chosen head and temperature, fitted on other data (same smoothing scale)."""
        hp_new = at_size(name, hp, len(y_new) / n_ref)
        pred = HEADS[name](z_new, y_new, n_classes, random_state=seed, **hp_new)
        return lambda x: _log_normalize(pred(x) / temp)

    return FittedHead(
        name=name,
        params={**hp, "temperature": temp},
        log_predict=fit_same(z, y) if refit else fit_same(z[tr], y[tr]),
        inner_scores=scores,
        refit=fit_same,
    )


@dataclass(frozen=True)
class CrossFit:
    """Held-out predictions of cross-fitted heads.

    Attributes
    ----------
    scores : ndarray of shape (n_samples,)
        Bounded scoring-rule term of each sample under the head fitted without its fold.
    plugin : ndarray of shape (n_samples,)
        ``H_Ω(q(·|z_i))`` of the same predictions.
    fold : ndarray of shape (n_samples,)
        Fold index of each sample.
    heads : tuple of FittedHead
        The head used for each fold.
    half_scores : ndarray of shape (n_samples,) or None
        With ``learning_curve=True``: the same terms under the chosen head refitted on a
        random half of the fitting folds (one point of the learning curve).
    """

    scores: np.ndarray
    plugin: np.ndarray
    fold: np.ndarray
    heads: tuple[FittedHead, ...]
    half_scores: np.ndarray | None = None


def make_folds(n: int, n_folds: int, gen: np.random.Generator) -> np.ndarray:
    """Fold index per sample: a random permutation dealt round-robin (sizes differ by <= 1).

    The assignment depends on nothing but ``n`` and ``gen``, never on the labels: then
    each evaluation fold is an i.i.d. sample independent of the data its head was fitted
    on, so its expected score is ``>= H_Ω(Y|Z)`` (THEORY §5.0). Label-stratified folds
    break that premise: a fold's class counts then mirror the fitting folds' counts, and
    a head that learned those proportions scores below ``H_Ω(Y|Z)`` in expectation (the
    class-prior head by ``≈ (K − 1) / 2n``; tested in ``tests/test_certified.py``).
    """
    fold = np.empty(n, dtype=np.int64)
    fold[gen.permutation(n)] = (np.arange(n) + int(gen.integers(n_folds))) % n_folds
    return fold


def cross_fit(
    z: np.ndarray,
    y: np.ndarray,
    *,
    n_classes: int,
    omega: str = "shannon",
    alpha: float = 1.5,
    eps: float = 1e-3,
    n_folds: int = 2,
    heads: Sequence[str] = DEFAULT_HEADS,
    learning_curve: bool = False,
    random_state: Any = None,
) -> CrossFit:
    """Score each fold with a head selected and fitted on the other folds.

    With ``learning_curve=True`` the chosen head is also refitted on a random half of the
    fitting folds and scored on the same held-out fold (``CrossFit.half_scores``).
    """
    from threadpoolctl import threadpool_limits

    # the heads' matrices are small: one BLAS thread is as fast, and avoids threads of
    # BLAS and torch spinning against each other on few cores (2x slower in evaluate)
    with threadpool_limits(limits=1, user_api="blas"):
        return _cross_fit(
            z,
            y,
            n_classes=n_classes,
            omega=omega,
            alpha=alpha,
            eps=eps,
            n_folds=n_folds,
            heads=heads,
            learning_curve=learning_curve,
            random_state=random_state,
        )


def _cross_fit(
    z: np.ndarray,
    y: np.ndarray,
    *,
    n_classes: int,
    omega: str,
    alpha: float,
    eps: float,
    n_folds: int,
    heads: Sequence[str],
    learning_curve: bool,
    random_state: Any,
) -> CrossFit:
    from estimators.entropies import generalized_entropy

    gen = np.random.default_rng(random_state)
    fold = make_folds(len(y), n_folds, gen)
    # drawn whether or not it is used, so the folds' heads do not depend on learning_curve
    half_gen = np.random.default_rng(int(gen.integers(2**63 - 1)))
    scores = np.empty(len(y))
    plugin = np.empty(len(y))
    half = np.empty(len(y)) if learning_curve else None
    fitted = []
    for f in range(n_folds):
        ev, fit = fold == f, fold != f
        head = select_head(
            z[fit],
            y[fit],
            n_classes=n_classes,
            omega=omega,
            alpha=alpha,
            eps=eps,
            heads=heads,
            random_state=gen,
        )
        proba = head.predict(z[ev])
        scores[ev] = mixed_scores(proba, y[ev], omega=omega, alpha=alpha, eps=eps)
        mixed = (1 - eps) * proba + eps / n_classes if omega == "shannon" else proba
        plugin[ev] = generalized_entropy(mixed, omega=omega, alpha=alpha)
        if half is not None and head.refit is not None:
            idx = np.flatnonzero(fit)
            sub = idx[make_folds(len(idx), 2, half_gen) == 0]
            proba_half = np.exp(head.refit(z[sub], y[sub])(z[ev]))
            half[ev] = mixed_scores(proba_half, y[ev], omega=omega, alpha=alpha, eps=eps)
        fitted.append(head)
    return CrossFit(scores=scores, plugin=plugin, fold=fold, heads=tuple(fitted), half_scores=half)


#: Heads whose excess risk falls as ``1/n`` near their optimum (a fixed, finite number of
#: parameters fitted by likelihood), the model behind the learning-curve correction. A
#: k-nearest-neighbour head is not one: its excess risk is set by its neighbourhoods,
#: which shrink with ``n`` at a rate that depends on the dimension, and on labels
#: independent of high-dimensional features ``2 S_n − S_{n/2}`` then lands below the
#: truth with an interval that excludes it.
LEARNING_CURVE_HEADS: frozenset[str] = frozenset(
    {"prior", "scores", "table", "logistic", "gaussian", "mlp"}
)


def debiased_terms(fit: CrossFit, *, max_relative: float = 0.5) -> tuple[np.ndarray, bool]:
    """Per-sample terms ``2 S_n − S_{n/2}`` (two-point learning curve), when it applies.

    Richardson extrapolation removes an excess risk that falls as ``1/n``, the rate of
    the parametric heads in :data:`LEARNING_CURVE_HEADS`. When a fold's head is not one
    of them (a kNN head), or the half-size head is much worse than the full one (the
    correction exceeds ``max_relative`` times the debiased value: too few samples per
    parameter for that regime), extrapolating would overshoot: the plain held-out terms
    are returned instead, and the second value is ``False``.
    """
    if fit.half_scores is None:
        return fit.scores, False
    if any(h.name not in LEARNING_CURVE_HEADS for h in fit.heads):
        return fit.scores, False
    correction = float(np.mean(fit.half_scores - fit.scores))
    debiased = float(np.mean(fit.scores)) - correction
    if correction <= 0.0 or correction <= max_relative * max(debiased, 0.0):
        return 2.0 * fit.scores - fit.half_scores, True
    return fit.scores, False


def head_variance(fit: CrossFit, applied: bool) -> float:
    """Variance of the debiased ``auto`` estimate that resampling its terms misses.

    The bootstrap of the per-sample terms treats the fitted heads as fixed. They are
    not: each head is a function of the other fold, so the estimate also moves with the
    heads' own excess risk, and each fold's sampling error is correlated with the other
    fold's head. Under the model behind the learning-curve correction (a parametric
    head near its optimum, excess risk ``≈ p_eff / 2m`` on ``m`` fitting rows) both
    parts are second-order terms in the mean gradients of the folds and their halves;
    for two folds of ``m`` rows they add up to ``2.5 p_eff / m²`` (``1.5`` from the
    cross-fold covariance, ``1`` from the heads' excess), and the measured correction
    ``c = S_{m/2} − S_m ≈ p_eff / 2m`` gives ``p_eff``. Hence ``5 c / m``, i.e.
    ``10 c / n``, with the correction floored at 0; 0 when the correction was not
    applied (the plain scores are then an upper estimate whose bias dwarfs this).
    ``benchmarks/auto_variance.py`` measures both parts and the prediction.
    """
    if not applied or fit.half_scores is None:
        return 0.0
    n_folds = len(fit.heads)
    n_fit = len(fit.scores) * (n_folds - 1) / n_folds  # fitting rows per fold
    correction = max(float(np.mean(fit.half_scores - fit.scores)), 0.0)
    return 5.0 * correction / n_fit
