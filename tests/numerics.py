"""Tolerances the tests share, each with the reason for its size."""

# A data-parallel run sums each batch's gradient in another order than one process does;
# over a test run's few hundred steps that alone moves weights by up to 2.4e-5 on a CPU
# without AVX2 (under 1e-5 with it), while a run that differs in anything else (an example,
# a step, the seed) is off by far more.
REDUCTION_ORDER = 1e-4
