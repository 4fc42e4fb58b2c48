"""Bodies of the training app's background work, one module per kind (``medportal.jobs``):
``finetune`` (the gpu cluster), ``evaluation`` (the gpu cluster), ``merge`` (the default cluster).
Each claims its row through ``medportal.jobs`` and records its end there; ``training.tasks``
calls them with the row's id."""
