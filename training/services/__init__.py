"""Writes of the training app (base-model registry, fine-tune jobs). Views, the API, tasks
and commands call these; reads live in ``training.selectors``."""
