"""Which drift stattests are p-values and which distances can be calibrated: facts the project configuration
checks, kept apart from the statistics so that loading a project file imports no NumPy (the DAG file parses it)."""

from __future__ import annotations

# Stattests whose score is a p-value: drift when it is small. The rest are distances: drift when large.
P_VALUE_METHODS = frozenset(
    {
        "anderson",
        "chisquare",
        "cramer_von_mises",
        "empirical_mmd",
        "es",
        "fisher_exact",
        "g_test",
        "ks",
        "mannw",
        "t_test",
        "TVD",
        "z",
    }
)
# Distances drift_calibration can calibrate, and how one between two samples of a distribution shrinks with their
# effective size: as 1/sqrt(n_eff) for wasserstein and jensenshannon, as 1/n_eff for psi.
SHRINK_EXPONENT = {"wasserstein": 0.5, "jensenshannon": 0.5, "psi": 1.0}
