"""Database tables: users, their API keys, the prediction log and bulk jobs."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; MySQL gets the wider BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# Microsecond timestamps on MySQL, so "newest first" is exact within a second.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# MySQL's TEXT holds 64 KiB; texts are limited in characters, up to 4 bytes each.
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

MYSQL_TABLE_ARGS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def utcnow() -> datetime:
    """Naive UTC: what both SQLite and MySQL DATETIME columns store and return."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    __table_args__ = MYSQL_TABLE_ARGS

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    hashed_password: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (
        # "This user's rows, newest first" (id order, keyset paging); also the foreign key's.
        Index("ix_predictions_user_id_id", "user_id", "id"),
        # Counts per label over a time range, from the index alone (/data/summary).
        Index("ix_predictions_user_id_created_at_label", "user_id", "created_at", "label"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(LongText)
    label: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Double)
    model_version: Mapped[str] = mapped_column(String(128))
    latency_ms: Mapped[float] = mapped_column(Double)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, index=True)


class ApiKey(Base):
    """A long-lived credential for machine clients; only a keyed hash of its secret is kept."""

    __tablename__ = "api_keys"
    __table_args__ = MYSQL_TABLE_ARGS

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))  # hex HMAC-SHA256 of the secret
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)


class Job(Base):
    """A bulk-scoring job: an uploaded file scored by a Ray job into a result file.

    The Ray job's driver updates progress and the outcome here; the service reads them back.
    The id is random, so it also names the job's folder in the job store.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        # "This user's jobs, newest first", and the count of their running ones.
        Index("ix_jobs_user_id_created_at", "user_id", "created_at"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    text_column: Mapped[str] = mapped_column(String(255))
    keep_columns: Mapped[list[str]] = mapped_column(JSON, default=list)
    output_format: Mapped[str] = mapped_column(String(16))
    input_uri: Mapped[str] = mapped_column(String(1024))
    result_uri: Mapped[str] = mapped_column(String(1024))
    input_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    result_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ray_job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    rows_total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rows_done: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    label_counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    texts_per_s: Mapped[float | None] = mapped_column(Double, nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
