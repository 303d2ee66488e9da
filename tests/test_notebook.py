"""The notebook path, in a real Jupyter kernel: the tutorial (docs/tutorial.ipynb) runs from top to bottom
without a traceback, and the stop button ends a search as Ctrl-C does on the command line."""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import nbformat
import optuna
import pytest
from helpers import REPO
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from optuna.trial import TrialState

pytestmark = [pytest.mark.slow, pytest.mark.system]  # a real Jupyter kernel whose trials run in trial processes

TUTORIAL = REPO / "docs" / "tutorial.ipynb"


def _texts(cell) -> list[str]:
    """Everything a cell showed: streams, results and displays, as text and HTML."""
    found = []
    for output in cell.get("outputs", []):
        found.append(output.get("text", ""))
        found += [str(value) for value in output.get("data", {}).values()]
        found += output.get("traceback", [])
    return found


def _cell(notebook, starts_with: str):
    """The code cell whose source starts so (the whole source, for a one-word cell)."""
    return next(
        cell
        for cell in notebook.cells
        if cell.cell_type == "code"
        and (cell.source == starts_with or (cell.source.startswith(starts_with) and len(starts_with) > 10))
    )


def test_the_tutorial_runs_in_a_real_kernel_without_a_traceback(workdir):
    notebook = nbformat.read(TUTORIAL, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "commit the tutorial without outputs"
    )
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.source
            assert not any("Traceback" in text for text in _texts(cell)), (cell.source, _texts(cell))

    # The search's one display, redrawn in place, ended with every trial and the summary.
    progress = "".join(_texts(_cell(notebook, "result = automl_img.search(")))
    assert "<progress value='4' max='4'" in progress and "4/4 trials finished" in progress
    assert "trial #3 complete" in progress and "best: trial #" in progress and "next: result.export_best()" in progress
    assert "\x1b[" not in progress  # no terminal escape codes
    table = "".join(_texts(_cell(notebook, "result")))
    assert "<table>" in table
    digits = optuna.load_study(study_name="digits", storage=f"sqlite:///{workdir}/studies/automl-img.db")
    assert sum(t.state == TrialState.COMPLETE for t in digits.trials) == 4

    exported = "".join(_texts(_cell(notebook, "bundle = result.export_best()")))
    assert "test split: 269 images, accuracy" in exported and (workdir / "studies/digits/export/model.keras").is_file()
    on_arrays = _cell(notebook, "import numpy as np")
    [result] = [o for o in on_arrays.outputs if o.output_type == "execute_result"]
    assert "<table" in result.data["text/html"] and "array 7" in result.data["text/plain"]
    assert "of the 179 sevens are called 7" in "".join(_texts(_cell(notebook, "from PIL import Image")))

    # The architecture defined in a cell trained in a trial process of its own.
    tiny = optuna.load_study(study_name="digits-tiny-cnn", storage=f"sqlite:///{workdir}/studies/automl-img.db")
    [trial] = tiny.trials
    assert trial.state == TrialState.COMPLETE and trial.params["filters"] in (16, 32)
    assert trial.user_attrs["history"] and (workdir / "studies/digits-tiny-cnn" / trial.user_attrs["weights"]).is_file()

    page = "".join(_texts(_cell(notebook, 'automl_img.report("digits")')))
    assert "<iframe srcdoc=" in page and "Optimisation history" in page and "data:image/png;base64" in page


def _kernel(workdir: Path) -> tuple[KernelManager, object]:
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(workdir), env=dict(os.environ))
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=120)
    return manager, client


def _outputs_until(client, msg_id: str, seen: list[str], until, timeout: float) -> None:
    """Collect the cell's text output (streams, displays and their updates) until ``until(text)`` or idle."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            message = client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        content = message["content"]
        seen.append(
            content.get("text", "")
            + str(content.get("data", {}).get("text/plain", ""))
            + "".join(content.get("traceback", []))
        )
        if until("".join(seen)) or (message["msg_type"] == "status" and content["execution_state"] == "idle"):
            return
    raise AssertionError(f"no such output within {timeout} s: {''.join(seen)[-2000:]}")


def _spawned_children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
                children.append(int(entry.name))
    return children


def test_the_stop_button_ends_the_search_cleanly(workdir):
    manager, client = _kernel(workdir)
    try:
        # Two trials of 30 epochs: the interrupt lands in the middle of trial 0's training.
        call = "result = automl_img.search(dataset='digits', trials=2, epochs=30, patience=30, seed=0)"
        msg_id = client.execute(f"import automl_img\n{call}")
        seen: list[str] = []
        _outputs_until(client, msg_id, seen, lambda text: "epoch 2/30" in text, timeout=300)
        manager.interrupt_kernel()
        _outputs_until(
            client, msg_id, seen, lambda text: "search ended" in text and "Run the same call again" in text, timeout=120
        )
        reply = client.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok", "".join(seen)
        assert "Traceback" not in "".join(seen) and "KeyboardInterrupt" not in "".join(seen)

        storage = f"sqlite:///{workdir}/studies/automl-img.db"
        [trial] = optuna.load_study(study_name="digits", storage=storage).trials
        assert trial.state == TrialState.FAIL  # the trial in flight, marked failed, not left running
        deadline = time.time() + 30
        while _spawned_children(manager.provisioner.process.pid) and time.time() < deadline:
            time.sleep(0.5)
        assert not _spawned_children(manager.provisioner.process.pid), "a trial process outlived the interrupt"

        check = client.execute("print('interrupted:', result.interrupted, result.counts.failed)")
        printed: list[str] = []
        _outputs_until(client, check, printed, lambda text: "interrupted:" in text, timeout=60)
        assert "interrupted: True 1" in "".join(printed)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
