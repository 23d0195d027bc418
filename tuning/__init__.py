"""tune: hyperparameter search for Mars terrain segmentation (Optuna, Ray Tune, Keras Tuner)."""

__version__ = "0.1.0"
