"""Fixtures of the failure tests: one noida-db broker and one vLLM OpenAI server (CPU) for the whole session, shared
by the tests that do not break them (the broker-restart test starts its own broker; the model-outage test kills
the shared server and starts it again before it returns)."""

import pytest

from rationad.broker import LocalBroker
from tests.integration.harness import VllmServer, model_dir


@pytest.fixture(scope="session")
def broker():
    with LocalBroker() as b:
        yield b


@pytest.fixture(scope="session")
def model():
    return model_dir()


@pytest.fixture(scope="session")
def vllm_server(model, tmp_path_factory):
    server = VllmServer(model, log_path=tmp_path_factory.mktemp("vllm") / "server.log").start()
    yield server
    server.stop()
