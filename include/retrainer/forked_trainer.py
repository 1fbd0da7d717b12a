"""The ``local`` trainer forked from its warm launcher instead of started as a fresh interpreter.

``python -m retrainer train ...`` spends seconds importing pandas, scikit-learn, xgboost and MLflow before it
trains; an Airflow task that launches it has imported them already (the worker's forkserver preloads them). A
fork of the launcher runs the very same command line with the very same private environment, output pipe,
timeout and kill as the subprocess does, and starts at once. What the child takes care of: the launcher's
standard streams and log handlers may be its supervisor's channels (Airflow's task runner), so the child points
fd 0 at ``/dev/null`` and fds 1 and 2 at the pipe, drops every inherited log handler, and exits with
``os._exit`` so that nothing of the launcher's state (buffers, sockets, atexit hooks) is flushed or closed twice.
This module does not import Airflow.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import IO, NoReturn

# Signals whose handlers a launcher installs for itself (Airflow's task runner: SIGTERM, SIGUSR2): the
# trainer dies of them, as a fresh interpreter would.
_DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)


class ForkedTrainer:
    """A forked trainer as its launcher sees it: the subset of ``subprocess.Popen`` that ``run_local`` uses."""

    def __init__(self, pid: int, stdout: IO[str]) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code (negative: the signal that killed it), or None while it runs."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        """Wait for it to end; its exit code."""
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL it (nothing if it has ended and been waited for)."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def start(
    args: Sequence[str], env: Mapping[str, str], *, before: Callable[[], None] | None = None
) -> ForkedTrainer:
    """Fork, and run ``retrainer <args>`` in the child with exactly ``env`` as its environment.

    Args:
        args: The command line after ``retrainer`` (``train --cutoff ... --result-file ...``).
        env: The trainer's whole environment.
        before: Run first in the child (e.g. to die with the launcher).

    Returns:
        The trainer; its ``stdout`` yields what it prints (stdout and stderr), line by line.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the trainer
        os.close(read_fd)
        _run_in_child(list(args), dict(env), write_fd, before)
    os.close(write_fd)
    return ForkedTrainer(pid, open(read_fd, encoding="utf-8", errors="replace", newline=None))


def _run_in_child(
    args: list[str], env: dict[str, str], write_fd: int, before: Callable[[], None] | None
) -> NoReturn:
    code = 70  # EX_SOFTWARE: the child failed before it could run the command
    try:
        if before is not None:
            before()
        for signum in _DEFAULT_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        _redirect_streams(write_fd)
        _drop_inherited_logging()
        sys.argv = ["retrainer", *args]
        # ps, top and psutil show what it runs, as for a fresh interpreter (before the environment changes: the
        # title may take over the memory of the process's initial environment).
        with contextlib.suppress(ImportError):
            import setproctitle

            setproctitle.setproctitle(" ".join(sys.argv))
        os.environ.clear()
        os.environ.update(env)
        from retrainer.cli import app

        app(args=args, prog_name="retrainer")  # standalone: ends with SystemExit
        code = 0
    except SystemExit as done:
        if isinstance(done.code, int) or done.code is None:
            code = done.code or 0
        else:  # sys.exit("message")
            sys.stderr.write(f"{done.code}\n")
            code = 1
    except BaseException:  # whatever it was, the launcher must see it and a non-zero code
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # exiting regardless
                stream.flush()
        os._exit(code)


# The launcher's stream objects, kept alive in the child: one that owns fd 1 (Airflow's does) would close it,
# now the pipe's, when it is collected.
_launcher_streams: list[object] = []


def _redirect_streams(write_fd: int) -> None:
    _launcher_streams.extend((sys.stdin, sys.stdout, sys.stderr))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)


def _drop_inherited_logging() -> None:
    """Forget the launcher's log handlers (not closed: they are the launcher's) and warning hook, so that the
    trainer's ``logging.basicConfig`` sets its own on the new stderr; structlog back to its defaults."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        if logger is not logging.root and not logger.propagate:
            logger.propagate = True
        logger.disabled = False  # a dictConfig of the launcher's disables the loggers it did not name
    logging.disable(logging.NOTSET)
    logging.captureWarnings(False)
    warnings.showwarning = _show_warning
    structlog = sys.modules.get("structlog")
    if structlog is not None:
        structlog.reset_defaults()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
