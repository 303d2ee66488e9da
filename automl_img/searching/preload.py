"""Imported once by the server that forks trial processes (``runners``), so that each trial starts with
TensorFlow already loaded instead of importing it again (about 5 s of CPU a trial on a two-core machine).

Only the import happens here: no device is discovered, no thread pool or session is made, because what a
process has initialised (CUDA above all) does not survive a fork. ``tf_runtime`` does that in each trial."""

from __future__ import annotations

from automl_img.native_output import muted_stderr

with muted_stderr():  # TensorFlow's start-up notes, as tf_runtime mutes them
    import keras  # noqa: F401
    import tensorflow  # noqa: F401
