"""A ``model_fn`` that fails: the model answers 500, the server and its other models keep serving."""


def model_fn(model_dir):
    raise RuntimeError(f"model_fn found no weights in {model_dir}")
