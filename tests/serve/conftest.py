"""One tiny model and one `glmv serve` process shared by the serve tests (starting a server costs seconds)."""

from __future__ import annotations

import pytest

from glmv.testing.server import serve_process
from glmv.testing.tiny_checkpoint import make_tiny_model_dir

API_KEY = "test-key-123"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("serve") / "tiny-glmv")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    """The one directory the server may read file:// media from."""
    return tmp_path_factory.mktemp("allowed_media")


@pytest.fixture(scope="session")
def server(model_dir, media_dir):
    """Default security settings, an API key, a 2 MiB body limit and short media timeouts."""
    with serve_process(model_dir, "--allowed-local-media-path", str(media_dir), "--max-request-mb", "2",
                       "--media-timeout", "2", api_key=API_KEY) as s:
        yield s
