"""The few quantiles and tails of the normal, Student t, chi-squared and beta laws the analysis needs, from
scipy.special.

Why not scipy.stats: importing it costs about 0.6 s of CPU (its whole distribution zoo) for six one-line
formulas: `qslab simulate` of 20 images took 1.6 s CPU with it and 0.7 s without. (A session on the virtual bench
still loads it, through scipy.signal, which the bench's detector filters need.) These are the functions scipy.stats's own distributions evaluate (norm, t, chi2 and
beta call the same scipy.special routines), so the values are the same to the last bit; tests compare them.
"""

from __future__ import annotations

from scipy import special


def normal_isf(tail):
    """z with P(Z > z) = tail for a standard normal Z."""
    return -special.ndtri(tail)


def normal_sf(z):
    """P(Z > z) for a standard normal Z."""
    return special.ndtr(-z)


def student_t_isf(tail, dof):
    """t with P(T > t) = tail for Student's t with ``dof`` degrees of freedom."""
    return -special.stdtrit(dof, tail)


def chi2_ppf(probability, dof):
    """x with P(X <= x) = probability for a chi-squared X with ``dof`` degrees of freedom."""
    return 2.0 * special.gammaincinv(0.5 * dof, probability)


def chi2_isf(tail, dof):
    """x with P(X > x) = tail for a chi-squared X with ``dof`` degrees of freedom."""
    return special.chdtri(dof, tail)


def chi2_cdf(x, dof):
    """P(X <= x) for a chi-squared X with ``dof`` degrees of freedom."""
    return special.chdtr(dof, x)


def beta_ppf(probability, a, b):
    """x with I_x(a, b) = probability (the beta law's quantile)."""
    return special.betaincinv(a, b, probability)


def beta_isf(tail, a, b):
    """x with 1 - I_x(a, b) = tail (the beta law's upper quantile)."""
    return special.betainccinv(a, b, tail)
