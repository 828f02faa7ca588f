"""The one way osbuilder runs external commands: argv lists, logged, bounded in time.

Every command is given the limit of its kind (a package manager may take an hour, a probe
two minutes); past it the runner kills it and says which limit fired. A slow or emulated
host scales every limit with OSBUILDER_TIMEOUT_SCALE (read where the Runner is made).

Children run in their own session so that Ctrl-C reaches osbuilder first; osbuilder then
kills the whole child process group before cleaning up, so nothing keeps writing into a
staging directory that is being removed. A SIGKILL gives osbuilder no such chance, so a
small reaper process, started once, kills the process groups of the commands still running
when osbuilder ends, however it ends: mmdebstrap's own children (dpkg in a user namespace)
never outlive the build.
"""

from __future__ import annotations

import atexit
import codecs
import collections
import contextlib
import logging
import os
import select
import selectors
import shlex
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
import time
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, Mapping, Sequence

from osbuilder.foundation.errors import CommandError, UserError
from osbuilder.foundation.privilege import Privilege

if TYPE_CHECKING:
    from osbuilder.foundation.progress import Progress

STDERR_TAIL_LINES = 25


@dataclass(frozen=True)
class Limit:
    """How long one kind of command may run before it is killed and reported."""

    kind: str
    seconds: float


# The kinds, longest first. A foreign-arch bootstrap runs its package scripts under
# qemu-user, and building the agent compiles Rust: both take their hours.
BUILD = Limit("build", 3 * 3600)  # make of the agent
PACKAGE_MANAGER = Limit("package manager", 3600)  # mmdebstrap, dnf, apk, their scripts
DOWNLOAD = Limit("download", 1200)  # apt-get update / download of a kernel package
FILESYSTEM = Limit("filesystem tool", 1800)  # mkfs, debugfs, veritysetup, fsck, tar and cp of a tree, compressors
PROBE = Limit("probe", 120)  # versions, ldd, depmod, rpm queries, listings


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr_tail: str


@dataclass
class Runner:
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("osbuilder.run"))
    progress: "Progress | None" = None  # where commands that report phases show them
    timeout_scale: float = 1.0  # every Limit is multiplied by this
    # How commands run and owners are written: made once (cli) and carried here to every
    # stage that runs a command.
    privilege: Privilege = field(default_factory=Privilege.detect)
    kill_grace: float = 10.0  # seconds a killed command has after SIGTERM before SIGKILL
    # The commands running now, and whether they are being stopped: when tasks run side by
    # side (foundation/side_by_side.py), one's failure or a Ctrl-C stops the others' commands.
    _running: set[subprocess.Popen[bytes]] = field(default_factory=set, init=False, repr=False, compare=False)
    _cancelled: threading.Event = field(default_factory=threading.Event, init=False, repr=False, compare=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def cancel(self) -> None:
        """Kill every command running now, and each one started until resume(): its caller
        sees it fail."""
        with self._guard:
            self._cancelled.set()
            running = list(self._running)
        for proc in running:
            if proc.poll() is None:  # one already waited for may have given its pid away
                _kill_group(proc, self.kill_grace)

    def resume(self) -> None:
        self._cancelled.clear()

    def _spawn(self, args: list[str], **popen: Any) -> subprocess.Popen[bytes]:
        proc = _spawn(args, **popen)
        with self._guard:
            self._running.add(proc)
            cancelled = self._cancelled.is_set()
        if cancelled:
            _kill_group(proc, self.kill_grace)
        return proc

    def _ended(self, proc: subprocess.Popen[bytes]) -> None:
        with self._guard:
            self._running.discard(proc)
        _ended(proc)

    def seconds(self, limit: Limit) -> float:
        return limit.seconds * self.timeout_scale

    def _timed_out(self, args: list[str], limit: Limit, tail: str) -> CommandError:
        return CommandError(args, None, tail,
                            f"it ran past {self.seconds(limit):g} s, the limit for a {limit.kind}; on a slow or "
                            "emulated host raise every limit with OSBUILDER_TIMEOUT_SCALE (e.g. 2)")

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        limit: Limit,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdin_data: bytes | None = None,
        check: bool = True,
        hint: str | None = None,
        progress: Callable[[str], str | None] | None = None,
    ) -> Result:
        """Run to completion. `progress` maps an stderr line to the phase it starts (or None),
        shown through the runner's Progress while the command runs."""
        args = [os.fspath(a) for a in argv]
        self.log.info("$ %s", shlex.join(args))
        started = time.monotonic()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        proc = self._spawn(args, stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd)

        stdout_chunks: list[bytes] = []
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        readers = [
            threading.Thread(target=_collect, args=(proc.stdout, stdout_chunks.append), daemon=True),
            threading.Thread(target=_collect_lines, args=(proc.stderr, tail, self.log, self._reporter(args, progress)),
                             daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            if stdin_data is not None:
                assert proc.stdin is not None
                proc.stdin.write(stdin_data)
                proc.stdin.close()
            returncode: int | None = _wait(proc, self.seconds(limit))
        except subprocess.TimeoutExpired:
            _kill_group(proc, self.kill_grace)
            returncode = None
        except BaseException:
            _kill_group(proc, self.kill_grace)
            raise
        finally:
            self._ended(proc)
            for reader in readers:
                reader.join(timeout=5)
            if progress is not None and self.progress is not None:
                self.progress.done()

        stdout = b"".join(stdout_chunks).decode(errors="replace")
        stderr_tail = "\n".join(tail)
        # -v's record of where the time went (benchmarks/image.py sums the filesystem tools').
        self.log.info("%s: %.3f s, exit %s", Path(args[0]).name, time.monotonic() - started, returncode)
        if returncode is None:
            raise self._timed_out(args, limit, stderr_tail)
        if check and returncode != 0:
            raise CommandError(args, returncode, stderr_tail, hint)
        return Result(args, returncode, stdout, stderr_tail)


    def _reporter(self, args: list[str], phase_of: Callable[[str], str | None] | None) -> Callable[[str], None] | None:
        progress = self.progress
        if phase_of is None or progress is None:
            return None
        task = Path(args[0]).name

        def report(line: str) -> None:
            words = phase_of(line)
            if words:
                progress.phase(task, words)
            else:
                progress.line(task, line)
        return report

    @contextlib.contextmanager
    def pipe_to(self, argv: Sequence[str | os.PathLike[str]], stdout: BinaryIO,
                *, limit: Limit, hint: str | None = None) -> Iterator[BinaryIO]:
        """Run a filter whose stdin the caller writes and whose stdout goes to `stdout`.

        Used for streaming compression: nothing is held in memory. The limit covers the
        whole stream: a filter still running at it is killed (the caller's next write
        then fails), and the timeout is what is reported."""
        args = [os.fspath(a) for a in argv]
        self.log.info("$ %s > %s", shlex.join(args), getattr(stdout, "name", "<stream>"))
        proc = self._spawn(args, stdin=subprocess.PIPE, stdout=stdout, stderr=subprocess.PIPE)
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        reader = threading.Thread(target=_collect_lines, args=(proc.stderr, tail, self.log), daemon=True)
        reader.start()
        fired = threading.Event()

        def expire() -> None:
            fired.set()
            _kill_group(proc, self.kill_grace)

        watchdog = threading.Timer(self.seconds(limit), expire)
        watchdog.daemon = True
        watchdog.start()
        assert proc.stdin is not None
        try:
            try:
                yield proc.stdin
                proc.stdin.close()
            except BrokenPipeError:
                # The filter died first: its exit code and stderr say why (a full disk, ...).
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
            returncode = proc.wait()
        except BaseException:
            _kill_group(proc, self.kill_grace)
            if fired.is_set():
                raise self._timed_out(args, limit, "\n".join(tail)) from None
            raise
        finally:
            watchdog.cancel()
            self._ended(proc)
            reader.join(timeout=5)
        if fired.is_set():
            raise self._timed_out(args, limit, "\n".join(tail))
        if returncode != 0:
            raise CommandError(args, returncode, "\n".join(tail), hint)


    def watch(self, argv: Sequence[str | os.PathLike[str]], until: Callable[[str], bool], *,
              timeout: float, linger: float = 0.0) -> "Watched":
        """Run a long-lived process (a VM), feeding its merged output to `until` as it arrives.

        Stops when `until` returns True (the process is then given `linger` seconds to exit
        by itself before its group is killed), when the process exits, or at `timeout`.
        Never waits longer than timeout + linger + the kill grace."""
        args = [os.fspath(a) for a in argv]
        self.log.info("$ %s", shlex.join(args))
        start = time.monotonic()
        output = ""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        outcome, matched_at = "timeout", None
        proc = _spawn(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:  # from the first instant: a Ctrl-C right after the start still stops the guest
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            with selectors.DefaultSelector() as selector:
                selector.register(proc.stdout, selectors.EVENT_READ)
                while outcome == "timeout":
                    left = timeout - (time.monotonic() - start)
                    if left <= 0:
                        break
                    if not selector.select(min(left, 0.5)):
                        continue
                    chunk = proc.stdout.read(65536)
                    if not chunk:  # EOF: the process exited
                        outcome = "exited"
                        break
                    output += decoder.decode(chunk)
                    if until(output):
                        outcome, matched_at = "matched", time.monotonic() - start
            if outcome == "matched" and linger > 0:
                try:
                    proc.wait(timeout=linger)
                except subprocess.TimeoutExpired:
                    pass
                output += _drain(proc.stdout)
        finally:
            if proc.poll() is None:
                _kill_group(proc, self.kill_grace)
            proc.stdout.close()
        returncode = proc.wait()
        _ended(proc)
        return Watched(args, outcome, output, matched_at, time.monotonic() - start, returncode)


@dataclass(frozen=True)
class Watched:
    """What `Runner.watch` saw. outcome: "matched", "exited" or "timeout"."""

    argv: list[str]
    outcome: str
    output: str
    matched_after: float | None  # seconds from start to the match
    elapsed: float
    returncode: int


# The reaper: reads "+g N"/"-g N" (process groups) and "+p N"/"-p N" (single processes) from
# stdin, and SIGKILLs what is still listed when stdin closes, that is when osbuilder ends,
# however it ends. A separate interpreter (-I -S: no site, nothing of the user's), started
# without a preexec_fn: a fork that runs Python's at-fork handlers can swallow a Ctrl-C.
_REAPER_CODE = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
listed = set()
for line in sys.stdin.buffer:
    sign, kind, number = line[:1], line[1:2], int(line[2:])
    (listed.add if sign == b"+" else listed.discard)((kind, number))
for kind, number in listed:
    try:
        (os.killpg if kind == b"g" else os.kill)(number, signal.SIGKILL)
    except OSError:
        pass
"""


class Reaper:
    """What a killed osbuilder leaves behind, killed: the process groups of the commands still
    running, and the processes (matrix targets) still listed. Process-wide by nature (it must
    outlive everything this process started), so there is one, started on first use."""

    def __init__(self) -> None:
        import sys

        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _REAPER_CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        atexit.register(self.close)

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()

    def close(self) -> None:
        """At a normal exit: close its stdin, and it ends on its own (not waited for: nothing
        is listed any more, and waiting would add its start-up to every command's exit)."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()


_REAPER: list[Reaper] = []
_REAPER_LOCK = threading.Lock()


def reaper() -> Reaper:
    with _REAPER_LOCK:
        if not _REAPER:
            _REAPER.append(Reaper())
        return _REAPER[0]


def _spawn(args: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start a child in its own session, which the reaper kills if osbuilder ends first (see
    the module docstring); a missing tool is the user's to install, not a crash."""
    watcher = reaper()
    try:
        proc = subprocess.Popen(args, start_new_session=True, **popen)
    except FileNotFoundError:
        raise UserError(f"required tool '{args[0]}' is not installed", "run ./setup.sh to install it") from None
    watcher.tell(f"+g{proc.pid}")  # its session's process group has its pid
    return proc


def _ended(proc: subprocess.Popen[bytes]) -> None:
    """The command has been waited for: its group is no longer the reaper's to kill."""
    reaper().tell(f"-g{proc.pid}")


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """proc.wait(timeout), woken the moment the child exits. Popen.wait with a timeout polls,
    every 50 ms after its first second, so each long command (a bootstrap) would end up to
    50 ms late; a pidfd is readable as soon as the child exits."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # kernels before 5.3
        return proc.wait(timeout=timeout)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(int(timeout * 1000)):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(pidfd)
    return proc.wait()


def _drain(stream: IO[bytes]) -> str:
    try:
        data = stream.read()
    except (BlockingIOError, ValueError):
        return ""
    return (data or b"").decode(errors="replace")


def _collect(stream: IO[bytes] | None, sink) -> None:
    if stream is None:
        return
    for chunk in iter(lambda: stream.read(65536), b""):
        sink(chunk)


def _collect_lines(stream: IO[bytes] | None, tail: collections.deque[str], log: logging.Logger,
                   report: Callable[[str], None] | None = None) -> None:
    if stream is None:
        return
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        tail.append(line)
        log.debug("  %s", line)
        if report is not None:
            report(line)


def _kill_group(proc: subprocess.Popen[bytes], grace_after_term: float) -> None:
    """Terminate the child's whole process group, escalating to SIGKILL."""
    for sig, grace in ((signal.SIGTERM, grace_after_term), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
