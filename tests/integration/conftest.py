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
