"""/auth/keys: a logged-in user creates, lists and revokes their API keys.

Managing keys takes a login token: a request made with an API key gets 403, so a leaked key
cannot mint more keys or hide itself. Revoking deletes the key's row; this replica forgets it
at once, the others within their cache time (``API_KEY_CACHE_SECONDS``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Response, status
from sqlalchemy import delete, func, select, update

from serve_app.api_keys import new_api_key
from serve_app.auth import AUTH_ERRORS, INVALID_TOKEN, CurrentUser, unauthorized
from serve_app.deps import ServicesDep, SessionDep
from serve_app.models import ApiKey, User
from serve_app.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, ErrorResponse
from serve_app.security import TokenUser

KEYS_NEED_LOGIN = "API keys are managed with a login token, not with an API key."
TOO_MANY_KEYS = "Too many API keys: revoke one before creating another."
KEY_NOT_FOUND = "No such API key."

KEY_ERRORS = {**AUTH_ERRORS, 403: {"model": ErrorResponse, "description": KEYS_NEED_LOGIN}}


async def logged_in_user(user: CurrentUser) -> TokenUser:
    if user.api_key_id is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, KEYS_NEED_LOGIN)
    return user


LoggedInUser = Annotated[TokenUser, Depends(logged_in_user)]

router = APIRouter(prefix="/auth/keys", tags=["api keys"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated,
             responses={**KEY_ERRORS, 409: {"model": ErrorResponse, "description": TOO_MANY_KEYS}})
async def create_key(body: ApiKeyCreate, user: LoggedInUser, services: ServicesDep,
                     session: SessionDep) -> ApiKeyCreated:
    """A new key; the answer holds the key itself, which is never shown again."""
    # A write on the user's row first: it locks the row (MariaDB) or the database (SQLite)
    # until commit, so two concurrent creations cannot both pass the count below.
    locked = await session.execute(update(User).where(User.id == user.id).values(id=User.id))
    if locked.rowcount == 0:
        raise unauthorized(INVALID_TOKEN)  # the token outlived its account
    live = await session.scalar(select(func.count()).select_from(ApiKey)
                                .where(ApiKey.user_id == user.id))
    if live >= services.settings.max_api_keys_per_user:
        await session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, TOO_MANY_KEYS)
    key, prefix = new_api_key()
    row = ApiKey(user_id=user.id, name=body.name, prefix=prefix,
                 secret_hash=services.api_keys.hash(key))
    session.add(row)
    await session.commit()
    return ApiKeyCreated(id=row.id, name=row.name, prefix=prefix, key=key,
                         created_at=row.created_at)


@router.get("", response_model=list[ApiKeyPublic], responses=KEY_ERRORS)
async def list_keys(user: LoggedInUser, session: SessionDep) -> list[ApiKeyPublic]:
    """The current user's keys, oldest first, without the keys themselves."""
    rows = await session.scalars(select(ApiKey).where(ApiKey.user_id == user.id)
                                 .order_by(ApiKey.id))
    return [ApiKeyPublic.model_validate(row) for row in rows]


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={**KEY_ERRORS,
                          404: {"model": ErrorResponse, "description": KEY_NOT_FOUND}})
async def revoke_key(key_id: Annotated[int, Path(ge=1, lt=2**31)], user: LoggedInUser,
                     services: ServicesDep, session: SessionDep) -> Response:
    """Revoke a key of the current user's; another user's key is as unknown as a missing one."""
    prefix = await session.scalar(delete(ApiKey)
                                  .where(ApiKey.id == key_id, ApiKey.user_id == user.id)
                                  .returning(ApiKey.prefix))
    if prefix is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, KEY_NOT_FOUND)
    await session.commit()
    services.api_keys.forget(prefix)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
