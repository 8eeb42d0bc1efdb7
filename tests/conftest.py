"""Shared fixtures. Each fixture family lives in its own module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.processes",
    "tests.fixtures.repository",
    "tests.fixtures.serving",
    "tests.fixtures.monitoring",
    "tests.fixtures.gateway",
    "tests.fixtures.redis",
    "tests.fixtures.fault_proxy",
    "tests.fixtures.browser",
]
