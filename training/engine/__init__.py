"""MedPortal's Django-free training engine: configs, prompt templates, model folders, the LoRA runner.

Keep this module empty of imports: ``training.engine.config`` and ``training.engine.templates`` must stay
cheap to import (torch and transformers are imported lazily where they are needed).
"""
