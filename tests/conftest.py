"""Session-wide fixtures for every test package: one real noida-db broker and one real vLLM OpenAI server (CPU),
shared by the integration, failure and deploy tests (the broker-restart test starts its own broker; the
model-outage test kills the shared server and starts it again before it returns). Both start lazily: unit-test
runs never pay for them."""

import pytest

from rationad.broker import LocalBroker
from rationad.fetch_pacing import pace_empty_fetches
from tests.integration.harness import VllmServer, model_dir

# The tests' own consumers (collectors, offset readers) pace their empty fetches like the daemon's: noida-db answers
# a fetch at once, and an unpaced idle consumer spins a core the model under test needs (rationad/fetch_pacing.py).
pace_empty_fetches()


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
