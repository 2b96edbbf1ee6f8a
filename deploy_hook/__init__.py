"""The deployment's pre-traffic hook (a Lambda function of its own; see pre_traffic.py)."""
