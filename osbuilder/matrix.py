"""Build matrices: many targets from one TOML file, built by a bounded pool of jobs.

The file has a `[defaults]` table and one `[[target]]` table per target; each target has a
`name` and any build setting under the same key as a single build's --config file. Every
target is built by the same command a release pipeline would run on a machine of its own,
`osbuilder build --config FILE --target NAME -o OUT` (what `osbuilder matrix --github`
prints), into OUT/NAME/, with its log at OUT/NAME.log. Targets share the cache, whose
per-entry locks keep two jobs from bootstrapping the same tree at once.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from osbuilder.foundation.runner import reaper
from osbuilder.foundation.errors import Interrupted, UserError
from osbuilder.foundation.events import EVENTS_FD_VARIABLE, parse_event
from osbuilder.foundation.fsutil import write_atomically
from osbuilder.foundation.settings import read_toml, setting
from osbuilder.foundation.shared_settings import OutputSetting

log = logging.getLogger("osbuilder")

TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MATRIX_KEYS = ("defaults", "target")
SUMMARY_NAME = "matrix.json"


def _jobs(text: str) -> int:
    jobs = int(text)
    if jobs < 1:
        raise ValueError(f"'{text}' is not a number of jobs (1 or more)")
    return jobs


@dataclass(frozen=True)
class MatrixOptions:
    """Settings of a matrix build (`build --config FILE` whose file has [[target]] tables)."""

    jobs: int = setting(1, help="with a --config file of [[target]] tables: targets built at once", metavar="N",
                        parse=_jobs)
    fail_fast: bool = setting(False, help="with [[target]] tables: stop every target at the first failure",
                              boolean=True)
    target: str | None = setting(None, help="with [[target]] tables: build only the target named NAME",
                                 metavar="NAME")


DEFAULT_MATRIX_OUTPUT = Path("out")  # the -o of the printed commands when none is given


@dataclass(frozen=True)
class MatrixPrint(OutputSetting):
    """`osbuilder matrix`: the targets of a matrix file, as a list or a GitHub Actions matrix."""

    github: bool = setting(False, help="print the GitHub Actions strategy.matrix JSON (one entry per target, "
                           "with the exact osbuilder build command)", boolean=True)


@dataclass(frozen=True)
class Target:
    name: str
    table: dict[str, Any]  # [defaults] with the target's own keys on top, without `name`


@dataclass(frozen=True)
class MatrixFile:
    path: Path
    targets: tuple[Target, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.targets)

    def dependencies(self, name: str) -> tuple[str, ...]:
        """The targets whose artifacts target `name` reads: its `base`, and the images of its
        `with-extension` entries, where they name a target of this file (NAME=TARGET)."""
        return tuple(dict.fromkeys(reference for _, reference in target_references(self.target(name), self.names)))

    def target(self, name: str) -> Target:
        for target in self.targets:
            if target.name == name:
                return target
        raise UserError(f"config file {self.path} has no target '{name}'",
                        f"use one of: {', '.join(t.name for t in self.targets)}")


# The settings whose value may name another target of the file instead of a path: an
# extension's --base, and a base's --with-extension NAME=IMAGE.
REFERENCE_KEYS = ("base", "with-extension")


def target_references(target: Target, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(setting key, target name) for each value of `target` that names a target in `names`.
    A file of that name is written ./NAME."""
    found = []
    for key in REFERENCE_KEYS:
        value = target.table.get(key)
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str):
                continue
            image = item.partition("=")[2] if key == "with-extension" else item
            if image in names and image != target.name:
                found.append((key, image))
            elif image == target.name:
                raise UserError(f"target '{target.name}' names itself in {key}",
                                "name another target (or a file, written ./NAME)")
    return found


def dependency_order(names: list[str], depends: dict[str, tuple[str, ...]], path: Path) -> list[str]:
    """`names` reordered so that every target comes after the targets it reads, otherwise in
    the given order; a cycle is refused."""
    placed: list[str] = []
    visiting: list[str] = []

    def place(name: str) -> None:
        if name in placed:
            return
        if name in visiting:
            cycle = " -> ".join(visiting[visiting.index(name):] + [name])
            raise UserError(f"config file {path}: the targets read each other's artifacts in a cycle ({cycle})",
                            "break it: an extension's base and a base's extensions cannot both be targets "
                            "that name each other")
        visiting.append(name)
        for dependency in depends.get(name, ()):
            place(dependency)
        visiting.pop()
        placed.append(name)

    for name in names:
        place(name)
    return placed


def is_matrix_file(path: Path) -> bool:
    return "target" in read_toml(path)


def load_matrix(path: Path) -> MatrixFile:
    data = read_toml(path)
    for key in data:
        if key not in MATRIX_KEYS:
            raise UserError(f"config file {path}: unknown key '{key}' beside [[target]] tables",
                            "put shared settings under [defaults], per-target ones in each [[target]]")
    defaults = data.get("defaults", {})
    tables = data.get("target")
    if not isinstance(defaults, dict):
        raise UserError(f"config file {path}: 'defaults' must be a table", "write it as [defaults]")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise UserError(f"config file {path}: 'target' must be [[target]] tables", "write each as [[target]]")
    targets: list[Target] = []
    for index, table in enumerate(tables, 1):
        name = table.get("name")
        if not isinstance(name, str) or not TARGET_NAME.match(name):
            raise UserError(f"config file {path}: target {index} needs a name of letters, digits, '.', '_' or '-'",
                            'add name = "debian-agent-x86_64" (it names the target\'s output directory)')
        if any(t.name == name for t in targets):
            raise UserError(f"config file {path}: two targets are named '{name}'", "give each target its own name")
        own = {key: value for key, value in table.items() if key != "name"}
        targets.append(Target(name, {**defaults, **own}))
    return MatrixFile(Path(path), tuple(targets))


def bootstrap_first(names: list[str], bootstrap_of: dict[str, str]) -> list[str]:
    """The order targets start in: the first target of each bootstrap, then those that reuse
    one. A job that waits for another's bootstrap (the cache's per-entry lock) holds a slot
    doing nothing, so the distinct bootstraps go first, side by side, and the others then
    find theirs in the cache."""
    seen: set[str] = set()
    first, rest = [], []
    for name in names:
        (rest if bootstrap_of[name] in seen else first).append(name)
        seen.add(bootstrap_of[name])
    return first + rest


def target_command(config: Path, name: str, output: Path, extra: list[str] | None = None) -> list[str]:
    """The `osbuilder build` arguments that build one target of the file into OUT/NAME."""
    return ["build", "--config", str(config), "--target", name, "-o", str(output), *(extra or [])]


@dataclass
class TargetRun:
    name: str
    state: str = "waiting"  # waiting, running, ok, failed, cancelled, skipped
    step: str = ""
    started: float = 0.0
    seconds: float = 0.0
    error: str = ""
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self, output: Path) -> dict[str, Any]:
        return {"name": self.name, "status": self.state, "seconds": round(self.seconds, 2),
                "output": str(output / self.name), "log": str(output / f"{self.name}.log"),
                "error": self.error or None, "artifacts": self.artifacts}




class MatrixDisplay:
    """One live line per target on a terminal; timestamped log lines otherwise."""

    def __init__(self, stream: TextIO, runs: list[TargetRun], enabled: bool) -> None:
        self.stream, self.runs, self.enabled = stream, runs, enabled
        self.live = None
        self.lock = threading.Lock()
        if enabled and stream.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self._table(), console=Console(file=stream), refresh_per_second=4,
                             get_renderable=self._table, transient=True)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(box=None, show_header=False, pad_edge=False)
        now = time.monotonic()
        for run in self.runs:
            elapsed = run.seconds if run.state not in ("waiting", "running") else (
                now - run.started if run.started else 0.0)
            table.add_row(run.name, run.state, f"{elapsed:5.0f} s", run.step[:70])
        return table

    def __enter__(self) -> "MatrixDisplay":
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def event(self, run: TargetRun, event: dict[str, Any]) -> None:
        """What the target's build reported (events.py): the step it is in, or its error."""
        kind = event["event"]
        if kind == "step":
            run.step = str(event.get("title", ""))
        elif kind == "phase":
            run.step = f"{event.get('task')}: {event.get('words')}"
        elif kind == "error":
            run.error = str(event.get("message", ""))

    def line(self, run: TargetRun, text: str) -> None:
        """A line of the target's log, shown as it comes when there is no live table."""
        if self.enabled and self.live is None:
            with self.lock:
                print(f"{time.strftime('%H:%M:%S')} [{run.name}] {text}", file=self.stream, flush=True)


class MatrixBuild:
    """Build every target of a matrix file with at most `jobs` at once."""

    def __init__(self, matrix: MatrixFile, output: Path, jobs: int, fail_fast: bool, extra_args: list[str],
                 display: Callable[[list[TargetRun]], MatrixDisplay], start_order: list[str] | None = None,
                 depends: dict[str, tuple[str, ...]] | None = None) -> None:
        self.matrix, self.output, self.jobs, self.fail_fast = matrix, output, jobs, fail_fast
        self.extra_args = extra_args
        self.runs = [TargetRun(t.name) for t in matrix.targets]  # reported in the file's order
        self.depends = depends or {}
        self.start_order = dependency_order(start_order or [t.name for t in matrix.targets], self.depends,
                                            matrix.path)
        self.display = display(self.runs)
        self.stop = threading.Event()
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.lock = threading.Lock()

    def run(self) -> list[TargetRun]:
        self.output.mkdir(parents=True, exist_ok=True)
        with self.display, concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs) as pool:
            by_name = {run.name: run for run in self.runs}
            waiting = list(self.start_order)
            running: set[concurrent.futures.Future[None]] = set()
            try:
                while waiting or running:  # wakes up now and then so that Ctrl-C and SIGTERM are seen
                    # A target starts once what it reads is built: a job never holds a slot waiting.
                    for name in list(waiting):
                        if len(running) >= self.jobs:
                            break
                        states = [by_name[d] for d in self.depends.get(name, ())]
                        unbuilt = [d for d in states if d.state in ("failed", "cancelled", "skipped")]
                        if unbuilt:
                            waiting.remove(name)
                            by_name[name].state = "skipped"
                            by_name[name].error = f"target '{unbuilt[0].name}', whose artifact it reads, was not built"
                        elif all(d.state == "ok" for d in states):
                            waiting.remove(name)
                            running.add(pool.submit(self._build, by_name[name]))
                    _, running = concurrent.futures.wait(running, timeout=0.5,
                                                         return_when=concurrent.futures.FIRST_COMPLETED)
            except BaseException:
                self.stop.set()
                self._terminate_all()
                concurrent.futures.wait(running)
                raise
        return self.runs

    def _terminate_all(self) -> None:
        with self.lock:
            for proc in self.processes.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)  # each build removes its own staging

    def _build(self, run: TargetRun) -> None:
        argv = [sys.executable, "-m", "osbuilder", *target_command(self.matrix.path, run.name, self.output,
                                                                    ["--json", *self.extra_args])]
        log_path = self.output / f"{run.name}.log"
        with open(log_path, "w") as log_file:
            log_file.write(f"$ osbuilder {shlex.join(argv[3:])}\n")
            events_read, events_write = os.pipe()
            try:
                # Under the lock that a fail-fast stop takes to terminate every registered build:
                # a target either sees the stop here, or is registered before it and terminated.
                with self.lock:
                    if self.stop.is_set():
                        run.state = "skipped"
                        return
                    proc = self._start(argv, events_write)
                    reaper().tell(f"+p{proc.pid}")  # a killed matrix takes its targets along
                    self.processes[run.name] = proc
                    run.state, run.started = "running", time.monotonic()
            finally:
                os.close(events_write)  # the child holds its own copy
            stdout: list[str] = []
            readers = [threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True),
                       threading.Thread(target=self._read_events, args=(run, events_read), daemon=True)]
            for reader in readers:
                reader.start()
            for line in proc.stderr:
                log_file.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}")
                log_file.flush()
                self.display.line(run, line.rstrip("\n"))
            returncode = proc.wait()
            reaper().tell(f"-p{proc.pid}")
            for reader in readers:
                reader.join()
        run.seconds = time.monotonic() - run.started
        if returncode == 0:
            run.state, run.step = "ok", "done"
            run.artifacts = json.loads("".join(stdout) or "{}").get("artifacts", [])
            return
        # Terminated by a stop (fail-fast, Ctrl-C): the build removed its staging and said so,
        # or the signal came before it could (-SIGTERM: nothing was staged yet).
        stopped = returncode in (*Interrupted.EXIT_CODES, -signal.SIGTERM)
        run.state = "cancelled" if self.stop.is_set() and stopped else "failed"
        run.error = run.error or f"exit code {returncode}"
        if self.fail_fast:
            with self.lock:
                first = not self.stop.is_set()
                self.stop.set()
            if first:
                self._terminate_all()

    def _start(self, argv: list[str], events_fd: int) -> subprocess.Popen[str]:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                pass_fds=(events_fd,),
                                env={**os.environ, "COLUMNS": "120", EVENTS_FD_VARIABLE: str(events_fd)})

    def _read_events(self, run: TargetRun, fd: int) -> None:
        with os.fdopen(fd, "r") as events:
            for line in events:
                event = parse_event(line)
                if event is not None:
                    self.display.event(run, event)


def summary_table(runs: list[TargetRun], output: Path) -> str:
    width = max(len(r.name) for r in runs)
    lines = [f"{'target':<{width}}  {'status':<9}  {'time':>7}  result"]
    for run in runs:
        result = (", ".join(Path(a["path"]).name for a in run.artifacts) if run.state == "ok"
                  else run.error or run.state)
        lines.append(f"{run.name:<{width}}  {run.state:<9}  {run.seconds:>6.1f}s  {result}")
    failed = sum(r.state != "ok" for r in runs)
    lines.append(f"{len(runs) - failed} of {len(runs)} target(s) built in {output}; logs at {output}/<target>.log")
    return "\n".join(lines)


def write_summary(runs: list[TargetRun], output: Path) -> dict[str, Any]:
    data = {"output": str(output), "targets": [r.as_json(output) for r in runs],
            "failed": sum(r.state != "ok" for r in runs)}
    write_atomically(output / SUMMARY_NAME, (json.dumps(data, indent=2) + "\n").encode())
    return data
