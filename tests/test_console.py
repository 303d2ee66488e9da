"""What a person sees: on a terminal, one live line for the trial in progress; piped, a line per epoch."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pyte
import pytest

COLUMNS, ROWS = 160, 60


def screen_after(command: list[str], cwd) -> list[str]:
    """Run ``command`` on a real pseudo-terminal and return the lines a terminal emulator ends up showing."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(ROWS)}
    process = subprocess.Popen(command, cwd=cwd, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    output = b""
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=60)
    os.close(leader)
    screen = pyte.Screen(COLUMNS, ROWS)
    stream = pyte.ByteStream(screen)
    stream.feed(output.replace(b"\n", b"\r\n"))  # the terminal's own newline translation, done by pyte here
    return [line.rstrip() for line in screen.display if line.strip()]


@pytest.mark.slow  # two real trials on a pseudo-terminal
def test_terminal_shows_one_line_per_finished_trial_and_no_epoch_lines(workdir, digits_dir):
    command = [
        sys.executable,
        "-m",
        "automl_img",
        "search",
        str(digits_dir),
        "--trials",
        "2",
        "--epochs",
        "2",
        "-p",
        "image_size=8",
        "--seed",
        "0",
        "--pruner",
        "none",
    ]
    lines = screen_after(command, workdir)
    assert not any(re.search(r"epoch \d+(/2)?:", line) for line in lines), lines  # live lines go when trials end
    assert [line.split(" ")[1] for line in lines if line.startswith("trial #") and " complete " in line] == [
        "#0",
        "#1",
    ], lines
    assert any(line.startswith("search ended: the study has 2 finished trials") for line in lines), lines
    assert sum(line.startswith("trial #") for line in lines) == 4, lines  # per trial: its parameters, its outcome

    # Piped, the live line is a line per epoch instead: test_smoke.py checks those.


def test_eta_never_runs_past_the_time_limit():
    from automl_img.display.console import _Tally

    tally = _Tally(trials=50, timeout=1200)
    tally.started -= 60  # one trial took a minute: 49 more would take 49 minutes
    tally.finished_here = 1
    assert 1130 <= tally.eta <= 1140  # the run ends at --timeout, 20 minutes after it started
    unlimited = _Tally(trials=50)
    unlimited.started -= 60
    unlimited.finished_here = 1
    assert 49 * 60 - 2 <= unlimited.eta <= 49 * 60 + 2


NOISY_PLUGIN = """
import sys

from automl_img import hookimpl


@hookimpl
def register_architectures(register):
    register("noisy-cnn", build_noisy_cnn)


def build_noisy_cnn(hp, input_shape, num_classes):
    \"\"\"blog-cnn, after a line written by TensorFlow's C++ runtime to file descriptor 2.\"\"\"
    import tensorflow as tf

    from automl_img.default_plugins.blog_cnn import build_blog_cnn

    tf.print("E0000 00:00:1 native line from the trial process", output_stream=sys.stderr)
    return build_blog_cnn(hp, input_shape, num_classes)
"""


@pytest.mark.slow
@pytest.mark.system  # the trial runs in a trial process, as a user's search does
def test_native_log_lines_of_a_trial_go_to_the_study_log_not_the_terminal(workdir, digits_dir):
    """TensorFlow's C++ runtime writes past Python (an "E0000 ... oneDNN supports DT_UINT8" line was seen with
    16-bit and RGBA images); a trial process's file descriptor 2 goes to studies/STUDY/trials.log."""
    (workdir / "plugins").mkdir()
    (workdir / "plugins" / "noisy.py").write_text(NOISY_PLUGIN)
    command = [sys.executable, "-m", "automl_img", "search", str(digits_dir), "--architecture", "noisy-cnn"]
    lines = screen_after([*command, "--trials", "1", "--epochs", "1", "--seed", "0"], workdir)
    assert any(line.startswith("search ended: the study has 1 finished trials") for line in lines), lines
    assert not any("native line" in line for line in lines), lines
    assert not [line for line in lines if re.match(r"[IWEF]\d{4} ", line)], lines  # absl's format: E0000 00:00:..
    assert "native line from the trial process" in (workdir / "studies" / "digits" / "trials.log").read_text()
