"""ormbg: the ORMBG background-removal model (training, evaluation, inference, export)."""

__version__ = "0.1.0"
