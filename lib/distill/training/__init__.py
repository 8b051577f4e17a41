"""Supervised fine-tuning of the student on the curated data: packing, the training loop, its launchers."""
