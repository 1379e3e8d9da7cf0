"""safealign: safety-alignment research pipelines on one training loop."""

__version__ = "0.1.0"
