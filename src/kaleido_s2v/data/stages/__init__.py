"""Pipeline stages: one module each, every one with named offline and model-backed backends."""
