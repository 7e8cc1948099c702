"""Cube agent: a backend-agnostic LLM proxy."""

__version__ = "0.1.0"
