"""TensorFlow and Keras, imported once and quietly.

TensorFlow's C++ runtime prints start-up lines (oneDNN notes, "could not find cuda drivers",
a failed cuInit on CPU-only machines) to file descriptor 2 before its log level applies; they
alarm users and drown the real output, so the import and device discovery run with fd 2 muted.
Import this module only where training or inference really happens: it costs seconds.

The ~400,000 objects the import creates live as long as the process, yet every full garbage collection
walks them again: 0.25 s each here, and Keras' ``clear_session`` runs one after every model a search
builds. ``gc.freeze()`` after the import sets them aside (Python's advice for servers that fork, too).
"""

from __future__ import annotations

import gc
import os

from automl_img.native_output import muted_stderr

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_quietly():
    with muted_stderr():
        import keras
        import tensorflow

        tensorflow.config.list_physical_devices()  # device discovery is where cuInit complains
    return tensorflow, keras


tf, keras = _import_quietly()
gc.freeze()
