"""Resolution and speed (issue 32): the defaults are queued at several image sizes with width traded for
resolution, trials are priced before they start, a time limit cuts training mid-epoch and never scores a cut
trial, mixed precision is chosen from the hardware, and batch norm trains through the fused kernel with
Keras' own arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from optuna.trial import TrialState

from automl_img.errors import StudyError
from automl_img.models.families import Families
from automl_img.models.precision import resolve
from automl_img.searching.fidelity import estimated_seconds, shortest_training
from automl_img.space import DefaultHyperParameters, Range, default_image_sizes, starting_image_sizes
from automl_img.study.records import EpochRow, TrialRecord


@pytest.mark.parametrize(
    ("native", "override", "sizes"),
    [
        (224, None, [64, 128, 224]),  # X-ray-like: cheap first, then the sizes a fine detail needs
        (3000, None, [64, 128, 256]),
        (28, None, [28]),  # small images: nothing larger to try
        (8, None, [8]),
        (96, None, [64, 96]),
        (224, 128, [128]),  # -p image_size=128 fixes it
        (224, [96, 192], [96, 192]),  # -p image_size=96,192 chooses among those
        (224, Range(100, 200), [128, 192]),
    ],
)
def test_defaults_start_at_each_resolution_the_data_allows(native, override, sizes):
    assert starting_image_sizes(default_image_sizes(native), override) == sizes


@pytest.mark.slow
def test_the_first_rung_also_trains_the_defaults_without_the_warp(workdir, some_digits):
    """The defaults, then the same without rotation, zoom or shifts (a pixel-wide detail survives); the startup
    sampler still centres on the warped defaults. A ``-p`` on the warp leaves that trial out, and so does a search
    too short to run it after the starting sizes and one sampled trial."""
    from helpers import load_study, run, trials_of

    from automl_img.searching.samplers import defaults

    short = ["--trials", 3, "--epochs", 1, "-p", "image_size=8"]
    run("search", some_digits, *short)
    first, second, _ = trials_of("some-digits")
    warp = ("rotation", "zoom", "width_shift", "height_shift")
    assert all(first.params[name] > 0 for name in warp) and all(second.params[name] == 0 for name in warp)
    assert {k: v for k, v in second.params.items() if k not in warp} == {
        k: v for k, v in first.params.items() if k not in warp
    }
    assert second.user_attrs["unwarped_start"] is True and "unwarped_start" not in first.user_attrs
    assert {name: defaults(load_study("some-digits"))[name] for name in warp} == {n: first.params[n] for n in warp}
    run("search", some_digits, "--study", "warped", *short, "-p", "zoom=0.1")
    assert not any(t.user_attrs.get("unwarped_start") for t in trials_of("warped"))
    run("search", some_digits, "--study", "short", "--trials", 2, "--epochs", 1, "-p", "image_size=8")
    assert not any(t.user_attrs.get("unwarped_start") for t in trials_of("short"))


def test_blog_cnn_trades_width_for_resolution_at_its_defaults():
    """Above 64 px the default has one convolution per block, and above 128 px a patchify stem: a 128 or 224 px
    default trial costs about what the 64 px one does, not four or twelve times as much. The stem holds as many
    numbers as the pixels it reads, so it can pass each of them on."""
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.models import training

    costs = {}
    for size in (64, 128, 224, 227):  # 227: an odd native size keeps its last row
        hp = DefaultHyperParameters({"image_size": size})
        model, _ = training.build_for_trial(Families.single(build_blog_cnn, [size]), hp, 1, 5)
        costs[size] = training.forward_gflop(model)
        assert hp.values["convs_per_block"] == (2 if size <= 64 else 1)
        assert hp.values["stem"] == ("patchify" if size > 128 else "none")
        if size > 128:
            half = (size + 1) // 2
            assert model.get_layer("blog_cnn").get_layer("patchify").output.shape[1:] == (half, half, 4)
    assert costs[128] < 1.3 * costs[64] and costs[224] < 1.3 * costs[64], costs


def _record(number, state=TrialState.COMPLETE, seconds=10.0, epochs=4, images=1000, gflop=0.5, size=64):
    return TrialRecord(
        number,
        state,
        0.5,
        {"image_size": size},
        {},
        seconds=seconds,
        history=[EpochRow(e + 1, 1.0, {}) for e in range(epochs)],
        epochs=epochs,
        train_images=images,
        forward_gflop=gflop,
    )


def test_a_trial_is_priced_from_the_pace_of_finished_ones_scaled_by_its_cost():
    finished = [_record(0, seconds=10.0, gflop=0.5), _record(1, seconds=30.0, gflop=1.5)]  # one pace: 5e-3 s
    assert estimated_seconds([], 1.0, 4, 1000) is None
    cost = estimated_seconds(finished, 3.0, 4, 1000)  # a model 6x the first trial's cost
    assert cost == pytest.approx(60.0 * 1.1)
    failed = _record(2, state=TrialState.FAIL, seconds=1000.0)
    assert estimated_seconds([*finished, failed], 3.0, 4, 1000) == cost  # only finished trainings set the pace
    slow = _record(4, seconds=40.0, gflop=0.5)  # its configuration paid 2e-2 s an image-epoch-GFLOP
    assert estimated_seconds([*finished, slow], 0.5, 8, 1000, parent=4) == pytest.approx(80.0 * 1.1)
    assert estimated_seconds([*finished, slow], 0.5, 8, 1000, parent=9) == pytest.approx(20.0 * 1.1)  # the median
    large = _record(5, seconds=26.0, gflop=0.5, size=224)  # 224 px paid 1.3x the 64 px trials' pace per GFLOP
    assert estimated_seconds([*finished, large], 0.5, 4, 1000, image_size=224) == pytest.approx(26.0 * 1.1)
    assert estimated_seconds([*finished, large], 0.5, 4, 1000, image_size=64) == pytest.approx(10.0 * 1.1)
    assert estimated_seconds([*finished, large], 0.5, 4, 1000, image_size=128) == pytest.approx(10.0 * 1.1)  # none
    assert shortest_training([*finished, failed, _record(3, state=TrialState.PRUNED, seconds=2.0)]) == 10.0


def _train_with_limits(**limits):
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.models import training

    hp = DefaultHyperParameters({"batch_size": 8, "image_size": 16})
    model, params = training.build_for_trial(Families.single(build_blog_cnn, [16]), hp, 1, 3)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (408, 16, 16, 1), dtype=np.uint8), np.arange(408) % 3
    result = training.train(
        model, images, labels, np.arange(400), np.arange(400, 408), params, training.Limits(5, **limits)
    )
    return result, int(model.optimizer.iterations)


def test_the_study_time_limit_stops_training_within_a_batch_and_marks_it_cut():
    """A limit already past when training starts: one batch of the first epoch's 50, then stop, nothing scored."""
    import time

    result, batches = _train_with_limits(deadline=time.time())
    assert result.cut and result.stopped_by == "study time limit"
    assert batches == 1 and result.epochs_run == 0 and result.best_value is None


@pytest.mark.slow  # a real search of two trials
def test_a_trial_time_limit_waits_for_the_epoch_and_is_not_a_cut():
    """The trial's own limit is the user's choice for every trial alike: the epoch in flight is finished and
    scored, and the trial is kept, not failed."""
    result, batches = _train_with_limits(trial_seconds=0.0)
    assert not result.cut and result.stopped_by == "trial time limit"
    assert batches == 50 and result.epochs_run == 1 and result.best_value is not None
    finished, _ = _train_with_limits()
    assert not finished.cut and finished.stopped_by == "max epochs" and finished.epochs_run == 5


def test_auto_precision_follows_the_hardware():
    assert resolve("auto", flags={"avx2", "avx512f", "avx512_bf16"}) == "bfloat16"
    assert resolve("auto", flags={"avx2", "amx_bf16"}) == "bfloat16"
    assert resolve("auto", flags={"avx2", "avx512f"}) == "float32"
    assert resolve("auto", gpu_capabilities=[(9, 0)], flags=set()) == "bfloat16"  # H100
    assert resolve("auto", gpu_capabilities=[(7, 5)], flags=set()) == "float16"  # T4: loss scaling
    assert resolve("auto", gpu_capabilities=[(6, 1)], flags={"avx512_bf16"}) == "float32"  # the GPU trains
    assert resolve("float16", flags=set()) == "float16"
    with pytest.raises(StudyError, match="unknown precision 'half'"):
        resolve("half")


def test_mixed_precision_computes_in_bfloat16_and_outputs_float32_probabilities():
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.models import precision, training

    try:
        assert precision.apply("bfloat16") == "bfloat16"
        hp = DefaultHyperParameters({"image_size": 16})
        model, _ = training.build_for_trial(Families.single(build_blog_cnn, [16]), hp, 1, 3)
        convolution = next(layer for layer in training.leaf_layers(model) if type(layer).__name__ == "Conv2D")
        assert convolution.compute_dtype == "bfloat16" and convolution.kernel.dtype == "float32"
        outputs = model(np.zeros((2, 16, 16, 1), np.uint8))
        assert outputs.dtype == "float32"
    finally:
        precision.apply("float32")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_batch_norm_trains_with_keras_arithmetic(dtype):
    """The fused kernel gives the outputs and moving statistics of Keras' own BatchNormalization code."""
    from automl_img.models import fused_batch_norm
    from automl_img.tf_runtime import keras

    fused_batch_norm.install()
    x = np.random.default_rng(0).normal(2.0, 3.0, (8, 6, 6, 4)).astype(np.float32)
    policy = "mixed_bfloat16" if dtype == "bfloat16" else "float32"
    layers = [keras.layers.BatchNormalization(momentum=0.9, dtype=policy) for _ in range(2)]
    for layer in layers:
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, 4))
        layer.beta.assign(np.linspace(-1.0, 1.0, 4))
    fused_out = layers[0](x, training=True)
    keras_out = fused_batch_norm._keras_call(layers[1], keras.ops.cast(x, layers[1].compute_dtype), training=True)
    tolerance = 1e-4 if dtype == "float32" else 3e-2
    assert str(fused_out.dtype) == f"<dtype: '{dtype}'>"
    np.testing.assert_allclose(
        np.asarray(keras.ops.cast(fused_out, "float32")),
        np.asarray(keras.ops.cast(keras_out, "float32")),
        atol=tolerance,
    )
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(
            getattr(layers[0], name).numpy(),
            getattr(layers[1], name).numpy(),
            rtol=1e-3 if dtype == "float32" else 2e-2,
        )
    inference = layers[0](x, training=False)  # Keras' own code: what exported models run
    assert inference.shape == x.shape


def test_batch_norm_statistics_are_estimated_again_from_training_images_before_scoring():
    """The moving mean and variance become the plain average of the batch statistics of whole batches of the
    training rows, whatever they held; frozen batch norm and the layers' momentum are left as they were."""
    from automl_img.models import training
    from automl_img.tf_runtime import keras

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 4, 4, 1), dtype=np.uint8)
    inputs = keras.Input((4, 4, 1), dtype="uint8")
    scaled = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    trained = keras.layers.BatchNormalization(momentum=0.99)
    frozen = keras.layers.BatchNormalization(trainable=False)
    model = keras.Model(inputs, frozen(trained(scaled)))
    for layer in (trained, frozen):
        layer.moving_mean.assign([5.0])
        layer.moving_variance.assign([9.0])
    rows = np.arange(10, 90)  # a quarter of 80 rows: two whole batches of 8 (count floors to the batch)
    training.reestimate_batch_norm(model, images, rows, batch_size=8)

    picked = np.random.default_rng(0).permutation(rows)[:16]
    pixels = images[picked].astype(np.float32) / 255.0
    batches = pixels.reshape(2, 8, -1)
    np.testing.assert_allclose(trained.moving_mean.numpy(), [batches.mean(axis=(1, 2)).mean()], rtol=1e-4)
    np.testing.assert_allclose(trained.moving_variance.numpy(), [batches.var(axis=(1, 2)).mean()], rtol=1e-3)
    assert trained.momentum == 0.99
    assert frozen.moving_mean.numpy().tolist() == [5.0] and frozen.moving_variance.numpy().tolist() == [9.0]


def test_a_cut_promotion_that_trained_longer_than_its_parent_is_kept():
    """The final phase's promotion is sized to the time left; when the machine slows down and the limit cuts it,
    it is still a longer training of a scored configuration: kept. A cut new configuration is not."""
    import optuna

    from automl_img.searching.trial import Objective
    from automl_img.study import records

    study = optuna.create_study()
    parent = study.ask()
    records.write(parent, history=[EpochRow(e, 1.0, {}) for e in range(1, 14)], epochs=13)
    study.tell(parent, 0.9)
    records.enqueue(study, {}, epochs=40, promoted_from=parent.number)
    promotion = study.ask()
    assert Objective._trained_longer_than_its_parent(promotion, 37)
    assert not Objective._trained_longer_than_its_parent(promotion, 13)
    assert not Objective._trained_longer_than_its_parent(study.ask(), 37)  # not a promotion
