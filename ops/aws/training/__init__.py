"""`make train TARGET=aws`: base.py (options, outcome, backend protocol, run record), run.py (one run from price to
outcome), and one module per backend, ecs.py and sagemaker.py, which import only base.py of this package."""
