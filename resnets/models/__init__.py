"""The model zoo: ImageNet ResNets and family (imagenet.py), CIFAR ResNets and WRNs (cifar.py), CIFAR
ResNeXt (resnext_cifar.py).

Importing this package registers every model; use ``create_model`` / ``list_models``.
"""

from . import cifar, imagenet, resnext_cifar  # noqa: F401  (registers the models)

# isort: split
# The survey families (issue 16): VGG, DenseNet, FractalNet, Highway, Inception(-ResNet), Multi-ResNet,
# PolyNet, RoR.
from . import densenet, fractalnet, highway, inception, inception_resnet, multiresnet, polynet, ror, vgg  # noqa: F401
from .registry import create_model, create_model_from_spec, list_models, model_spec, register_model

__all__ = ["create_model", "create_model_from_spec", "list_models", "model_spec", "register_model"]
