"""Training precision: float32, or mixed bfloat16/float16 where the hardware computes it natively.

Mixed precision keeps every weight in float32 and computes layers in the low precision; the softmax and the
loss stay in float32 (``training.build_model``). Weights saved by a mixed-precision trial are float32, so
export rebuilds every model in float32 and the formats' parity checks are unchanged.

"auto" reads the hardware at run time (the CPU model behind one kind of machine varies): bfloat16 on a CPU
with AVX-512 BF16 or AMX instructions and on GPUs of compute capability 8.0 and newer, float16 (with loss
scaling, which Keras adds at compile) on GPUs of 7.x, float32 everywhere else.
"""

from __future__ import annotations

from pathlib import Path

from automl_img.errors import StudyError

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve(
    requested: str, gpu_capabilities: list[tuple[int, int]] | None = None, flags: set[str] | None = None
) -> str:
    """The precision ``requested`` means on this machine: "auto" becomes float32, bfloat16 or float16.

    ``gpu_capabilities``: the compute capabilities of the GPUs training will use (none: the CPU trains).
    """
    if requested not in PRECISIONS:
        raise StudyError(f"unknown precision {requested!r}; choose from {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if gpu_capabilities:
        oldest = min(gpu_capabilities)
        return "bfloat16" if oldest >= (8, 0) else "float16" if oldest >= (7, 0) else "float32"
    flags = cpu_flags() if flags is None else flags
    return "bfloat16" if any(flag in flags for flag in BF16_CPU_FLAGS) else "float32"


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities of the GPUs TensorFlow sees (imports TensorFlow)."""
    from automl_img.tf_runtime import tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(device).get("compute_capability")
        if capability:
            found.append(tuple(capability))
    return found


def apply(precision: str) -> str:
    """Make ``precision`` (or "auto", resolved here) Keras' policy for the models built from now on; returns it."""
    from automl_img.tf_runtime import keras

    concrete = resolve(precision, gpu_capabilities() if precision == "auto" else None)
    keras.mixed_precision.set_global_policy(_POLICIES[concrete])
    return concrete
