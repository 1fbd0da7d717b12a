"""The local trainer forked from its launcher: its output reaches the pipe, whatever the launcher's streams are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# A launcher set up as Airflow's task runner sets up a task process: its logging sent as JSON over a channel of
# its own, fd 1 a socket owned by sys.stdout (which closes it when collected), a logger disabled. The trainer's
# command is replaced by one that prints, logs and warns.
LAUNCHER = """
import io, json, logging, os, socket, sys, warnings
from airflow.sdk.log import configure_logging
configure_logging(json_output=True, output=open(sys.argv[1], "wb", buffering=0), sending_to_supervisor=True)
logging.getLogger("retrainer.steps").disabled = True
ours, theirs = socket.socketpair()
os.dup2(theirs.fileno(), 1)
sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb"), line_buffering=True)
import retrainer.cli
from retrainer import forked_trainer

def command(args=None, prog_name=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print("printed", args, os.environ.get("ONLY_THIS"))
    import psutil
    print("command line", " ".join(psutil.Process().cmdline()).split())
    logging.getLogger("retrainer.steps").info("logged")
    warnings.warn("warned")
    raise SystemExit(3)

retrainer.cli.app = command
trainer = forked_trainer.start(["train", "--x"], {"ONLY_THIS": "yes"})
lines = [line.rstrip("\\n") for line in trainer.stdout]
print(json.dumps({"code": trainer.wait(), "lines": lines}), file=sys.stderr)
"""


def test_a_forked_trainer_writes_to_its_pipe_not_to_the_launchers_channels(tmp_path: Path) -> None:
    log_channel = tmp_path / "launcher.log"
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(log_channel)], capture_output=True, text=True, timeout=300
    )
    result = json.loads(done.stderr.strip().splitlines()[-1])
    assert result["code"] == 3, result
    lines = result["lines"]
    assert "printed ['train', '--x'] yes" in lines  # its command line and exactly its environment
    assert "INFO retrainer.steps: logged" in lines  # its own log handler, its loggers enabled
    assert "command line ['retrainer', 'train', '--x']" in lines  # as ps shows a fresh trainer
    assert any("UserWarning: warned" in line for line in lines)
    assert "logged" not in log_channel.read_text(), "nothing of the trainer in the launcher's log channel"
    assert "printed" not in done.stdout
