"""The real broker and model fixtures of the integration tests, for the sd_notify test."""

from tests.integration.conftest import broker, model  # noqa: F401  (pytest fixtures)
