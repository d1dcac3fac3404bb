"""Who a dashboard request is from, and the CSRF check of its forms."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Request

from qualgent.deps import SessionDep, StateDep
from qualgent.errors import RateLimited
from qualgent.web.errors import SignInRequired
from qualgent.web.sessions import WebUser, check_csrf, current_user


async def get_web_user(request: Request, session: SessionDep, state: StateDep) -> WebUser:
    user = await current_user(request, session, state)
    if user is None:
        raise SignInRequired("Sign in to see this page.")
    # A person's pages are rate limited like a key's requests, per person (every session of theirs).
    verdict = await state.limiter.hit_key(f"web:{user.principal.user_id}", state.settings.dashboard_rate_limit)
    if not verdict.allowed:
        raise RateLimited(
            f"More than {verdict.limit} requests per second; wait a moment and reload.", headers=verdict.headers()
        )
    return user


WebUserDep = Annotated[WebUser, Depends(get_web_user)]


async def get_form_user(user: WebUserDep, csrf_token: Annotated[str | None, Form(max_length=200)] = None) -> WebUser:
    """The signed-in person of a form POST whose CSRF token matches their session's."""
    check_csrf(user.csrf_token, csrf_token)
    return user


FormUserDep = Annotated[WebUser, Depends(get_form_user)]
