"""API keys: their format, their keyed hash, and the per-replica check with its short cache.

A key reads ``ssk_<12 hex>_<43 url-safe chars>``: the first 16 characters are its public
prefix (stored in clear, unique, how a key is found), the rest 256 random bits. The database
keeps only HMAC-SHA256 of the whole key under a key derived from SECRET_KEY: a secret this
random needs no slow hash, and a stolen table is useless without SECRET_KEY.

Each ingress replica keeps what it read about a prefix for ``cache_ttl_s`` (under 5 s), so at
steady state a check is one HMAC and a constant-time compare, not a database round trip, and
a revoked (deleted) key stops working on every replica within that time. ``last_used_at`` is
written in the background, at most once a minute per key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from serve_app.models import ApiKey, User, utcnow
from serve_app.security import InvalidTokenError, TokenUser

log = logging.getLogger(__name__)

KEY_MARK = "ssk_"
PREFIX_CHARS = 16
_KEY_PATTERN = re.compile(r"^ssk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")
LAST_USED_RESOLUTION = timedelta(minutes=1)


def looks_like_api_key(credential: str) -> bool:
    """True for anything shaped as an API key (a JWT never starts with the mark)."""
    return credential.startswith(KEY_MARK)


def new_api_key() -> tuple[str, str]:
    """A fresh key and its prefix."""
    prefix = KEY_MARK + secrets.token_hex(6)
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


def derive_hash_key(secret_key: str) -> bytes:
    # Its own key, so a key hash is never also a valid token signature (or the reverse).
    return hmac.new(secret_key.encode(), b"sentiment-serve api-key hash v1",
                    hashlib.sha256).digest()


def hash_api_key(key: str, hash_key: bytes) -> str:
    return hmac.new(hash_key, key.encode(), hashlib.sha256).hexdigest()


@dataclass
class _Known:
    """What the database said about one prefix, and when."""

    fetched_at: float  # time.monotonic()
    key_id: int | None = None  # None: no live key has this prefix
    secret_hash: str = ""
    user: TokenUser | None = None
    last_used_at: datetime | None = None


class ApiKeyVerifier:
    """Checks presented keys for one replica; see the module docstring."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, hash_key: bytes,
                 cache_ttl_s: float, max_cached: int = 10_000) -> None:
        self._sessions = sessions
        self._hash_key = hash_key
        self._ttl = cache_ttl_s
        self._max_cached = max_cached
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._loading: dict[str, asyncio.Task[_Known]] = {}
        self._touches: set[asyncio.Task[None]] = set()
        self.lookups = 0  # database reads, for tests and benchmarks

    def hash(self, key: str) -> str:
        return hash_api_key(key, self._hash_key)

    async def verify(self, key: str) -> TokenUser:
        """The key's user, or InvalidTokenError for a malformed, unknown or revoked key."""
        if not _KEY_PATTERN.match(key):
            raise InvalidTokenError("malformed API key")
        digest = self.hash(key)
        known = await self._lookup(key[:PREFIX_CHARS])
        # Compared even when the prefix is unknown, so the answer takes the same work.
        matches = hmac.compare_digest(digest, known.secret_hash or "0" * 64)
        if known.user is None or not matches:
            raise InvalidTokenError("unknown or revoked API key")
        self._note_use(known)
        return known.user

    def forget(self, prefix: str) -> None:
        """Drop what this replica knows about a key (it was just revoked here)."""
        self._known.pop(prefix, None)

    async def close(self) -> None:
        if self._touches:
            await asyncio.wait(self._touches, timeout=5)

    async def _lookup(self, prefix: str) -> _Known:
        known = self._known.get(prefix)
        if known is not None and time.monotonic() - known.fetched_at < self._ttl:
            self._known.move_to_end(prefix)
            return known
        # One read per prefix at a time: a burst of requests with one key shares it.
        task = self._loading.get(prefix)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(prefix, known))
            self._loading[prefix] = task
            task.add_done_callback(lambda _t: self._loading.pop(prefix, None))
        return await asyncio.shield(task)

    async def _load(self, prefix: str, previous: _Known | None) -> _Known:
        fetched_at = time.monotonic()
        self.lookups += 1
        async with self._sessions() as session:
            row = (await session.execute(
                select(ApiKey.id, ApiKey.secret_hash, ApiKey.last_used_at, User.id, User.username)
                .join(User, User.id == ApiKey.user_id)  # a deleted user's key finds nothing
                .where(ApiKey.prefix == prefix))).first()
        known = _Known(fetched_at=fetched_at)
        if row is not None:
            key_id, secret_hash, last_used_at, user_id, username = row
            if previous is not None and previous.key_id == key_id and previous.last_used_at:
                # A write of ours may not be committed yet: keep the later of the two.
                last_used_at = max(last_used_at or previous.last_used_at, previous.last_used_at)
            known = _Known(fetched_at, key_id, secret_hash,
                           TokenUser(id=user_id, username=username, api_key_id=key_id),
                           last_used_at)
        self._known[prefix] = known
        self._known.move_to_end(prefix)
        while len(self._known) > self._max_cached:
            self._known.popitem(last=False)
        return known

    def _note_use(self, known: _Known) -> None:
        now = utcnow()
        if known.last_used_at is not None and now - known.last_used_at < LAST_USED_RESOLUTION:
            return
        known.last_used_at = now
        task = asyncio.get_running_loop().create_task(self._write_last_used(known.key_id, now))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _write_last_used(self, key_id: int | None, now: datetime) -> None:
        # The condition keeps the once-a-minute promise across replicas, whose caches may
        # each decide to write in the same minute.
        try:
            async with self._sessions() as session:
                await session.execute(
                    update(ApiKey).where(ApiKey.id == key_id, or_(
                        ApiKey.last_used_at.is_(None),
                        ApiKey.last_used_at <= now - LAST_USED_RESOLUTION))
                    .values(last_used_at=now))
                await session.commit()
        except Exception as err:  # a lost "last used" must never fail or slow a request
            log.warning("api keys: could not record last use of key %s: %s", key_id, err)
