"""The model zoo, user model factories, and the export check that runs before training.

Every model takes raw pixels in [0, 255] and normalises inside, so the exported artifact needs no
preprocessing code on the serving side beyond decoding pixels (docs/artifact.md). Built-ins
(:mod:`trainer.model.zoo`):

- ``cnn``: :class:`SmallCNN`, sized for tiny images such as the 8x8 digits.
- ``resnet``: :class:`ResNet`, BasicBlock stages for larger images (32x32 up to 224x224 and beyond).
- ``mlp``: :class:`MLP`, the Keras MNIST multi-layer perceptron.
- ``convnet``: :class:`ConvNet`, the Keras "Simple MNIST convnet".

Anything else is a factory ``package.module:function`` (docs/trainer.md, :mod:`trainer.model.factory`),
imported from the job's code directory (``<SAGEMAKER_BASE_DIR>/code``) or an installed package and called as
``function(num_classes=..., input_shape=(C, H, W))``; it returns an ``nn.Module`` that takes normalised
``[N, C, H, W]`` float batches and returns ``[N, num_classes]`` logits.

:func:`build_model` (:mod:`trainer.model.build`) picks one; :mod:`trainer.model.export_check` proves before
training that it can be exported; :mod:`trainer.model.failures` turns a failure in the user's code into one line.
"""
