"""Who is calling: resolved once per request from ``X-Api-Key``, then carried by every query."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    organization_id: str
    user_id: str
    user_name: str
    user_email: str
    key_id: str
    scopes: frozenset[str]
    rate_limit: int

    def can(self, scope: str) -> bool:
        return scope in self.scopes
