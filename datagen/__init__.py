"""datagen: training data for background removal (synthesis, compositing, import, publishing)."""

__version__ = "0.1.0"
