import warnings
from pathlib import Path

import pytest

try:
    import cutecpp  # noqa: F401
except ImportError as exc:
    pytest.exit(
        f"cannot import the installed cutecpp ({exc}). Install it with `pip install .` and run "
        "`pytest` from the repository root (not `python -m pytest`, which imports the source tree).",
        returncode=4,
    )

warnings.filterwarnings("ignore", category=FutureWarning)

from bundles import Bundle, full_bundle, unet_bundle  # noqa: E402


@pytest.fixture(scope="session")
def micro() -> Bundle:
    """The smallest valid bundle (a diffusers UNet with 51k parameters)."""
    return unet_bundle("micro")


@pytest.fixture(scope="session")
def micro_path(micro: Bundle, tmp_path_factory) -> Path:
    return micro.write(tmp_path_factory.mktemp("bundles") / "micro.gguf")


@pytest.fixture(scope="session")
def full_path(tmp_path_factory) -> Path:
    """A valid bundle with every component (bundles.FULL_COMPONENTS)."""
    return full_bundle().write(tmp_path_factory.mktemp("bundles") / "full.gguf")
