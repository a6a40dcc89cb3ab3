import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)

from bundles import Bundle, unet_bundle  # noqa: E402


@pytest.fixture(scope="session")
def micro() -> Bundle:
    """The smallest valid bundle (a diffusers UNet with 51k parameters)."""
    return unet_bundle("micro")


@pytest.fixture(scope="session")
def micro_path(micro: Bundle, tmp_path_factory) -> Path:
    return micro.write(tmp_path_factory.mktemp("bundles") / "micro.gguf")
