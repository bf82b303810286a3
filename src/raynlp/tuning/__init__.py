"""Hyperparameter search: the job config's ``tune:`` section → Ray Tune over the training loop."""
