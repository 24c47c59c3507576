"""SIFAR models: a registry of configs, timm backbones over super images, checkpoint conversion."""

from sifar.models import cnn, swin, vgg  # noqa: F401  (register their configs)
from sifar.models.compile import compile_model
from sifar.models.factory import create_model, resolve_config
from sifar.models.registry import ModelConfig, get_config, list_configs
from sifar.models.super_image import SuperImageClassifier
from sifar.models.weights import CheckpointError, load_pretrained

__all__ = [
    "CheckpointError", "ModelConfig", "SuperImageClassifier", "compile_model", "create_model", "get_config",
    "list_configs", "load_pretrained", "resolve_config",
]
