"""Deployment: the SAM template's companions (the worker image's Dockerfile)."""
