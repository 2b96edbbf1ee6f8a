"""Helpers shared by the test tiers (fixtures that build real artifacts, fakes)."""
