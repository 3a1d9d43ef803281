"""Hypothesis strategies and budgets for the fuzz targets (tests/test_fuzz_*.py).

Inputs are a seed mutated by a few edits (tests/fuzz/targets.py `mutations`), or any
bytes. `make test` runs a small, reproducible budget (derandomised, no example database);
`FUZZ_EXAMPLES=n` multiplies it for a longer run by hand.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.fuzz.targets import TARGETS, mutations

SCALE = int(os.environ.get("FUZZ_EXAMPLES", "1"))


def budget(examples: int) -> settings:
    """`examples` inputs (times FUZZ_EXAMPLES), no deadline, the same inputs every run."""
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        derandomize=SCALE == 1,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def inputs(name: str) -> st.SearchStrategy[bytes]:
    """A target's input: one of its seeds with 1-8 edits (mostly), or arbitrary bytes."""
    target = TARGETS[name]
    edits = st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 2**20), st.integers(0, 2**32 - 1)),
        min_size=1,
        max_size=8,
    )
    mutated = st.builds(mutations, st.sampled_from(target.seeds()), edits)
    noise = st.binary(max_size=min(target.max_size, 2048))
    return st.one_of(mutated, mutated, mutated, noise).map(lambda d: d[: target.max_size])
