"""Sign-up, log-in (OAuth2 password flow) and the current-user dependency.

A request is authenticated by a login token or an API key: either as
``Authorization: Bearer <token or key>``, or a key as ``X-API-Key: <key>``. Both schemes
appear in the OpenAPI schema, so ``/docs`` can try either.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer, OAuth2PasswordRequestForm
from sqlalchemy import exc, select

from serve_app.api_keys import looks_like_api_key
from serve_app.deps import ServicesDep, SessionDep
from serve_app.models import User
from serve_app.ratelimit import retry_after_header
from serve_app.schemas import PASSWORD_MAX, USERNAME_MAX, ErrorResponse, Token, UserCreate, UserPublic
from serve_app.security import (
    InvalidTokenError,
    TokenUser,
    hash_password,
    verify_against_dummy,
    verify_password,
)
from serve_app.tracing import traced

NOT_AUTHENTICATED = "Not authenticated."
INVALID_TOKEN = "Invalid or expired token."
TWO_CREDENTIALS = "Send one credential: Authorization or X-API-Key, not both."
BAD_CREDENTIALS = "Incorrect username or password."
USERNAME_TAKEN = "This username is already taken."
TOO_MANY_LOGIN_FAILURES = "Too many failed logins. Retry later."
BEARER = {"WWW-Authenticate": "Bearer"}

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False,
                                     description="A login token, or an API key as a bearer token")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="An API key (create one at POST /auth/keys)")


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers=BEARER)


@traced("authenticate")
async def current_user(request: Request, services: ServicesDep,
                       bearer: Annotated[str | None, Depends(oauth2_scheme)],
                       api_key: Annotated[str | None, Depends(api_key_scheme)]) -> TokenUser:
    """The user of the login token (from the signed token alone) or of the API key (from the
    replica's short-lived cache of key checks)."""
    key_sent = api_key_scheme.model.name in request.headers  # even empty, which reads as None
    if bearer and key_sent:
        # Refused rather than picking one: an invalid credential never rides on a valid one.
        raise unauthorized(TWO_CREDENTIALS)
    credential = api_key if key_sent else bearer
    if not credential:
        raise unauthorized(INVALID_TOKEN if key_sent else NOT_AUTHENTICATED)
    try:
        if looks_like_api_key(credential):
            return await services.api_keys.verify(credential)
        if not bearer:  # X-API-Key carries keys only
            raise InvalidTokenError("not an API key")
        return services.tokens.decode(credential)
    except InvalidTokenError:
        raise unauthorized(INVALID_TOKEN) from None


CurrentUser = Annotated[TokenUser, Depends(current_user)]

AUTH_ERRORS = {401: {"model": ErrorResponse,
                      "description": "Missing, invalid or expired token or API key"}}

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/", status_code=status.HTTP_201_CREATED, response_model=UserPublic,
             responses={409: {"model": ErrorResponse, "description": USERNAME_TAKEN}})
async def register(body: UserCreate, services: ServicesDep, session: SessionDep) -> UserPublic:
    with services.hashing.admit():  # refused at once (503) if hashes queue past the target
        hashed = await hash_password(body.password)
    user = User(username=body.username, hashed_password=hashed)
    session.add(user)
    try:
        async with services.writes.turn():  # in line with the prediction log, never starved
            await session.commit()
    except exc.IntegrityError:
        # The unique constraint decides, so two racing sign-ups cannot both win.
        await session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, USERNAME_TAKEN) from None
    return UserPublic(id=user.id, username=user.username)


@router.post("/token", response_model=Token, responses={
    401: {"model": ErrorResponse, "description": BAD_CREDENTIALS},
    429: {"model": ErrorResponse, "description": TOO_MANY_LOGIN_FAILURES},
})
async def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request,
                services: ServicesDep, session: SessionDep) -> Token:
    client = request.client.host if request.client else "unknown"
    limits = services.rate_limits
    wait = await limits.login_blocked(form.username, client)
    if wait > 0:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, TOO_MANY_LOGIN_FAILURES,
                            headers=retry_after_header(wait))
    user = None
    if len(form.username) <= USERNAME_MAX:
        user = await session.scalar(select(User).where(User.username == form.username))
    # Hand the connection back before hashing: a pooled connection held through ~30 ms of
    # argon2 per log-in exhausts the pool under a burst of log-ins.
    await session.close()
    password_ok = False
    if len(form.password) <= PASSWORD_MAX:
        with services.hashing.admit():
            if user is None:
                await verify_against_dummy(form.password)  # same work as for a wrong password
            else:
                password_ok = await verify_password(form.password, user.hashed_password)
    if user is None or not password_ok:
        await limits.login_failed(form.username, client)
        raise unauthorized(BAD_CREDENTIALS)
    token = services.tokens.encode(TokenUser(id=user.id, username=user.username))
    return Token(access_token=token)
