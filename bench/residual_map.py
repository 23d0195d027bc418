"""What a linear smoother does to noise: residuals r = M e of noise e around a fitted trend are smaller
than e and look anti-correlated even when e is white. The noise model needs the noise itself, so it asks
this: for AR(1) noise with lag-1 correlation phi (unit variance), what sum of squared residuals and what
lag-1 correlation within curves do we expect? Inverting the second gives phi from the recorded residuals
(a method of moments), the first then gives the noise variance.

Every smoother used here is, up to an orthogonal change of basis, diagonal:
  M = (U (x) B) diag(gain) (U (x) B)^T
with U orthogonal over curves and B orthogonal over epochs (the Kronecker GP: U, B its eigenvectors and
gain = noise / (lambda + noise); a per-curve polynomial or mean: U = I, B the eigenvectors of I - H and
gain 0 or 1). Since the AR(1) covariance is I (x) R(phi), U drops out and each moment is a sum over curves
of g_i^T (Q o A^T) g_i with Q = B^T R B and A = B^T E B for the epoch pairs E counted: O(n T^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def ar1_correlation(epochs: int, phi: float) -> np.ndarray:
    lags = np.abs(np.subtract.outer(np.arange(epochs), np.arange(epochs)))
    return phi**lags


@dataclass(frozen=True)
class ResidualMap:
    basis: np.ndarray  # (T, T) orthogonal: B
    gain: np.ndarray  # (n, T): the diagonal of M in the rotated basis, one row per (rotated) curve

    @classmethod
    def per_curve(cls, residual_maker: np.ndarray, curves: int) -> ResidualMap:
        """The same symmetric residual maker I - H applied to each of `curves` curves."""
        gains, basis = np.linalg.eigh(residual_maker)
        return cls(basis, np.tile(gains, (curves, 1)))

    def _sum(self, Q: np.ndarray, pairs: np.ndarray) -> float:
        A = self.basis.T @ pairs @ self.basis
        return float(np.einsum("it,ts,is->", self.gain, Q * A.T, self.gain))

    def moments(self, phi: float) -> tuple[float, float]:
        """(E[sum of squared residuals], E[lag-1 correlation of residuals within curves]) for AR(1)
        noise of unit variance and lag-1 correlation phi."""
        T = len(self.basis)
        Q = self.basis.T @ ar1_correlation(T, phi) @ self.basis
        total = self._sum(Q, np.eye(T))
        lag = self._sum(Q, np.eye(T, k=-1))  # E[t + 1, t] = 1: pairs (t, t + 1)
        head = self._sum(Q, np.diag((np.arange(T) < T - 1).astype(float)))
        return total, lag / head if head > 0 else 0.0

    def noise_ar1(self, observed_lag1: float, low: float = -0.9, high: float = 0.9) -> float:
        """The phi whose expected residual lag-1 correlation is the observed one (bisection: the expected
        value grows with phi), clipped to [low, high]."""
        if observed_lag1 <= self.moments(low)[1]:
            return low
        if observed_lag1 >= self.moments(high)[1]:
            return high
        for _ in range(40):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if self.moments(mid)[1] < observed_lag1 else (low, mid)
        return 0.5 * (low + high)
