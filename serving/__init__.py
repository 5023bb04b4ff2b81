"""The inference image: serves a model artifact on SageMaker's hosting contract."""
