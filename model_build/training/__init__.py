"""Training: backbones, the model, the fit phases and the feature cache."""
