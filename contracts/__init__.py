"""Contracts shared by the training half (model_build) and the worker half (handler).

Each contract of ARCHITECTURE.md lives in exactly one module here; both halves import it.
Nothing in this package imports TensorFlow, because the worker's Lambda image has none.
"""
