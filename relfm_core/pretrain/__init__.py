"""Pretraining: the prior of synthetic databases and tasks, episodes, and the training loop."""
