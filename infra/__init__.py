"""Deployment: the SAM template's companions (Dockerfile, local stack built from template.yaml)."""
