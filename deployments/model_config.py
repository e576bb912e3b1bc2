"""The SentimentModel's user_config: validated, with the defaults the code ships."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelConfig(BaseModel):
    """Keys accepted in the SentimentModel deployment's `user_config`.

    Unknown keys are refused so that a misspelt knob fails the update loudly instead of
    being ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_dir: str = "default"  # "default" = packaged encoder + models/default/ layers
    max_batch_size: int = Field(32, ge=1, le=1024)
    # 0: a batch takes what queued while the previous one ran; a lone request never waits.
    batch_wait_timeout_s: float = Field(0.0, ge=0.0, le=10.0)
    max_length: int = Field(128, ge=8, le=4096)
    cache_size: int = Field(4096, ge=0)  # 0 disables the result cache
    device: str | None = None  # None: CUDA when the replica has a GPU, else CPU
    # What runs the network. None: ONNX Runtime on a CPU, torch (fp16) on CUDA.
    backend: Literal["torch", "onnx"] | None = None
    # int8 weights (ONNX Runtime only): faster on a CPU, a different model version. None: int8
    # for the shipped model on x86 CPUs with VNNI (SentimentClassifier.load's default).
    int8: bool | None = None
    # Seconds added to every batch: a deliberately slow model, to watch admission and
    # shedding (tests, demos) on a machine of any speed. 0 in service.
    batch_delay_s: float = Field(0.0, ge=0.0, le=60.0)

    @classmethod
    def from_user_config(cls, user_config: dict | None) -> "ModelConfig":
        return cls.model_validate(user_config or {})

    @model_validator(mode="after")
    def _int8_needs_onnx(self) -> "ModelConfig":
        if self.int8 and (self.backend == "torch" or (self.device or "").startswith("cuda")):
            raise ValueError("int8 runs on the onnx backend, on a CPU")
        return self

    @property
    def model_key(self) -> tuple:
        """What identifies the loaded model: a change means reloading it."""
        return (self.model_dir, self.max_length, self.device, self.backend, self.int8)
