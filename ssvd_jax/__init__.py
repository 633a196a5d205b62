"""SSVD, the Single Shot Video Object Detector, in JAX/Flax."""
