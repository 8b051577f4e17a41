"""distill: verified, quality-filtered reasoning-distillation datasets with Spark and Delta."""

__version__ = "0.1.0"
