"""Indexes for the history: a user's rows newest first, and counts per label over time.

``(user_id, id)`` serves /data and /data/export (newest first, keyset paging on id) without a
sort; ``(user_id, created_at, label)`` covers /data/summary (a range of one user's rows,
counted by label, read from the index alone) and replaces ``(user_id, created_at)``, its
prefix, which also backs the foreign key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_predictions_user_id_id", "predictions", ["user_id", "id"])
    op.create_index("ix_predictions_user_id_created_at_label", "predictions",
                    ["user_id", "created_at", "label"])
    # Dropped only now: MySQL keeps an index on user_id for the foreign key at every step.
    op.drop_index("ix_predictions_user_id_created_at", table_name="predictions")


def downgrade() -> None:
    op.create_index("ix_predictions_user_id_created_at", "predictions", ["user_id", "created_at"])
    op.drop_index("ix_predictions_user_id_created_at_label", table_name="predictions")
    op.drop_index("ix_predictions_user_id_id", table_name="predictions")
