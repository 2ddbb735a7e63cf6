"""Dependencies of the routes: the shared services and the two token roles."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reward_service.services import Services

_bearer = HTTPBearer(auto_error=False, description="A learner or rater token from the service's settings.")


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _role(services: Services, credentials: HTTPAuthorizationCredentials | None) -> tuple[str, str]:
    """("learner", "learner") or ("rater", name) for a known token; 401 otherwise."""
    if credentials is None:
        raise _unauthorized("Missing bearer token (Authorization: Bearer <token>).")
    token = credentials.credentials.encode()
    found = None
    for known in services.settings.learner_tokens:  # compare every token: no early exit to time
        if secrets.compare_digest(token, known.encode()):
            found = ("learner", "learner")
    for name, known in services.settings.rater_tokens.items():
        if secrets.compare_digest(token, known.encode()):
            found = ("rater", name)
    if found is None:
        raise _unauthorized("Unknown bearer token.")
    return found


def require_learner(services: ServicesDep, credentials: Credentials) -> str:
    role, _ = _role(services, credentials)
    if role != "learner":
        raise HTTPException(403, detail="This endpoint needs a learner token.")
    return "learner"


def require_rater(services: ServicesDep, credentials: Credentials) -> str:
    role, name = _role(services, credentials)
    if role != "rater":
        raise HTTPException(403, detail="This endpoint needs a rater token.")
    return name


def require_any(services: ServicesDep, credentials: Credentials) -> str:
    return _role(services, credentials)[1]


Learner = Annotated[str, Depends(require_learner)]
Rater = Annotated[str, Depends(require_rater)]
AnyToken = Annotated[str, Depends(require_any)]
