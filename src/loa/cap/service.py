"""CAP alerts in: checked, turned into draft campaigns, updated and cancelled through an index.

- **Alert** (status Actual, Exercise or Test; scope Public): a draft campaign on the lane its
  severity and urgency ask for, to the provinces of its areas out of the standing audience
  (`cap.audience`), in each person's language. An Actual alert always needs a second person's
  approval, whatever its size (`loa campaign approve`, `POST /api/v1/campaigns/{id}/approve`).
  Test and Exercise alerts go only to the configured test numbers (`api.test_numbers`).
- **Update**: a new draft campaign with the new text, to the update's area, that *supersedes*
  the campaigns of the alerts it references. A referenced campaign that has sent nothing yet
  (draft, approved) is cancelled at once; one that is sending goes on until the update is
  launched, and is cancelled at that moment: what it had not sent is dropped (counted as
  cancelled), and the update's campaign carries the new text to everyone in the update's area,
  those reached by the earlier text included, as a CAP Update supersedes the earlier message.
  (The queued messages themselves are never rewritten: they hold text rendered at planning.)
- **Cancel**: the campaigns of the referenced alerts, and those they supersede, are cancelled
  at once (every worker drops what is left within a second); each cancellation is audited.
- **Ack**, **Error**, and System or Draft status: recorded, nothing sent.

The index `{namespace}:cap:alerts` is a hash from `sender,identifier,sent` (sent in UTC) to the
campaign id ("" for a message that made none): it finds what an Update or a Cancel refers to,
and refuses an alert submitted twice. The XML as received and the plan made from it are kept in
`{data_dir}/cap/<digest of the key>/`, next to the campaign's pinned audience.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loa.access.audit import LOCAL, AuditLog, audited
from loa.access.identity import Principal
from loa.campaigns.audience import open_audience
from loa.campaigns.plan import CHANNELS, Plan
from loa.campaigns.service import Campaigns
from loa.campaigns.store import ENDED, Campaign, State
from loa.cap.mapping import Mapped, map_alert, plan_mapping, to_toml
from loa.cap.model import Alert
from loa.cap.parse import parse_alert
from loa.cap.signature import verify_alert
from loa.engine.connection import RedisClient, text
from loa.errors import CampaignError, CapError
from loa.settings import Settings

PENDING = "pending"  # an index entry while its alert is being submitted
MAX_CHAIN = 100  # superseded campaigns followed from one Cancel, at most


def index_key(namespace: str) -> str:
    """The hash from CAP message key to campaign id."""
    return f"{namespace}:cap:alerts"


def check_alert(data: bytes, settings: Settings, now: datetime | None = None) -> Mapped:
    """Read, check, verify and map an alert (no Redis needed); CapError names every problem.

    A signed alert from a named sender is mapped from its signed content alone.
    """
    alert = parse_alert(data)
    verified = verify_alert(data, alert, settings.cap)
    signer = verified.signer
    if signer is not None:
        alert = parse_alert(verified.data)
        if alert.sender != signer.sender:
            raise CapError(
                [f"alert/sender: the signed content names {alert.sender!r}, not {signer.sender!r}"],
                code="bad_signature",
                status=403,
            )
    mapped = map_alert(alert, settings.cap, now or datetime.now(UTC))
    if signer is None:
        return mapped
    return dataclasses.replace(mapped, signed_by=signer.sender, auto_approve=signer.auto_approve)


@dataclass
class Submitted:
    """What submitting one CAP message did."""

    action: str  # created | cancelled | recorded
    summary: dict[str, Any]
    campaign: str = ""
    state: str = ""
    approval: str = ""  # why a second person must approve it ("" when nobody must)
    supersedes: list[str] = field(default_factory=list)  # cancelled when it is launched
    cancelled: list[str] = field(default_factory=list)  # cancelled now

    def line(self) -> str:
        """One line for the command line and the audit log."""
        alert = f"{self.summary['msgType']} {self.summary['identifier']}"
        if self.action == "created":
            said = f"{alert}: campaign {self.campaign} ({self.state}, {self.summary['lane']} lane)"
            if self.approval:
                said += f"; needs approval by a second person ({self.approval})"
            if self.supersedes:
                said += f"; cancels {' '.join(self.supersedes)} when launched"
        elif self.action == "cancelled":
            said = f"{alert}: cancelled {' '.join(self.cancelled) or 'nothing (ended already)'}"
        else:
            said = f"{alert} ({self.summary['status']}): recorded, nothing to send"
        if self.action == "created" and self.cancelled:
            said += f"; cancelled {' '.join(self.cancelled)} (not yet sending)"
        return said

    def to_json(self) -> dict[str, Any]:
        """The outcome as the API and `--json` give it."""
        return {
            "action": self.action,
            "campaign": self.campaign or None,
            "state": self.state or None,
            "approval_required": bool(self.approval),
            "approval_reason": self.approval or None,
            "supersedes": self.supersedes,
            "cancelled": self.cancelled,
            "alert": self.summary,
        }


class CapIntake:
    """Submits CAP messages as `by`, on one Redis; cancellations go to the audit log."""

    def __init__(self, settings: Settings, redis: RedisClient, log: AuditLog) -> None:
        self.settings = settings
        self.redis = redis
        self.campaigns = Campaigns(settings, redis)
        self.log = log
        self.index = index_key(settings.namespace)

    async def submit(self, data: bytes, by: Principal, *, ip: str = LOCAL) -> Submitted:
        """Act on one CAP message (see the module); CapError or CampaignError when refused."""
        now = datetime.now(UTC)
        # up to a second of parsing and geometry for the largest alerts: off the event loop
        mapped = await asyncio.to_thread(check_alert, data, self.settings, now)
        alert = mapped.alert
        if mapped.expires is not None and mapped.expires <= now:
            raise CapError(
                [f"alert: expired at {mapped.expires.isoformat()}: stale advice is never sent"],
                code="expired",
            )
        if not await self.redis.hsetnx(self.index, alert.key, PENDING):
            found = text(await self.redis.hget(self.index, alert.key) or b"")
            made = f" (campaign {found})" if found and found != PENDING else ""
            raise CapError(
                [f"alert: {alert.key} was submitted already{made}"], code="duplicate", status=409
            )
        try:
            result = await self._act(mapped, data, by, ip)
        except BaseException:
            await self.redis.hdel(self.index, alert.key)
            raise
        await self.redis.hset(self.index, alert.key, result.campaign)
        return result

    async def _act(self, mapped: Mapped, data: bytes, by: Principal, ip: str) -> Submitted:
        alert = mapped.alert
        summary = mapped.summary()
        if alert.msg_type == "Cancel":
            targets = await self._chain(await self._referenced(alert))
            cancelled = await self._cancel(targets, by, ip, f"CAP Cancel {alert.key}")
            return Submitted("cancelled", summary, cancelled=cancelled)
        if not mapped.sends:
            return Submitted("recorded", summary)
        earlier = await self._referenced(alert) if alert.msg_type == "Update" else []
        campaign = await self._create(mapped, data, by, earlier)
        if mapped.auto_approve:
            campaign = await self._approve_signed(campaign, mapped.signed_by, by, ip)
        quiet = await self._not_sending(earlier)
        cancelled = await self._cancel(quiet, by, ip, f"CAP Update {alert.key}", campaign)
        needs = campaign.state is State.DRAFT and campaign.fields.get("approval") == "required"
        return Submitted(
            "created",
            summary,
            campaign=campaign.id,
            state=str(campaign.state),
            approval=campaign.fields.get("approval_reason", "") if needs else "",
            supersedes=[c for c in earlier if c not in cancelled],
            cancelled=cancelled,
        )

    async def _approve_signed(
        self, campaign: Campaign, sender: str, by: Principal, ip: str
    ) -> Campaign:
        """Approve at once what a named sender signed, as the settings allow; audited."""
        reason = f"automatic: CAP alert signed by {sender} (cap.senders)"
        async with audited(self.log, by, "campaign.approve", campaign.id, ip=ip) as note:
            note.detail = reason
            await self.campaigns.approve_signed(campaign.id, reason)
        return await self.campaigns.store.get(campaign.id)

    async def _referenced(self, alert: Alert) -> list[str]:
        """The campaigns of the messages `alert` references; CapError when it knows none."""
        found: list[str] = []
        for reference in alert.references:
            campaign = text(await self.redis.hget(self.index, reference.key) or b"")
            if campaign and campaign != PENDING and campaign not in found:
                found.append(campaign)
        known = [r for r in alert.references if await self.redis.hexists(self.index, r.key)]
        if not known:
            keys = " ".join(ref.key for ref in alert.references)
            raise CapError(
                [f"alert/references: loa has none of the alerts referenced ({keys})"],
                code="unknown_reference",
                status=409,
            )
        return found

    async def _chain(self, campaigns: list[str]) -> list[str]:
        """These campaigns and, transitively, those they supersede (an Update's predecessors)."""
        found = list(campaigns)
        for campaign_id in found:
            if len(found) >= MAX_CHAIN:
                break
            try:
                fields = (await self.campaigns.store.get(campaign_id)).fields
            except CampaignError:
                continue
            found += [c for c in fields.get("supersedes", "").split() if c not in found]
        return found

    async def _not_sending(self, campaigns: list[str]) -> list[str]:
        """Those that have not started sending (draft, approved): replaced at once."""
        quiet = []
        for campaign_id in campaigns:
            state = (await self.campaigns.store.get(campaign_id)).state
            if state in (State.DRAFT, State.APPROVED):
                quiet.append(campaign_id)
        return quiet

    async def _cancel(
        self,
        campaigns: list[str],
        by: Principal,
        ip: str,
        why: str,
        replacement: Campaign | None = None,
    ) -> list[str]:
        """Cancel each campaign not ended yet, each audited; the ids cancelled."""
        done = []
        for campaign_id in campaigns:
            campaign = await self.campaigns.store.get(campaign_id)
            if campaign.state in ENDED:
                continue
            fields = {"superseded_by": replacement.id} if replacement is not None else {}
            try:
                await self.campaigns.store.apply(campaign_id, "cancel", fields)
            except CampaignError as exc:  # ended in the meantime
                await self.log.record(
                    by, "campaign.cancel", campaign_id, ip=ip, outcome=exc.code, detail=why
                )
                continue
            await self.log.record(by, "campaign.cancel", campaign_id, ip=ip, detail=why)
            done.append(campaign_id)
        return done

    async def _create(
        self, mapped: Mapped, data: bytes, by: Principal, earlier: list[str]
    ) -> Campaign:
        """The draft campaign of an Alert or Update, its plan and XML kept beside it."""
        alert = mapped.alert
        cap = self.settings.cap
        channels = self._channels()
        digest = hashlib.sha256(alert.key.encode()).hexdigest()[:20]
        directory = self.settings.data_dir / "cap" / digest
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "alert.xml").write_bytes(data)
        if alert.is_test:
            audience = self._test_audience(directory / "test-audience.csv", mapped.languages)
            by_language = len(mapped.languages) > 1
        else:
            audience = self._standing_audience()
            columns = open_audience(audience).columns
            by_language = "lang" in columns and len(mapped.languages) > 1
        plan = plan_mapping(
            mapped,
            channels,
            by_language=by_language,
            sms_ascii=cap.sms_ascii,
            zalo=cap.zalo,
            regions=not alert.is_test,
            fallback_after={str(c): wait for c, wait in cap.fallback_after.items()},
        )
        Plan.from_mapping(plan, source=f"the plan of CAP alert {alert.identifier}")
        plan_path = directory / "plan.toml"
        plan_path.write_text(to_toml(plan), encoding="utf-8")
        fields = {
            "cap_key": alert.key,
            "cap_identifier": alert.identifier,
            "cap_sender": alert.sender,
            "cap_sent": alert.sent.isoformat(),
            "cap_msg_type": alert.msg_type,
            "cap_status": alert.status,
            "supersedes": " ".join(earlier),
        }
        return await self.campaigns.create(
            plan_path,
            audience,
            by,
            upload=alert.is_test,
            approval="" if alert.is_test else f"CAP alert, status {alert.status}",
            fields=fields,
        )

    def _channels(self) -> list[str]:
        """`cap.channels`, or every channel that has a route (Zalo only with its template)."""
        cap = self.settings.cap
        if cap.channels is not None:
            if "zalo" in cap.channels and cap.zalo is None:
                raise CapError(["cap.channels lists zalo, but cap.zalo (its template) is not set"])
            return list(cap.channels)
        found: list[str] = []
        for channel in CHANNELS:
            spec = self.settings.channels.get(channel)
            routed = spec is not None and bool(spec.default or spec.carriers)
            if routed and (channel != "zalo" or cap.zalo is not None):
                found.append(channel)
        if not found:
            raise CapError(["settings: no channel has a route ([channels.sms] default = ...)"])
        return found

    def _standing_audience(self) -> Path:
        path = self.settings.cap.audience
        if path is None:
            raise CapError(
                ["cap.audience: not set: name the audience file CAP alerts are sent to"],
                code="invalid_config",
            )
        columns = open_audience(path).columns
        if "region" not in columns:
            raise CapError(
                [f"cap.audience: {path} has no `region` column (province codes) to select by"],
                code="invalid_config",
            )
        return path

    def _test_audience(self, path: Path, languages: tuple[str, ...]) -> Path:
        """The test numbers, one row each, their languages in turn: testers see every text."""
        numbers = sorted(self.campaigns.test_numbers)
        if not numbers:
            raise CapError(
                ["alert/status: Test and Exercise alerts go only to api.test_numbers: none set"],
                code="invalid_config",
            )
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["phone", "lang"])
            for n, number in enumerate(numbers):
                writer.writerow([number, languages[n % len(languages)] if languages else ""])
        temporary.replace(path)
        return path
