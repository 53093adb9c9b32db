"""JWT verification (HS256 only) and where a token is found in a handshake request."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import jwt

from .errors import Unauthorized
from .names import shown_username

# The secret is the issuing backend's choice; PyJWT would warn on every call when short.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)

ALGORITHM = "HS256"


@dataclass(frozen=True)
class Identity:
    """Who a verified token speaks for, and until when (`exp` in Unix seconds).

    `username` is None when the token has none, `expires_at` when it has no `exp`. A
    connection that authenticated with the token is closed at `expires_at`.
    """

    user_id: int
    username: str | None
    expires_at: float | None = None


def verify_token(token: str, secret: str, audience: str | None = None, leeway_seconds: float = 0.0) -> Identity:
    """Check signature, algorithm, exp/nbf/iat and (when given) the audience; raise Unauthorized why not.

    Without `audience` an `aud` claim is not checked: the shared secret is what says the
    issuer made the token, and PyJWT would otherwise refuse every token that has one.
    `leeway_seconds` is allowed on `nbf` and `iat` only: an issuer whose clock runs a
    little ahead of ours makes tokens that would otherwise be refused as soon as they are
    made. `exp` holds to the second, as PROTOCOL.md says: a token is taken until then, and
    its connection closed then (an issuer whose clock runs behind makes tokens that end a
    little early, never refused at once).
    """
    if not secret:
        raise Unauthorized("server has no JWT secret configured")
    if not token:
        raise Unauthorized("token is empty")
    options = {
        # `sub` may be an integer in our tokens, which PyJWT's subject check refuses; the
        # `jti` is the issuer's business (PyJWT refuses one that is not a string).
        "verify_sub": False,
        "verify_jti": False,
        "verify_aud": audience is not None,
        "verify_exp": False,  # checked below (_expires_at), without the leeway
    }
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], audience=audience, options=options, leeway=leeway_seconds
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token has expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("token is not valid yet") from None
    except jwt.InvalidAlgorithmError:
        raise Unauthorized("token algorithm is not HS256") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("token signature is invalid") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized("token is for another audience") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"token is invalid: {exc.__class__.__name__}") from None
    expires_at = _expires_at(claims)
    if expires_at is not None and expires_at <= time.time():
        raise Unauthorized("token has expired")
    return Identity(_user_id(claims), _username(claims), expires_at)


def verify_configured(token: str, config) -> Identity:
    """verify_token with the app's JWT_SECRET, JWT_AUDIENCE (empty: not checked) and JWT_LEEWAY_SECONDS."""
    return verify_token(token, config["JWT_SECRET"], config["JWT_AUDIENCE"] or None, config["JWT_LEEWAY_SECONDS"])


def _user_id(claims: dict) -> int:
    for name in ("user_id", "sub"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool):
            break
        if isinstance(value, int) and 0 < value < 2**63:  # users.id is a bigint
            return value
        if isinstance(value, str) and value.isascii() and value.isdigit() and 0 < int(value) < 2**63:
            return int(value)
        break
    raise Unauthorized("token names no integer user_id or sub")


def _expires_at(claims: dict) -> float | None:
    """`exp` in Unix seconds, read as PyJWT reads it (int() of the claim); None: never."""
    if claims.get("exp") is None:
        return None
    try:
        return float(int(claims["exp"]))
    except (TypeError, ValueError):
        raise Unauthorized("token is invalid: its exp is not an integer") from None
    except OverflowError:
        return None  # past any date a float holds: never


def _username(claims: dict) -> str | None:
    """The name the token gives, unless it cannot be a name (then the stored one is used)."""
    name = claims.get("username")
    return shown_username(name) if isinstance(name, str) else None


def issue_token(secret: str, user_id: int, username: str, ttl_seconds: int) -> str:
    """Sign a token the way the real backend does (dev tooling and standalone sign-in)."""
    now = int(time.time())
    claims = {"sub": str(user_id), "user_id": user_id, "username": username, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def token_from_request(headers, args) -> str | None:
    """The handshake token: `Authorization: Bearer` first, then `?token=`; None when the request names none.

    An empty one is returned as "" and refused: that client meant to send a token, not `auth` next.
    """
    authorization = headers.get("Authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    return args.get("token")
