"""Imported once by the server that forks trial processes (``runners``), so that each trial starts with
TensorFlow already loaded instead of importing it again (about 5 s of CPU a trial on a two-core machine).

Only the import happens here: no device is discovered, no thread pool or session is made, because what a
process has initialised (CUDA above all) does not survive a fork. ``tf_runtime`` does that in each trial.
"""

from __future__ import annotations

import atexit
import gc
import os
import signal

from automl_img.native_output import muted_stderr

# Ctrl-C reaches the whole process group, this server included, and it may come while the server still imports
# (the first seconds of a search): it printed a KeyboardInterrupt traceback beside the search's own clean summary.
# The search handles Ctrl-C (it stops its trial processes with SIGTERM, and they save); the server ignores it while
# importing, as multiprocessing makes it do afterwards, then puts the previous handler back.
_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    with muted_stderr():  # TensorFlow's start-up notes, as tf_runtime mutes them
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
finally:
    signal.signal(signal.SIGINT, _handler)
gc.freeze()  # as tf_runtime does: a trial's garbage collections skip what the import made

# The server ends when the search and its trials are gone, with nothing to save. The interpreter's usual teardown
# of TensorFlow took seconds there (tens under load), while the server still held the search's output open: a
# program reading that output to its end waited for it. Its trial processes leave through os._exit, never here.
atexit.register(os._exit, 0)
