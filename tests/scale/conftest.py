"""Fixtures of `make scale-test`: one cluster (tests/scale/cluster.py) for the
whole run, removed at the end even when a test or the set-up fails, and a
report of the numbers each test measured, printed after the results."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster as cluster_mod  # noqa: E402

REPORT = []


@pytest.fixture(scope="session")
def cluster():
    c = cluster_mod.Cluster()
    try:
        c.start()
    except BaseException:
        for name in ("host1", "host2", "host3", "pgbouncer", "nginx", "redis"):
            tail = c.log_tail(name)
            if tail:
                print(f"---- {name}.log\n{tail}", file=sys.stderr)
        c.stop()
        raise
    try:
        yield c
    finally:
        left = c.stop()
        assert not left, f"cleanup left {left}"


@pytest.fixture
def report(request):
    """report(fmt, ...) adds a line under the test's name to the summary."""
    def add(line):
        REPORT.append(f"{request.node.name}: {line}")
    return add


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("scale-test numbers")
        for line in REPORT:
            terminalreporter.write_line(line)
