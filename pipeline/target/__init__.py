"""Target kinds other than the neural ones (shuffle, pixel, feature-model, random) and their checks."""
