"""The durations the notebooks print come from counted work: the constants behind them must
be the counts of the models the profiles build."""

import pytest

from mtlkit import studies, work
from mtlkit.models.architectures import build_cifar100
from mtlkit.studies import durations


@pytest.mark.parametrize("width", sorted(durations.CIFAR_NARROW_GFLOP))
def test_narrow_cifar_costs_are_the_counted_ones(width):
    two, shared = durations.CIFAR_NARROW_GFLOP[width]
    assert work.forward_gflop(build_cifar100("independent", trunk_width=width)) == pytest.approx(
        two, abs=1e-3
    )
    assert work.forward_gflop(build_cifar100("shared_conv", trunk_width=width)) == pytest.approx(
        shared, abs=1e-3
    )


def test_the_quick_estimate_counts_the_narrow_trunks():
    """Narrow trunks (0.35) cost about 7x less per image, and the printed estimate says so."""
    quick = studies.cifar100_settings("quick")
    full_width = studies.cifar100_settings("quick", trunk_width=1.0)
    assert durations._forward_gflop(full_width)[1] > 6 * durations._forward_gflop(quick)[1]
    narrow, wide = (durations.expected_minutes(s, runs=12) for s in (quick, full_width))
    assert narrow != wide and "GFLOP" in narrow
