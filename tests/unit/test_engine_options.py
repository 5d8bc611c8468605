"""Engine options are built once, from the settings, for the primary and the fallback engine."""

from __future__ import annotations

import dataclasses

from emostt.config import Settings
from emostt.server.engines import engine_options


def test_the_fallback_engine_gets_the_primarys_options_but_its_own_device_and_precision() -> None:
    settings = Settings(
        device="cuda:0",
        precision="bf16",
        hub="hf",
        threads=3,
        load_timeout_s=42.0,
        backend="torch",
        onnx_cache_dir="/var/cache/emostt-onnx",
        fallback_device="cpu",
    )
    primary = engine_options(settings, background_export=True)
    fallback = engine_options(settings, device=settings.fallback_device, background_export=True)
    assert (primary.device, primary.precision) == ("cuda:0", "bf16")
    # A precision belongs to a device: bf16 does not run on the CPU.
    assert (fallback.device, fallback.precision) == ("cpu", "auto")
    same = {"device", "precision"}
    for field in dataclasses.fields(primary):
        if field.name not in same:
            assert getattr(fallback, field.name) == getattr(primary, field.name), field.name
    assert (
        fallback.load_timeout_s,
        fallback.threads,
        fallback.backend,
        fallback.onnx_cache_dir,
        fallback.hub,
    ) == (
        42.0,
        3,
        "torch",
        "/var/cache/emostt-onnx",
        "hf",
    )


def test_every_engine_setting_reaches_the_options() -> None:
    settings = Settings(device="cpu", precision="fp32", threads=2, load_timeout_s=5.0, backend="onnx")
    options = engine_options(settings)
    assert (options.device, options.precision, options.threads, options.load_timeout_s, options.backend) == (
        "cpu",
        "fp32",
        2,
        5.0,
        "onnx",
    )
    assert options.background_export is False, (
        "a one-shot run (emostt transcribe) never exports in the background"
    )
