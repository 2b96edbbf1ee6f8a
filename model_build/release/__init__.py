"""Release: export to TFLite, the int8 and quality gates, publish."""
