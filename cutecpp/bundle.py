"""Bundle naming rules shared by the converter and the tests (docs/bundle-format.md)."""

from __future__ import annotations

FORMAT_VERSION = 1

# ggml (the copy llama-cpp-python installs, which cutecpp shares) stores tensor
# names in 64 bytes including the terminating NUL, and its GGUF reader refuses
# longer ones. diffusers names reach 69 bytes, so one path segment is abbreviated.
MAX_TENSOR_NAME = 63
ABBREVIATIONS = (("transformer_blocks.", "tb."),)
# Per component, for names that only it has too long: the SD VAE encoder's
# "vae_encoder.encoder.down_blocks.1.resnets.0.conv_shortcut.weight" is 64 bytes. (Not for
# every component: the UNet's and the VAE decoder's names fit, and existing bundles keep them.)
COMPONENT_ABBREVIATIONS = {"vae_encoder": ((".conv_shortcut.", ".shortcut."),)}


def tensor_name(component: str, checkpoint_name: str) -> str:
    """The bundle's name for a checkpoint tensor of `component` ("unet", ...)."""
    name = checkpoint_name
    for long, short in ABBREVIATIONS + COMPONENT_ABBREVIATIONS.get(component, ()):
        name = name.replace(long, short)
    name = f"{component}.{name}"
    if len(name.encode()) > MAX_TENSOR_NAME:
        raise ValueError(f"tensor name {name!r} is longer than {MAX_TENSOR_NAME} bytes")
    return name
