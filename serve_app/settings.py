"""The service's configuration: one Settings object, read from the environment.

Environment names carry no prefix (``DATABASE_URL``, ``SECRET_KEY``, ...). Code holds the
defaults; deployment configs override them. Nothing here touches the network or the disk.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_KEY_CHARS = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    env: Literal["development", "production"] = Field(
        "development", description="production refuses to start without a strong SECRET_KEY")

    # Database
    database_url: str = Field("sqlite+aiosqlite:///./sentiment.db",
                              description="sqlite+aiosqlite:///... or mysql+aiomysql://user:pw@host/db")
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    db_pool_timeout_seconds: float = Field(10.0, gt=0)
    db_connect_timeout_seconds: int = Field(5, ge=1)
    db_write_wait_seconds: float = Field(
        5.0, gt=0, description="longest wait for a write's turn on SQLite before 503 busy")

    # Auth
    secret_key: SecretStr | None = Field(
        None, description="JWT signing key, >= 32 chars in production; generated in development")
    dev_secret_key_file: str = Field(
        ".sentiment-dev-secret-key",
        description="development without SECRET_KEY: key shared by the local replicas")
    algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    access_token_expire_minutes: int = Field(30, ge=1)
    api_key_cache_seconds: float = Field(
        2.0, gt=0, le=5, description="a replica trusts a key check this long: a revoked key "
                                     "works at most this long")
    max_api_keys_per_user: int = Field(20, ge=1)

    # Request limits
    max_text_chars: int = Field(20_000, ge=1)
    # A text past the model's window: "chunk" classifies it whole over overlapping windows,
    # "truncate" classifies its first window only. Read by the model replicas.
    long_text: Literal["chunk", "truncate"] = "chunk"
    max_batch_texts: int = Field(64, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1024)

    # Prediction log (group commit). Disabling it is only for benchmarks of the model path.
    prediction_logging: bool = Field(True, description="false only for model-path benchmarks")
    prediction_log_max_batch: int = Field(512, ge=1)
    prediction_log_timeout_seconds: float = Field(15.0, gt=0)

    # Admission: work that could not start within the target wait is refused at once (503 +
    # Retry-After); the count bounds are a backstop while the service rate is not yet measured.
    admission_target_wait_seconds: float = Field(1.0, gt=0)
    admission_max_waiting_texts: int = Field(384, ge=1, description="per ingress replica")
    admission_max_waiting_hashes: int = Field(64, ge=1, description="sign-ups and log-ins")

    # Health and overload
    health_timeout_seconds: float = Field(5.0, gt=0)
    retry_after_seconds: int = Field(5, ge=1)

    # Rate limits. Defaults are generous so that benchmarks and load tests are not throttled;
    # a rate of 0 disables that limit. REDIS_URL shares the buckets between ingress replicas.
    redis_url: str | None = None
    rate_limit_key_prefix: str = "sentiment:ratelimit:"
    predict_rate_per_second: float = Field(1000.0, ge=0, description="texts/s per user; 0 = off")
    predict_burst: int = Field(2000, ge=1, description="bucket size in texts")
    login_max_failures_per_username: int = Field(10, ge=0, description="per window; 0 = off")
    login_max_failures_per_client: int = Field(100, ge=0, description="per window; 0 = off")
    login_failure_window_seconds: float = Field(300.0, gt=0)

    # Bulk jobs (POST /jobs): files scored by Ray jobs. JOB_STORE is a directory or a URI that
    # pyarrow.fs opens (s3://bucket/prefix, gs://...); unset, `jobs/` beside the SQLite file
    # (./jobs for another database). Every Ray node must reach it.
    job_store: str | None = None
    max_upload_bytes: int = Field(1 << 30, ge=1024, description="largest file POST /jobs takes")
    max_running_jobs_per_user: int = Field(2, ge=1, description="queued or running at once")
    max_job_bytes_per_user: int = Field(
        10 << 30, ge=1024, description="uploads and results a user may keep stored")
    job_batch_size: int = Field(64, ge=1, description="texts per model call in a job")
    job_max_actors: int = Field(2, ge=1, description="a job's model actors scale up to this")
    job_cpus_per_actor: float = Field(1.0, gt=0)
    job_gpus_per_actor: float = Field(0.0, ge=0, description="a fraction shares one GPU")
    # The model replicas hold their CPUs for good: a read task asking for a share of a CPU
    # could wait forever beside them, and reading is light next to the model.
    job_cpus_per_read: float = Field(0.0, ge=0)
    job_model_dir: str | None = Field(None, description="unset: the shipped default model")

    @property
    def is_production(self) -> bool:
        return self.env == "production"


@lru_cache
def get_settings() -> Settings:
    return Settings()
