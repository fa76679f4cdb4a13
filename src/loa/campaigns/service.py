"""What operators do with campaigns: validate, create, approve, launch, steer, watch, report."""

from __future__ import annotations

import asyncio
import csv
import secrets
import shutil
import tomllib
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import orjson

from loa.access.identity import Author, Principal, Role, same_person
from loa.campaigns import dry_run
from loa.campaigns.approval import Need, assess, known_test_numbers
from loa.campaigns.audience import open_audience
from loa.campaigns.partitions import Partition, default_count
from loa.campaigns.pinning import (
    PinnedFile,
    check_audience,
    check_plan,
    pin_audience,
    text_digest,
)
from loa.campaigns.plan import Plan, load_plan, read_plan
from loa.campaigns.planner import (
    PLANNING_COUNTERS,
    Checkpoint,
    Planner,
    Report,
)
from loa.campaigns.processes import plan_in_processes
from loa.campaigns.record import ACTIVE, ENDED, Campaign, State, new_campaign_id
from loa.campaigns.store import CampaignStore
from loa.engine.connection import RedisClient, text
from loa.engine.keys import (
    ShardKeys,
    campaign_seen_key,
    campaign_seen_numbers_key,
    receipts_key,
    region_field,
    regions_key,
    shard_keys,
)
from loa.engine.queue import Queues
from loa.engine.quiet import QuietHours
from loa.engine.scripts import scripts
from loa.engine.silence import campaign_timers
from loa.errors import ApprovalRequired, AuthError, CampaignError, PlanError
from loa.message import Outcome, finished
from loa.settings import Settings

# what `loa campaign status --json` always has
STATUS_KEYS = (
    "state",
    "total",
    "queued",
    "sent",
    "delivered",
    "undelivered",
    "fallback",
    "failed",
    "expired",
    "suppressed",
    "invalid",
    "duplicate",
    "scheduled",
    "past_due",
    "after_expiry",
    "hold",
    "held_until",
)

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NOT_REQUIRED = "not_required"
MAX_REGIONS = 500  # regions a campaign's counts per region are told for (a province: 34)
NO_REGION = "?"  # the planning report's region of rows without one
STEERING = frozenset({"pause", "resume", "cancel"})


class Campaigns:
    """Campaign operations on one Redis, for the CLI and the API."""

    def __init__(self, settings: Settings, redis: RedisClient) -> None:
        self.settings = settings
        self.redis = redis
        self.store = CampaignStore(redis, settings.namespace)
        self.queues = Queues(redis, settings.namespace)
        self._partition_save = scripts(redis, "loa.campaigns")["partition_save"]

    async def validate(self, plan_path: Path, audience: Path) -> Report:
        """The dry run: everything planning would do, counted; nothing queued."""
        return await self._dry_run(await asyncio.to_thread(load_plan, plan_path), audience)

    async def review(self, campaign_id: str) -> Report:
        """The dry run of a stored campaign: its stored plan on its pinned audience, checked."""
        campaign = await self.store.get(campaign_id)
        plan_text = campaign.fields["plan"]
        if campaign.fields.get("plan_sha256"):
            check_plan(plan_text, campaign.fields["plan_sha256"])
        pin = PinnedFile.from_fields(campaign.fields)
        if pin is not None:
            await asyncio.to_thread(check_audience, pin)
        return await self._dry_run(_stored_plan(campaign), Path(campaign.fields["audience"]))

    async def _dry_run(self, plan: Plan, audience: Path) -> Report:
        now = _now()
        # compiling the templates and reading the header are off the loop
        planner, problems = await asyncio.to_thread(
            self._planner, plan, audience, f"dry-{secrets.token_hex(4)}"
        )
        report = Report(problems=[*problems, *_schedule_problems(plan, now)])
        if report.problems:
            return report
        # the planners are imported when first planning: they load numpy and pyarrow, which
        # every `loa` command that plans nothing would otherwise pay for as it starts
        from loa.campaigns.columnar_run import plan_any

        try:
            report = await plan_any(
                planner, self.redis, queue=False, checkpoint=Checkpoint(None, report, {})
            )
        finally:
            ns = self.settings.namespace
            campaign = planner.campaign
            await self.redis.delete(
                campaign_seen_key(ns, campaign), campaign_seen_numbers_key(ns, campaign)
            )
        report.warnings = _timing_warnings(report) + _language_warnings(plan, report)
        report.warnings += dry_run.warnings(plan, report)
        report.warnings += _silence_warnings(plan, report, self.settings)
        report.eta_s = dry_run.eta(report, self.settings)
        return report

    async def create(
        self,
        plan_path: Path,
        audience: Path,
        by: Principal,
        *,
        upload: bool = False,
        approval: str = "",
        fields: Mapping[str, str] | None = None,
    ) -> Campaign:
        """A draft campaign from a plan and an audience that pass their checks, pinned.

        The plan is stored whole and the audience copied into the data directory (an `upload`,
        already loa's own file, is moved there), so that approval covers exactly this content.
        An `approval` reason makes it need a second person's approval whatever its size (a CAP
        alert); `fields` are stored with it (where it came from).
        """
        plan, plan_text = await asyncio.to_thread(read_plan, plan_path)
        audience = audience.resolve()
        _, problems = await asyncio.to_thread(self._planner, plan, audience, "check")
        if problems:
            raise PlanError(f"{plan_path}: " + "; ".join(problems))
        need = await asyncio.to_thread(
            assess, plan.lane, audience, self.settings.api.approval_threshold, self.test_numbers
        )
        if approval and not need.required:
            need = Need(True, approval)
        campaign_id = new_campaign_id()
        limit = int(self.settings.planning.pin_copy_limit_mb * 1024 * 1024)
        directory = self.settings.data_dir / "campaigns" / campaign_id
        pin = await asyncio.to_thread(pin_audience, audience, directory, limit, move=upload)
        return await self.store.create(
            {
                **(fields or {}),  # first: nothing here may override what follows
                "name": plan.name,
                "lane": plan.lane.label,
                "plan": plan_text,
                "plan_sha256": text_digest(plan_text),
                "plan_path": str(plan_path.resolve()),
                "audience_source": "upload" if upload else str(audience),
                **pin.fields(),
                "timezone": plan.schedule.timezone,
                "quiet_hours": str(plan.schedule.quiet_hours)
                if plan.holds_for_quiet_hours and plan.schedule.quiet_hours
                else "",
                "rate": f"{plan.limits.rate:g}" if plan.limits.rate else "",
                **_followup_fields(plan),
                **_creator_fields(by, need),
            },
            campaign_id,
        )

    @property
    def test_numbers(self) -> frozenset[str]:
        """The configured test numbers (a list of only these needs no approval)."""
        return known_test_numbers(self.settings.api.test_numbers)

    async def approve(self, campaign_id: str, by: Principal) -> State:
        """Approve a draft: its pinned content, by a second person when the campaign needs one."""
        campaign = await self.store.get(campaign_id)
        if by.role < Role.APPROVER:
            raise AuthError(
                f"approving needs the approver role; {by.person} has {by.role.label}",
                code="forbidden",
                status=403,
            )
        if needs_two(campaign.fields):
            author = _author(campaign)
            why = same_person(author, by) if author else None
            if why:
                raise AuthError(
                    f"campaign {campaign_id} needs a second person's approval: {why}",
                    code="same_person",
                    status=403,
                )
        return await self._approve(campaign, by.person, by.token)

    async def approve_automatically(self, campaign_id: str) -> str:
        """Approve a draft the two-person rule does not cover (its launch does); the reason."""
        campaign = await self.store.get(campaign_id)
        if needs_two(campaign.fields):
            reason = campaign.fields.get("approval_reason", "created outside the API")
            raise ApprovalRequired(
                f"campaign {campaign_id} needs approval by a second person before launch ({reason})"
            )
        reason = campaign.fields.get("approval_reason", "")
        await self._approve(campaign, f"automatic: {reason}", "")
        return reason

    async def approve_signed(self, campaign_id: str, reason: str) -> None:
        """Approve a draft on the strength of a verified signature from a sender the settings
        trust for it (cap.senders.*.auto_approve): the configured exception to two persons."""
        await self._approve(await self.store.get(campaign_id), reason, "")

    async def _approve(self, campaign: Campaign, by: str, token: str) -> State:
        """Approve the content pinned at create, recording its digests, in one step.

        The audience file itself is checked against these digests at launch, where it is read
        (an approver at another machine or OS account need not be able to read it).
        """
        plan_sha = text_digest(campaign.fields["plan"])
        if campaign.fields.get("plan_sha256"):
            check_plan(campaign.fields["plan"], campaign.fields["plan_sha256"])
        pin = PinnedFile.from_fields(campaign.fields)
        fields: dict[str, str | int] = {
            "approved_by": by,
            "approved_token": token,
            "approved_plan_sha256": plan_sha,
            "approved_audience_sha256": pin.sha256 if pin else "",
        }
        return await self.store.apply(campaign.id, "approve", fields)

    async def remove_ended_audiences(self, now_ms: int | None = None) -> int:
        """Delete the pinned audience copies of campaigns that ended more than the retention ago.

        Personal data is kept no longer than needed; the campaign's record, counters and
        digests stay. Returns how many copies were removed.
        """
        now_ms = _ms(_now()) if now_ms is None else now_ms
        days = self.settings.planning.pinned_retention_days
        if days is None:
            days = self.settings.retention.audiences_days
        keep_ms = int(days * 86_400_000)
        removed = 0
        for campaign_id in await self.store.ids(limit=0):
            campaign = await self.store.get(campaign_id)
            ended = _ended_ms(campaign)
            if not ended or ended + keep_ms > now_ms or campaign.fields.get("audience_removed_ms"):
                continue
            if campaign.fields.get("audience_copied") == "1":
                directory = self.settings.data_dir / "campaigns" / campaign_id
                await asyncio.to_thread(shutil.rmtree, directory, True)
                removed += 1
            # whom it deduplicated: numbers, kept as long as the audience they came from
            ns = self.settings.namespace
            await self.redis.delete(
                campaign_seen_key(ns, campaign_id), campaign_seen_numbers_key(ns, campaign_id)
            )
            await self.store.update(campaign_id, {"audience_removed_ms": now_ms})
        return removed

    def _planner(self, plan: Plan, audience: Path, campaign: str) -> tuple[Planner, list[str]]:
        """A planner for the plan, and its problems with the audience's columns (blocking)."""
        planner = Planner(self.settings, plan, campaign, audience, _now())
        columns = open_audience(audience).columns
        return planner, planner.check(columns) + dry_run.missing_columns(plan, columns)

    async def act(self, campaign_id: str, action: str) -> State:
        """pause, resume or cancel (which drops what it still had queued); approval goes
        through `approve`."""
        if action not in STEERING:
            raise CampaignError(f"{action!r} is not a steering action (pause, resume, cancel)")
        state = await self.store.apply(campaign_id, action)
        if state is State.CANCELLED:
            await self.drop_queued(campaign_id, Outcome.CANCELLED)
        return state

    async def drop_queued(self, campaign_id: str, outcome: Outcome) -> int:
        """Remove the campaign's batches from the queues, counted under `outcome`, at once:
        its counters are whole and the backlog is free now, not when each batch comes due.
        Batches a worker holds end there within a second (it reads the state before a chunk).
        """
        return await self.queues.drop_campaign(self._all_shards(), campaign_id, outcome)

    async def launch(self, campaign_id: str, partitions: int = 1) -> Report:
        """Start sending: plan the audience onto the queues (again, after a crash: it resumes).

        Only what was approved is planned: the stored plan and the pinned audience are checked
        against the digests recorded at approval first, and refused when they differ. With
        more than one partition only the start is made here: each partition is then planned
        by `plan_partition`, in a process of its own (`loa campaign plan ID --partition k/P`).
        """
        await self.start(campaign_id, partitions)
        if partitions > 1:
            return await self.partitions_report(campaign_id)
        return await self.plan_partition(campaign_id, Partition())

    async def launch_in_processes(self, campaign_id: str, partitions: int) -> Report:
        """`launch`, each partition planned in a process of its own (`campaigns.processes`):
        what a server does, whose own loop must stay free; the counts of all added up."""
        if partitions <= 1:
            return await self.launch(campaign_id)
        await self.start(campaign_id, partitions)
        await plan_in_processes(self.settings, campaign_id, partitions)
        return await self.partitions_report(campaign_id)

    async def start(self, campaign_id: str, partitions: int = 1) -> Campaign:
        """The checks and the state change of a launch, and the partitions it is planned in."""
        campaign = await self.store.get(campaign_id)
        if campaign.state is State.DRAFT:
            raise ApprovalRequired(
                f"cannot launch campaign {campaign_id}: it is draft (it must be approved first)"
            )
        Partition.parse(f"0/{partitions}")  # a count an operator can be told about
        await self._check_approved(campaign)
        if partitions > 1 and not await self._partitionable(campaign):
            raise CampaignError(
                f"cannot plan campaign {campaign_id} in {partitions} partitions: only a "
                "single-channel SMS plan in one language without send times or a question can be"
            )
        plan = _stored_plan(campaign)
        if campaign.state is State.APPROVED:
            launched = _now()
            stale = _schedule_problems(plan, launched)
            if stale:
                raise CampaignError(f"cannot launch campaign {campaign_id}: {stale[0]}")
            start = plan.schedule.starts_at(launched)
            expires = plan.schedule.expires_at(launched)
            await self.store.update(
                campaign_id,
                {
                    "start_ms": int(start.timestamp() * 1000),
                    "launched_ms": _ms(launched),
                    "expires_ms": _ms(expires) if expires else 0,
                    "partitions": partitions,
                    "regions_batched": 1,  # both planners batch each region apart
                },
            )
            await self.store.apply(campaign_id, "schedule" if start > launched else "start")
            await self._supersede(campaign)
        elif campaign.fields.get("planned") == "1":
            raise CampaignError(f"campaign {campaign_id} is already launched and planned")
        elif campaign.state in ENDED:
            raise CampaignError(f"cannot launch campaign {campaign_id}: it is {campaign.state}")
        elif int(campaign.fields.get("partitions") or 1) != partitions:
            had = campaign.fields.get("partitions") or 1
            raise CampaignError(f"campaign {campaign_id} was launched in {had} partitions")
        return await self.store.get(campaign_id)

    async def partitions_for(self, campaign_id: str) -> int:
        """The partitions a launch plans in when the operator names no count: those it was
        launched in; else planning.partitions (0: one per core) when the plan can be
        partitioned and the audience file has planning.partition_min_mb; else one."""
        campaign = await self.store.get(campaign_id)
        if campaign.fields.get("launched_ms"):
            return int(campaign.fields.get("partitions") or 1)
        try:
            size = Path(campaign.fields.get("audience", "")).stat().st_size
        except OSError:
            return 1  # the launch itself says what is wrong with the audience
        count = default_count(size, self.settings.planning)
        if count > 1 and not await self._partitionable(campaign):
            return 1
        return count

    async def _partitionable(self, campaign: Campaign) -> bool:
        """Whether the columnar planner plans this campaign (only it plans partitions)."""
        planner = await asyncio.to_thread(
            Planner,
            self.settings,
            _stored_plan(campaign),
            campaign.id,
            Path(campaign.fields.get("audience", "")),
            _now(),
        )
        from loa.campaigns.columnar import eligible  # (see _dry_run)

        return eligible(planner)

    async def plan_partition(self, campaign_id: str, partition: Partition) -> Report:
        """Plan one partition of a launched campaign (resuming from its own checkpoint)."""
        campaign = await self.store.get(campaign_id)
        if not campaign.fields.get("launched_ms") or campaign.state in ENDED:
            raise CampaignError(f"campaign {campaign_id} is not launched, or has ended")
        if int(campaign.fields.get("partitions") or 1) != partition.count:
            had = campaign.fields.get("partitions") or 1
            raise CampaignError(f"campaign {campaign_id} was launched in {had} partitions")
        if campaign.fields.get(_field("planned", partition)) == "1":
            raise CampaignError(f"campaign {campaign_id} is already launched and planned")
        await self._check_approved(campaign)
        launched = datetime.fromtimestamp(int(campaign.fields["launched_ms"]) / 1000, UTC)
        planner = await asyncio.to_thread(
            Planner,
            self.settings,
            _stored_plan(campaign),
            campaign_id,
            Path(campaign.fields["audience"]),
            launched,
        )
        raw = campaign.fields.get(_field("checkpoint", partition))
        checkpoint = Checkpoint.from_json(raw) if raw else None
        save = self._saver(campaign_id, partition)
        from loa.campaigns.columnar_run import plan_any  # (see _dry_run)

        return await plan_any(
            planner, self.redis, queue=True, checkpoint=checkpoint, save=save, partition=partition
        )

    def _saver(self, campaign_id: str, partition: Partition) -> Any:
        """Where a partition's checkpoints go; the campaign's counters are their sums."""

        async def save(point: Checkpoint) -> None:
            if partition.whole:
                fields: dict[str, str | int] = {"checkpoint": point.to_json().decode()}
                if point.finished:
                    fields["planned"] = "1"
                for name in PLANNING_COUNTERS:
                    fields[name] = getattr(point.report, name)
                await self.store.update(campaign_id, fields)
                return
            args: list[str | int] = [partition.label, partition.count, point.to_json().decode()]
            args += PLANNING_COUNTERS
            await self._partition_save(keys=[self.store.key(campaign_id)], args=args)

        return save

    async def partitions_report(self, campaign_id: str) -> Report:
        """The counts of every partition's checkpoint, added up (what is planned so far)."""
        campaign = await self.store.get(campaign_id)
        total = Report()
        for index in range(int(campaign.fields.get("partitions") or 1)):
            part = Partition(index, int(campaign.fields.get("partitions") or 1))
            raw = campaign.fields.get(_field("checkpoint", part))
            if raw:
                total.add(Checkpoint.from_json(raw).report)
        return total

    async def _supersede(self, campaign: Campaign) -> list[str]:
        """Cancel the campaigns this one replaces (its `supersedes` field: ids, space-separated).

        A CAP Update supersedes the alert it updates: from the moment the update is launched,
        what the earlier campaign has not sent yet is dropped, so nobody gets the old text after
        it. The earlier one keeps sending until then: an update waiting for approval never
        leaves people unwarned. Returns the ids cancelled (those already ended are left).
        """
        cancelled = []
        for other in campaign.fields.get("supersedes", "").split():
            try:
                await self.store.apply(other, "cancel", {"superseded_by": campaign.id})
            except CampaignError:
                continue  # ended already, or gone
            cancelled.append(other)
        return cancelled

    async def _check_approved(self, campaign: Campaign) -> None:
        """Refuse a plan or an audience that is not what was approved."""
        approved_plan = campaign.fields.get("approved_plan_sha256")
        if campaign.fields.get("plan_sha256") and not approved_plan:
            raise CampaignError(f"campaign {campaign.id} has no record of what was approved")
        if approved_plan:
            check_plan(campaign.fields["plan"], approved_plan)
        pin = PinnedFile.from_fields(campaign.fields)
        if pin is not None:
            approved = campaign.fields.get("approved_audience_sha256", "")
            if not approved:
                raise CampaignError(f"campaign {campaign.id} has no record of what was approved")
            await asyncio.to_thread(check_audience, pin, approved)

    async def status(self, campaign_id: str) -> dict[str, Any]:
        """State and counters, as they are: a read, which changes nothing (the clock does)."""
        campaign = await self.store.get(campaign_id)
        sending = await self._sending_counts(campaign_id)
        status: dict[str, Any] = {
            "id": campaign_id,
            "name": campaign.name,
            "state": str(campaign.state),
        }
        status["total"] = campaign.counter("total")
        status["queued"] = campaign.counter("queued")
        status["sent"] = sending[Outcome.ACCEPTED]
        receipts = await self._receipt_counts(campaign_id)
        status["delivered"] = sum(receipts.get(r, {}).get("delivered", 0) for r in receipts)
        status["undelivered"] = sum(receipts.get(r, {}).get("undelivered", 0) for r in receipts)
        status["fallback"] = sending[Outcome.FALLBACK]
        status["failed"] = sending[Outcome.FAILED] + sending[Outcome.DEAD]
        status["expired"] = sending[Outcome.EXPIRED]
        status["cancelled"] = sending[Outcome.CANCELLED]
        status["suppressed"] = campaign.counter("suppressed") + sending[Outcome.SUPPRESSED]
        status["invalid"] = campaign.counter("invalid")
        status["duplicate"] = campaign.counter("duplicate")
        status["filtered"] = campaign.counter("filtered")
        status["capped"] = campaign.counter("capped")
        for name in ("scheduled", "past_due", "after_expiry"):
            status[name] = campaign.counter(name)
        status["hold"], status["held_until"] = hold_of(campaign, _now())
        status["retried"] = sending[Outcome.RETRIED]
        # duplicates, as far as loa can know them: sent again after a crash or a partial
        # refusal, and sends whose answer never came (and those of them taken again)
        for outcome in (Outcome.REDELIVERED, Outcome.UNKNOWN, Outcome.POSSIBLE_DUPLICATE):
            status[outcome.value] = sending[outcome]
        # why messages went on to their next channel: silence past fallback_after, or failure
        for outcome in (Outcome.FALLBACK_TIMEOUT, Outcome.FALLBACK_FAILED):
            status[outcome.value] = sending[outcome]
        status["finished"] = finished(sending)
        by_route = await self._route_counts(campaign_id)
        for route, counts in receipts.items():
            by_route.setdefault(route, {}).update(counts)
        status["by_route"] = by_route
        return status

    async def by_region(self, campaign_id: str) -> tuple[dict[str, dict[str, int]], bool]:
        """Queued, sent, delivered and undelivered per region of the audience (`?`: none), and
        whether sent and delivered are counted per region.

        Queued is the planning report's. Sent and delivered are counted per region by the
        engine for batches that carry one region (a worker counts a settled batch's accepted
        messages under it, a receipt counts under its message's batch): told only for a
        campaign whose planner batched each region apart (`regions_batched`: every campaign
        launched since the planners do). At most MAX_REGIONS regions, the largest.
        """
        campaign = await self.store.get(campaign_id)
        raw = campaign.fields.get("checkpoint")
        queued = Checkpoint.from_json(raw).report.by_region if raw else Counter[str]()
        counted = campaign.fields.get("regions_batched") == "1"
        receipts: Any = await self.redis.hgetall(regions_key(self.settings.namespace, campaign_id))
        settled: dict[str, dict[str, int]] = {}
        for field, value in receipts.items():
            region, _, outcome = text(field).rpartition(":")
            settled.setdefault(region, {})[outcome] = int(value)
        regions = [region for region, _ in queued.most_common(MAX_REGIONS)]
        regions += [region for region in settled if region not in queued][:MAX_REGIONS]
        sent = await self._sent_by_region(campaign_id, regions) if counted else {}
        counts = {
            region: {
                "queued": queued.get(region, 0),
                "sent": sent.get(region, 0),
                "delivered": settled.get(region, {}).get("delivered", 0),
                "undelivered": settled.get(region, {}).get("undelivered", 0),
            }
            for region in regions
        }
        if counted and NO_REGION in counts:
            await self._without_region(campaign_id, counts)
        return counts, counted

    async def _sent_by_region(self, campaign_id: str, regions: list[str]) -> dict[str, int]:
        """Accepted messages per region, summed over every shard (one round trip)."""
        if not regions:
            return {}
        fields = [region_field(campaign_id, region, Outcome.ACCEPTED) for region in regions]
        pipe = self.redis.pipeline(transaction=False)
        for keys in self._all_shards():
            pipe.hmget(keys.campaign_stats, fields)
        total = dict.fromkeys(regions, 0)
        for values in await pipe.execute():
            for region, value in zip(regions, values, strict=True):
                total[region] += int(value or 0)
        return total

    async def _without_region(self, campaign_id: str, counts: dict[str, dict[str, int]]) -> None:
        """Messages without a region are counted under none: they are what the campaign's
        totals have beyond the regions'."""
        sending = await self._sending_counts(campaign_id)
        receipts = await self._receipt_counts(campaign_id)
        totals = {
            "sent": sending[Outcome.ACCEPTED],
            "delivered": sum(r.get("delivered", 0) for r in receipts.values()),
            "undelivered": sum(r.get("undelivered", 0) for r in receipts.values()),
        }
        for name, total in totals.items():
            others = sum(c[name] for region, c in counts.items() if region != NO_REGION)
            counts[NO_REGION][name] = max(0, total - others)

    async def advance_all(self) -> dict[str, State]:
        """Move every watched campaign along (the clock's tick); returns the moves made."""
        moved: dict[str, State] = {}
        ended: list[str] = []
        for campaign_id in await self.store.active_ids():
            try:
                campaign = await self.store.get(campaign_id)
            except CampaignError:
                ended.append(campaign_id)  # deleted under us
                continue
            if campaign.state in ENDED:
                ended.append(campaign_id)
                continue
            try:
                state = await self.advance(campaign)
            except CampaignError:
                continue  # an operator acted at the same moment: look again next tick
            if state is not campaign.state:
                moved[campaign_id] = state
        await self.store.forget_active(ended)
        return moved

    async def advance(self, campaign: Campaign) -> State:
        """Start, expire or finish the campaign when time or its counters say so."""
        now = _ms(_now())
        state = campaign.state
        if state is State.SCHEDULED and 0 < int(campaign.fields.get("start_ms", 0)) <= now:
            state = await self.store.apply(campaign.id, "start")
        expires = int(campaign.fields.get("expires_ms", 0) or 0)
        if state in ACTIVE and 0 < expires <= now:
            state = await self.store.apply(campaign.id, "expire")
            await self.drop_queued(campaign.id, Outcome.EXPIRED)
            return state
        if state is State.RUNNING and campaign.fields.get("planned") == "1":
            sending = await self._sending_counts(campaign.id)
            # a message accepted and then sent on for silence is one more to end (one handed
            # over on failure ends only on its next channel); and while a timer waits for a
            # receipt, a message may still go on
            ended = finished(sending)
            more = sending[Outcome.FALLBACK_TIMEOUT]
            if ended >= campaign.counter("queued") + more and not await campaign_timers(
                self.redis, self.settings.namespace, list(self.settings.routes), campaign.id
            ):
                return await self.store.apply(campaign.id, "finish")
        return state

    async def _route_counts(self, campaign_id: str) -> dict[str, dict[str, int]]:
        """Sending counters per route, for routes the campaign used."""
        counts = {}
        for route, limits in self.settings.routes.items():
            shards = shard_keys(self.settings.namespace, route, limits.shards)
            found = await self.queues.campaign_stats(shards, campaign_id)
            if any(found.values()):
                counts[route] = {k: v for k, v in found.items() if v}
        return counts

    async def _receipt_counts(self, campaign_id: str) -> dict[str, dict[str, int]]:
        """Delivered and undelivered receipts per route."""
        raw = await self.redis.hgetall(receipts_key(self.settings.namespace, campaign_id))
        counts: dict[str, dict[str, int]] = {}
        for field, value in raw.items():
            route, _, outcome = text(field).rpartition(":")
            counts.setdefault(route, {})[outcome] = int(value)
        return counts

    async def _sending_counts(self, campaign_id: str) -> dict[str, int]:
        return await self.queues.campaign_stats(self._all_shards(), campaign_id)

    def _all_shards(self) -> list[ShardKeys]:
        """Every shard of every route."""
        return [
            keys
            for route, limits in self.settings.routes.items()
            for keys in shard_keys(self.settings.namespace, route, limits.shards)
        ]

    async def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest campaigns with their state."""
        rows = []
        for campaign_id in await self.store.ids(limit):
            campaign = await self.store.get(campaign_id)
            hold, held_until = hold_of(campaign, _now())
            rows.append(
                {
                    "id": campaign_id,
                    "name": campaign.name,
                    "state": str(campaign.state),
                    "hold": hold,
                    "held_until": held_until,
                    "queued": campaign.counter("queued"),
                }
            )
        return rows

    async def write_failed(self, campaign_id: str, out: Path, *, excel: bool = True) -> int:
        """A CSV of who did not get the campaign and why; returns the number of rows.

        `excel` writes cells a spreadsheet shows as text (never runs as a formula); without
        it, the values exactly as they are, for programs.
        """
        await self.store.get(campaign_id)
        cell = safe_cell if excel else str
        written = 0
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["recipient", "route", "line", "reason"])
            async for route, letter in self._dead_letters(campaign_id):
                line, to = str(letter["message"][0]), str(letter["message"][1])
                writer.writerow([cell(to), route, line, cell(str(letter["reason"]))])
                written += 1
        return written

    async def _dead_letters(self, campaign_id: str) -> Any:
        for route, limits in self.settings.routes.items():
            for keys in shard_keys(self.settings.namespace, route, limits.shards):
                cursor = "-"
                while True:
                    entries: Any = await self.redis.xrange(keys.dead, min=cursor, count=500)
                    for _, fields in entries:
                        letter = msgpack.unpackb(fields[b"m"])
                        if letter.get("campaign") == campaign_id:
                            yield route, letter
                    if len(entries) < 500:
                        break
                    cursor = "(" + text(entries[-1][0])


def _field(name: str, partition: Partition) -> str:
    """A partition's own field of the campaign hash: `name` alone for a whole audience."""
    return name if partition.whole else f"{name}:{partition.label}"


def _schedule_problems(plan: Plan, now: datetime) -> list[str]:
    """A plan that would send nothing because its time is over: said before anything is queued."""
    expires = plan.schedule.expires_at(now)
    if expires is not None and expires <= now:
        return [
            f"the plan expires at {expires.isoformat()}, which is past: nothing would be sent "
            "(give schedule.expires as a duration, or a later time)"
        ]
    return []


def _timing_warnings(report: Report) -> list[str]:
    """What the dry run found about send times that an operator would not expect."""
    warnings = []
    if report.past_due and not report.scheduled:
        warnings.append(
            f"every send time is already past: all {report.past_due:,} go out at launch"
        )
    if report.after_expiry:
        warnings.append(
            f"{report.after_expiry:,} are due after the campaign expires and will never be sent"
        )
    return warnings


def _silence_warnings(plan: Plan, report: Report, settings: Settings) -> list[str]:
    """Routes a plan's fallback_after would wait on that get no delivery receipts: their
    messages wait for nothing, and nobody would be sent on for silence."""
    warnings = []
    for channel in plan.fallback_after:
        spec = settings.channels.get(channel)
        routes = {spec.default, *spec.carriers.values()} - {None} if spec else set()
        for route in sorted(r for r in routes if r and report.by_route.get(r)):
            limits = settings.routes.get(route)
            if limits is None or limits.adapter == "smpp":  # SMPP brings its receipts itself
                continue
            if route not in settings.api.webhook_secrets:
                warnings.append(
                    f"fallback_after.{channel}: route {route} gets no delivery receipts (no "
                    "api.webhook_secrets entry): its messages will not fall back for silence"
                )
    return warnings


def _followup_fields(plan: Plan) -> dict[str, str]:
    """The plan's question as the engine (`followup_window` and `followup_remind`, seconds)
    and loa.followups (`followup`, JSON) read it from the campaign's hash; none for a plan that
    asks nothing."""
    if plan.followup is None:
        return {}
    remind = plan.followup.remind_after
    return {
        "followup": plan.followup.model_dump_json(),
        "followup_window": str(int(plan.followup.window.total_seconds())),
        "followup_remind": str(int(remind.total_seconds())) if remind else "0",
    }


def _language_warnings(plan: Plan, report: Report) -> list[str]:
    """Languages the plan has templates in that nobody would be sent (a missing `lang`)."""
    if len(plan.languages) < 2 or not report.queued:
        return []
    unread = [language for language in plan.languages if not report.by_language[language]]
    return [
        f"templates.{language}: nobody's `lang` is {language!r}: nobody reads these texts "
        f"(everyone without a `lang` of the plan's gets {plan.language!r})"
        for language in unread
    ]


def _creator_fields(by: Principal, need: Need) -> dict[str, str]:
    """Who created a campaign, and whether it needs a second person's approval."""
    return {
        "creator": by.person,
        "creator_role": by.role.label,
        "creator_token": by.token,
        "creator_lineage": orjson.dumps(list(by.lineage)).decode(),
        "approval": "required" if need.required else NOT_REQUIRED,
        "approval_reason": need.reason,
    }


def _ended_ms(campaign: Campaign) -> int:
    """When the campaign ended (epoch ms), or 0 while it has not."""
    if campaign.state not in ENDED:
        return 0
    return int(campaign.fields.get(f"{campaign.state}_ms", 0) or 0)


def needs_two(fields: Mapping[str, str]) -> bool:
    """Whether a stored campaign needs a second person's approval: an emergency always does,
    others as assessed at create (one made before that was assessed does too)."""
    return fields.get("lane") == "emergency" or fields.get("approval") != NOT_REQUIRED


def _author(campaign: Campaign) -> Author | None:
    """Who created the campaign, for the two-person rule (None for one made before persons)."""
    person = campaign.fields.get("creator", "")
    if not person:
        return None
    lineage = tuple(orjson.loads(campaign.fields.get("creator_lineage") or "[]"))
    return Author(person, lineage)


def hold_of(campaign: Campaign, now: datetime) -> tuple[str, str | None]:
    """Why the campaign sends nothing now, and until when (ISO 8601, UTC), if it is held.

    "scheduled" until its start, "paused" until someone resumes it, "quiet hours" until they
    end; ("", None) when it is free to send, or has ended.
    """
    state = campaign.state
    if state is State.SCHEDULED:
        start_ms = int(campaign.fields.get("start_ms", 0) or 0)
        return "scheduled", _iso(start_ms) if start_ms else None
    if state is State.PAUSED:
        return "paused", None
    quiet = campaign.fields.get("quiet_hours", "")
    if state is State.RUNNING and quiet:
        hours = QuietHours.parse(quiet, campaign.fields.get("timezone") or "UTC")
        if hours.contains(now):
            return "quiet hours", hours.next_end(now).astimezone(UTC).isoformat()
    return "", None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _stored_plan(campaign: Campaign) -> Plan:
    """The plan as it was when the campaign was created (the file may have changed since)."""
    return Plan.from_mapping(
        tomllib.loads(campaign.fields["plan"]), source=campaign.fields.get("plan_path", "plan")
    )


def safe_cell(text: str) -> str:
    """A cell a spreadsheet will show as text, never run as a formula."""
    return "'" + text if text.startswith(FORMULA_START) else text


def _now() -> datetime:
    return datetime.now(UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
