"""shared.backoff: the one retry schedule of the fleet."""

from __future__ import annotations

import pytest

from shared.backoff import Backoff


def test_grows_by_the_factor_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.1, 1.0, 2.0, jitter=0)
    assert [backoff.next() for _ in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1)


def test_jitter_stays_within_its_band() -> None:
    backoff = Backoff(1.0, 1.0, jitter=0.5)
    delays = [backoff.next() for _ in range(500)]
    assert all(0.5 <= d <= 1.5 for d in delays)
    assert max(delays) - min(delays) > 0.5  # really jittered, not a constant


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0}, {"initial": 2.0, "maximum": 1.0}, {"factor": 0.5}, {"jitter": 1.0}],
)
def test_nonsense_schedules_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(**kwargs)
