"""Service settings: environment (``EMOSTT_*``) and CLI flags, one documented field each."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from emostt.inference.model_source import DEFAULT_MODEL


class EngineSettings(BaseSettings):
    """How the model is loaded and run."""

    model_config = SettingsConfigDict(env_prefix="EMOSTT_", extra="ignore")

    model: str = Field(
        DEFAULT_MODEL,
        description="Hub id (ModelScope by default), local SenseVoice model dir, or a bundled model name.",
    )
    hub: str = Field("ms", description="Hub for model ids: 'ms' (ModelScope) or 'hf' (Hugging Face).")
    device: str = Field("auto", description="cpu, cuda, cuda:N, or auto (CUDA when available).")
    precision: str = Field(
        "auto",
        description="fp32, int8 (CPU dynamic quantization), fp16 or bf16 (CUDA); "
        "auto: fp32 on CPU, fp16 on CUDA.",
    )
    threads: int | None = Field(None, description="Torch intra-op threads; default leaves torch's choice.")
    load_timeout_s: float = Field(900.0, description="Give up loading (including download) after this long.")
