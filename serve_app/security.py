"""Password hashing (argon2 through passlib) and access tokens (JWT through python-jose).

API keys, which are checked on every request, use a fast keyed hash instead: `api_keys.py`."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from jose import JWTError, jwt
from passlib.context import CryptContext

from serve_app.settings import MIN_SECRET_KEY_CHARS, Settings
from serve_app.tracing import traced

log = logging.getLogger(__name__)

# argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): passlib's default
# (64 MiB, 3 passes, 4 lanes) costs ~7x the CPU, and on a small node sign-ups and log-ins
# then starve the model of cores under load.
_hasher = CryptContext(schemes=["argon2"], deprecated="auto", argon2__memory_cost=19456,
                       argon2__time_cost=2, argon2__parallelism=1)


@traced("hash_password")
async def hash_password(password: str) -> str:
    # argon2 costs tens of milliseconds of CPU: keep it off the event loop.
    return await asyncio.to_thread(_hasher.hash, password)


@traced("verify_password")
async def verify_password(password: str, hashed: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password, hashed)
        except (ValueError, TypeError):  # malformed hash or unencodable input
            return False

    return await asyncio.to_thread(verify)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


async def verify_against_dummy(password: str) -> bool:
    """Spend the same work as a real check, so unknown usernames cannot be told by timing."""
    dummy = await asyncio.to_thread(_dummy_hash)
    await verify_password(password, dummy)
    return False


def resolve_secret_key(settings: Settings) -> str:
    """The signing key; production refuses to run without a strong one."""
    key = settings.secret_key.get_secret_value() if settings.secret_key else ""
    if settings.is_production:
        if len(key) < MIN_SECRET_KEY_CHARS:
            raise RuntimeError(
                f"ENV=production needs SECRET_KEY of at least {MIN_SECRET_KEY_CHARS} characters "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return key
    if key:
        return key
    path = Path(settings.dev_secret_key_file)
    try:
        key, created = _shared_dev_key(path)
        where = f"{'generated' if created else 'read'} {path}"
    except OSError as err:
        key, where = secrets.token_urlsafe(48), f"this process only ({path}: {err})"
    log.warning("SECRET_KEY is not set: using a development key (%s): %s. Set SECRET_KEY "
                "outside development.", where, key)
    return key


def _shared_dev_key(path: Path) -> tuple[str, bool]:
    """One development key per working directory, so every local replica signs alike.

    Written to a private temporary file and hard-linked into place: a replica either
    creates the whole file or finds it complete, never half written."""
    if path.is_file():
        return path.read_text().strip(), False
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        os.link(tmp, path)
        created = True
    except FileExistsError:
        created = False
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip(), created


class InvalidTokenError(Exception):
    pass


@dataclass(frozen=True)
class TokenUser:
    """The user a valid token (or API key) speaks for; a token's is taken from the token alone,
    without the database. ``api_key_id`` is set when an API key, not a log-in, vouched."""

    id: int
    username: str
    api_key_id: int | None = None


class TokenCodec:
    """Signs and checks access tokens.

    A client sends the same token with every request until it expires, so tokens already
    verified are remembered (bounded, least recently used first out) with their expiry: a
    repeat costs a dictionary lookup instead of an HMAC and a JSON parse.
    """

    VERIFIED_CACHE_SIZE = 10_000

    def __init__(self, *, secret_key: str, algorithm: str, expire_minutes: int) -> None:
        self._key = secret_key
        self._algorithm = algorithm
        self._expire = timedelta(minutes=expire_minutes)
        self._verified: OrderedDict[str, tuple[TokenUser, float]] = OrderedDict()

    def encode(self, user: TokenUser) -> str:
        now = datetime.now(UTC)
        claims = {"sub": str(user.id), "name": user.username, "iat": now, "exp": now + self._expire}
        return jwt.encode(claims, self._key, algorithm=self._algorithm)

    def decode(self, token: str) -> TokenUser:
        known = self._verified.get(token)
        if known is not None:
            user, expires_at = known
            if time.time() < expires_at:
                self._verified.move_to_end(token)
                return user
            del self._verified[token]
        user, expires_at = self._verify(token)
        self._verified[token] = (user, expires_at)
        if len(self._verified) > self.VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return user

    def _verify(self, token: str) -> tuple[TokenUser, float]:
        try:
            # One pinned algorithm: "none" and algorithm switches fail the signature check.
            claims = jwt.decode(token, self._key, algorithms=[self._algorithm],
                                options={"require_exp": True, "require_sub": True})
            user_id = int(claims["sub"])
            username = claims["name"]
            expires_at = float(claims["exp"])
        except (JWTError, KeyError, ValueError, TypeError) as err:
            raise InvalidTokenError(str(err)) from err
        if not 1 <= user_id < 2**31 or not isinstance(username, str):  # users.id is INTEGER
            raise InvalidTokenError("malformed claims")
        return TokenUser(id=user_id, username=username), expires_at
