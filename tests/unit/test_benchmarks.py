"""The benchmarks never remove a directory they were given: --workdir /var/tmp once removed
/var/tmp itself (each run's files now go to a directory of its own inside it)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_every_benchmark_works_in_a_directory_of_its_own():
    for script in sorted(BENCHMARKS.glob("*.py")):
        text = script.read_text()
        assert "args.workdir or" not in text, f"{script.name} would use --workdir itself"
        if "--workdir" in text and script.name != "_common.py":
            assert "private_workdir(" in text or "setup(" in text, script.name


def test_the_private_directory_is_inside_the_given_one_and_removing_it_leaves_that(tmp_path):
    import shutil

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _common import private_workdir
    finally:
        sys.path.remove(str(BENCHMARKS))
    given = tmp_path / "var-tmp"
    (given).mkdir()
    (given / "someone-else").write_text("kept")
    work = private_workdir(given, "osbuilder-bench-test-")
    assert work.parent == given
    shutil.rmtree(work)
    assert (given / "someone-else").read_text() == "kept"
