"""Test set-up: everything offline. A loopback Hub stand-in is started *before* huggingface_hub is imported,
and every cache points into a temporary folder, so no test can reach the internet or a user's cache."""
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakehub import FakeHub  # noqa: E402

FAKE_HUB = FakeHub()
_TMP = tempfile.mkdtemp(prefix="icmlm-tests-")
os.environ["HF_ENDPOINT"] = FAKE_HUB.url
os.environ["HF_HUB_CACHE"] = os.path.join(_TMP, "hf-cache")
os.environ["HF_HOME"] = os.path.join(_TMP, "hf-home")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_ETAG_TIMEOUT"] = "5"
os.environ["HF_TOKEN"] = "hf_loopback_test_token"
os.environ["ICMLM_ZOO_CACHE"] = os.path.join(_TMP, "icmlm-cache")
os.environ["TORCH_HOME"] = os.path.join(_TMP, "torch-home")
os.environ.pop("ICMLM_ZOO_MANIFEST", None)
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("TRANSFORMERS_OFFLINE", None)
os.environ.pop("ICMLM_ZOO_HUB_ORG", None)
os.environ.pop("ICMLM_ZOO_HUB_ENDPOINT", None)

import pytest  # noqa: E402

# the training fixtures (the real MiniLM, a tag file) for every test module, without importing them by name
pytest_plugins = ["train_fixtures"]


@pytest.fixture(scope="session")
def fake_hub() -> FakeHub:
    return FAKE_HUB


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch):
    """Fresh Hub and zoo caches for one test."""
    import huggingface_hub.constants as hfc

    hub_cache = tmp_path / "hf-cache"
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("ICMLM_ZOO_CACHE", str(tmp_path / "icmlm-cache"))
    return tmp_path


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test: tiny tensors run as fast alone and much faster on a busy CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
