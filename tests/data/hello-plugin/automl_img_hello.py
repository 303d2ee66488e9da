"""automl-img-hello: registers the ``hello-mlp`` architecture through the automl_img entry point."""

from automl_img import hookimpl


@hookimpl
def register_architectures(register):
    register("hello-mlp", build_hello_mlp)


def build_hello_mlp(hp, input_shape, num_classes):
    """A one-hidden-layer perceptron, the smallest network worth searching."""
    import keras

    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(hp.Int("hello_units", 16, 64, step=16), activation="relu")(
        keras.layers.Flatten()(inputs)
    )
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(hidden))
