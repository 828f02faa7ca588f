"""The benchmarks never remove a directory they were given: --workdir /var/tmp once removed
/var/tmp itself (each run's files now go to a directory of its own inside it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_the_benchmarks_read_the_command_times_osbuilder_logs(tmp_path):
    """benchmarks/image.py takes the filesystem tools' seconds from `-v`'s record of each
    command: the record and its reader must agree."""
    import subprocess

    from tests.hostile import small_guest

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _common import command_seconds, step_seconds
    finally:
        sys.path.remove(str(BENCHMARKS))
    tree = small_guest(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "osbuilder", "-v", "build", "--existing", str(tree), "--distro", "debian",
                           "--init", "agent", "--probe-agent", "--format", "image", "--no-cache", "-o",
                           str(tmp_path / "out")], capture_output=True, text=True, check=True)
    seconds = command_seconds(proc.stderr)
    assert {"mke2fs", "debugfs"} <= set(seconds) and all(value >= 0 for value in seconds.values())
    steps = step_seconds(proc.stderr)
    assert "Packing the image" in steps and f"Copying {tree}" in steps, steps


def test_steps_run_side_by_side_count_once_in_what_is_left_outside_them():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _common import outside_steps
    finally:
        sys.path.remove(str(BENCHMARKS))
    lines = [(1.0, "osbuilder: Bootstrapping debian: done in 0.5 s"),  # 0.5-1.0
             (1.1, "osbuilder: $ mke2fs ..."),
             (1.9, "osbuilder: Validating the guest: done in 0.8 s"),  # 1.1-1.9
             (2.0, "osbuilder: Packing the initrd: done in 0.9 s"),  # 1.1-2.0, beside the validation
             (2.1, "osbuilder: Packing the image: done in 1.0 s")]  # 1.1-2.1
    # Covered: 0.5-1.0 and 1.1-2.1, 1.5 s of 3.0.
    assert outside_steps(3.0, lines) == pytest.approx(1.5)
