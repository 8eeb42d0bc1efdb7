"""The load shapes' arithmetic: users over time for steady, step and spike runs."""

import pytest

from loadtests.shapes import ShapeParams, describe, target_users


def test_steady_holds_users_until_the_run_time_then_stops():
    params = ShapeParams(kind="steady", users=8, spawn_rate=4, run_time=30)

    assert target_users(params, 0) == (8, 4)
    assert target_users(params, 29.9) == (8, 4)
    assert target_users(params, 30) is None


def test_steady_without_run_time_never_ends_on_its_own():
    assert target_users(ShapeParams(kind="steady", users=3), 10_000) == (3, 5.0)


def test_step_adds_users_each_step_up_to_the_peak():
    params = ShapeParams(kind="step", users=5, step_users=2, step_seconds=10, run_time=100)

    levels = [target_users(params, t)[0] for t in (0, 9.9, 10, 20, 30, 90)]

    assert levels == [2, 2, 4, 5, 5, 5]


def test_step_without_run_time_ends_after_holding_the_top_step():
    params = ShapeParams(kind="step", users=6, step_users=2, step_seconds=5)

    assert target_users(params, 14.9) == (6, 5.0)
    assert target_users(params, 15) is None


def test_spike_jumps_to_the_peak_quickly_and_falls_back():
    params = ShapeParams(
        kind="spike",
        users=20,
        spawn_rate=2,
        spike_base_users=4,
        spike_at_seconds=10,
        spike_seconds=5,
        run_time=40,
    )

    assert target_users(params, 0) == (4, 20.0)
    assert target_users(params, 10) == (20, 20.0)
    assert target_users(params, 14.9) == (20, 20.0)
    assert target_users(params, 15) == (4, 20.0)
    assert target_users(params, 40) is None


def test_spike_without_run_time_recovers_as_long_as_it_warmed_up():
    params = ShapeParams(
        kind="spike", users=10, spike_base_users=2, spike_at_seconds=10, spike_seconds=5
    )

    assert target_users(params, 24.9) == (2, 10.0)
    assert target_users(params, 25) is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "ramp"}, "unknown load shape 'ramp'"),
        ({"users": 0}, "users must be positive"),
        ({"step_seconds": 0}, "step_seconds must be positive"),
        ({"run_time": -1}, "run time must be positive"),
        ({"users": 3, "spike_base_users": 5}, "spike base users must be between 1 and"),
    ],
)
def test_bad_parameters_are_refused_with_what_to_fix(overrides, message):
    with pytest.raises(ValueError, match=message):
        ShapeParams(**overrides)


def test_describe_names_the_shape_and_its_bound():
    line = describe(ShapeParams(kind="step", users=6, step_users=2, step_seconds=5, run_time=60))

    assert line == "load shape step: +2 users every 5s up to 6, until 60s"
