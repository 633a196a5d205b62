"""Experiment configs (ml_collections). Every number of an experiment lives here."""
