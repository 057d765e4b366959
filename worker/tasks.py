"""Celery tasks: thin wrappers around plain functions in ``worker/``, taking ids only."""

from __future__ import annotations

from worker.app import app  # noqa: F401  (tasks register on this app)
