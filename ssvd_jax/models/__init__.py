"""Flax Linen modules: ResNet body, FPN, RetinaNet heads and the detectors built from them."""
