"""Device targets and which registered devices fit them (devices/selectors.py). Not organisation-
scoped: devices serve every organisation's runs, and a target holds no organisation's data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Table, delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import utcnow
from qualgent.db.dialect import insert_ignoring_duplicates, serialise_device_matching
from qualgent.db.models import Device, DeviceMatch, DeviceTarget
from qualgent.devices.selectors import DeviceFacts, TargetSpec, from_canonical


def facts(device: Any) -> DeviceFacts:
    """A device row (ORM object or row with these columns) as matching sees it."""
    return DeviceFacts(
        name=device.name,
        platform=device.platform,
        os_version=device.os_version,
        device_type=device.device_type,
        tags=tuple(device.tags or ()),
    )


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


MATCHES = _table(DeviceMatch)


class TargetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def ensure(self, specs: Sequence[TargetSpec]) -> None:
        """Every spec has its target row; a target written now is matched against every registered
        device, in this transaction."""
        wanted = {spec.key: spec for spec in specs}
        if not wanted:
            return
        known = set((await self.session.scalars(select(DeviceTarget.id).where(DeviceTarget.id.in_(wanted)))).all())
        missing = [spec for key, spec in wanted.items() if key not in known]
        if not missing:
            return
        # A device registering meanwhile must see this target, or this target that device: the two
        # take turns (PostgreSQL; SQLite's writers take turns anyway).
        await serialise_device_matching(self.session)
        now = utcnow()
        dialect = self.session.get_bind().dialect.name
        inserted = set(
            (
                await self.session.execute(
                    insert_ignoring_duplicates(dialect, _table(DeviceTarget)).returning(DeviceTarget.id),
                    [
                        {
                            "id": spec.key,
                            "platform": spec.platform,
                            "spec": spec.canonical(),
                            "label": spec.label(),
                            "selector": None if spec.pinned else json.dumps(spec.public()),
                            "created_at": now,
                            "updated_at": now,
                        }
                        for spec in missing
                    ],
                )
            )
            .scalars()
            .all()
        )
        new = [spec for spec in missing if spec.key in inserted]
        if not new:
            return
        devices = (await self.session.execute(_devices_statement())).all()
        rows = [
            {"device_id": d.id, "target_id": spec.key, "created_at": now}
            for spec in new
            for d in devices
            if spec.matches(facts(d))
        ]
        if rows:
            await self.session.execute(insert(MATCHES), rows)

    async def rematch(self, devices: Sequence[Device]) -> None:
        """Match these (just registered or changed) devices against every target anew."""
        if not devices:
            return
        await serialise_device_matching(self.session)
        ids = [d.id for d in devices]
        await self.session.execute(delete(MATCHES).where(MATCHES.c.device_id.in_(ids)))
        targets = [
            (target_id, from_canonical(spec))
            for target_id, spec in (await self.session.execute(select(DeviceTarget.id, DeviceTarget.spec))).all()
        ]
        now = utcnow()
        rows = [
            {"device_id": d.id, "target_id": target_id, "created_at": now}
            for d in devices
            for target_id, spec in targets
            if spec.matches(facts(d))
        ]
        if rows:
            await self.session.execute(insert(MATCHES), rows)

    async def online_models(self, spec: TargetSpec, organization_id: str) -> list[tuple[str, str, str]]:
        """(name, platform, os_version) of each kind of online device that fits ``spec`` and may run
        ``organization_id``'s runs (a shared agent's or its own), once each: what a matrix over a
        selector expands to."""
        rows = (
            await self.session.execute(
                _devices_statement().where(Device.online.is_(True), serves(organization_id)),
            )
        ).all()
        seen: dict[tuple[str, str], tuple[str, str, str]] = {}
        for d in rows:
            if spec.matches(facts(d)):
                seen.setdefault((d.name.casefold(), d.os_version), (d.name, d.platform, d.os_version))
        return sorted(seen.values(), key=lambda m: (m[0].casefold(), m[2]))


def serves(organization_id: Any) -> Any:
    """The devices that may run ``organization_id``'s runs: shared agents' devices and its own agents'."""
    return or_(Device.organization_id.is_(None), Device.organization_id == organization_id)


@cache
def _devices_statement() -> Any:
    return select(Device.id, Device.name, Device.platform, Device.os_version, Device.device_type, Device.tags)
