"""The model stage's clients: ``base`` (the protocol and ``make_client``), ``engine`` (in-process vLLM) and
``server`` (an OpenAI-compatible vLLM server over HTTP). Only ``base`` is imported eagerly: it needs neither torch
nor vLLM."""

from rationad.model.base import Completion, ModelClient, ModelError, make_client

__all__ = ["Completion", "ModelClient", "ModelError", "make_client"]
