"""Judging: judge requests in, judge scores out; calibration against physicians gates them.

An official run's items are judged only by a judge + rubric version whose latest calibration
reached the kappa threshold. A request that finds its rubric uncalibrated is parked (stored,
its Kafka offset committed) and judged as soon as a calibration admits the rubric; a
self-test run is judged at once and its scores carry no calibration id.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge

from judge_scorer.core.calibration import (
    CriterionPair,
    PhysicianScore,
    RatedPair,
    calibration_report,
)
from judge_scorer.core.cost import JudgingCost, judging_cost
from judge_scorer.core.ports import (
    CanaryKey,
    ImageMissing,
    ItemImages,
    JudgeStore,
    PoolKeys,
    Publisher,
    SealedKey,
    Variants,
)
from judge_scorer.core.prompt import ImageMismatch, JudgeImage, check_image
from judge_scorer.core.rubric import Rubric, RubricBook, UnknownRubric
from judge_scorer.usecases.panel import JudgeInput, JudgeOutcome, NoVisionJudge, Panel, PanelResult
from medbench.scoring.v1 import scoring_events_pb2
from medbench_messaging import topics
from medbench_messaging.publisher import Outgoing
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from medbench_runtime.metrics import count_items
from medbench_runtime.timestamps import timestamp

log = logging.getLogger(__name__)

SCORER_VERSION = "judge-1"
KAPPA = Gauge(
    "medbench_judge_kappa",
    "Cohen's kappa of the judge against physicians, latest calibration.",
    ["judge", "rubric"],
)
CALIBRATED = Gauge(
    "medbench_judge_calibrated",
    "1 when the judge and rubric version are calibrated (n >= the minimum and kappa's 95% "
    "lower bound >= threshold), else 0.",
    ["judge", "rubric"],
)
KAPPA_LOW = Gauge(
    "medbench_judge_kappa_lower_bound",
    "Lower bound of the 95% interval of the judge's kappa against physicians (what gates).",
    ["judge", "rubric"],
)
NO_JUDGE = (
    "no judge model is configured: set MEDBENCH_JUDGE__MODELS (a JSON list of "
    '{"model", "base_url", "api_key"}) and restart the judge scorer'
)
NO_VISION_JUDGE = (
    "items with images and no vision-capable judge: declare one in MEDBENCH_JUDGE__MODELS "
    '(an entry with "vision": true) and restart the judge scorer; image items are never '
    "judged blind"
)
MAX_TEXT_CHARS = 100_000
"""Longest question, reference or answer a request may carry (characters)."""
PARKED = Gauge("medbench_judge_parked_requests", "Judge requests waiting for a calibration.")
JUDGED = Counter("medbench_judge_items_total", "Items judged by outcome.", ["outcome"])
REVIEWS = Counter("medbench_judge_reviews_opened_total", "Items sent to physician review.")


class NotCalibrated(Exception):
    """The judge and rubric version have no passing calibration (official scoring refuses)."""


def calibration_refusal(judge: str, rubric: Rubric, latest: dict[str, Any] | None) -> str:
    """Why official scoring refuses this judge and rubric, for error messages and logs."""
    name = f"judge {judge} with rubric {rubric.label}"
    if latest is None:
        return (
            f"{name} has no calibration against physicians: import physician ratings "
            f"(ImportRatings) and run Calibrate"
        )
    if "reason" not in latest:  # measured before the minimum n and the interval gated
        return (
            f"{name} was calibrated under the old gate (kappa point estimate, no minimum n; "
            f"calibration {latest['_id']}): run Calibrate again"
        )
    return f"{name} is not calibrated: {latest['reason']} (calibration {latest['_id']})"


class Judging:
    """The judge scorer's use cases."""

    def __init__(
        self,
        panel: Panel | None,
        rubrics: RubricBook,
        store: JudgeStore,
        pool_keys: PoolKeys,
        publisher: Publisher,
        kappa_threshold: float = 0.80,
        review_spread: float = 0.3,
        variants: Variants | None = None,
        min_ratings: int = 200,
        images: ItemImages | None = None,
    ) -> None:
        """panel: None when no judge is configured (ratings and reviews still work; what needs
        a judge answers FAILED_PRECONDITION naming MEDBENCH_JUDGE__MODELS).
        variants: each download's canaries, judged against their own keys (None: none).
        min_ratings: rated answers a calibration needs, per rubric and per dimension.
        images: the bank's images, shown to vision judges with the items they belong to."""
        self._panel = panel
        self.min_ratings = min_ratings
        self.rubrics = rubrics
        self._store = store
        self._pool_keys = pool_keys
        self._variants = variants
        self._images = images
        self._publisher = publisher
        self.kappa_threshold = kappa_threshold
        self._review_spread = review_spread
        self._calibrating: dict[tuple[str, int], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._background: set[asyncio.Task[None]] = set()

    @property
    def has_judge(self) -> bool:
        """Whether a judge model is configured."""
        return self._panel is not None

    @property
    def panel(self) -> Panel:
        """The configured judge panel; FAILED_PRECONDITION naming the setting when none."""
        if self._panel is None:
            raise FailedPrecondition(NO_JUDGE)
        return self._panel

    def rubric_for(self, dataset: str, rubric_id: str = "") -> Rubric:
        return self.rubrics.get(rubric_id) if rubric_id else self.rubrics.for_dataset(dataset)

    def rubric_named(self, dataset: str, rubric_id: str, field: str = "rubric_id") -> Rubric:
        """The rubric a request names (by id, else its dataset's); INVALID_ARGUMENT if none."""
        if not dataset and not rubric_id:
            raise InvalidArgument("dataset or rubric_id is required")
        try:
            return self.rubric_for(dataset, rubric_id)
        except UnknownRubric as exc:
            raise InvalidArgument(f"{field}: {exc}") from exc

    def versioned(self, rubric_id: str, version: int) -> Rubric:
        """A rubric version (0: the latest); NOT_FOUND if unknown."""
        if not rubric_id:
            raise InvalidArgument("rubric_id is required")
        try:
            return self.rubrics.get(rubric_id, version or None)
        except UnknownRubric as exc:
            raise NotFound(str(exc)) from exc

    async def judge_answer(self, item: JudgeInput, self_test: bool) -> tuple[PanelResult, str]:
        """Judges one answer at once; with the calibration id admitting the rubric ("" for a
        self-test). FAILED_PRECONDITION when an official judgment finds it uncalibrated."""
        if not item.answer.strip():
            raise InvalidArgument("answer is required")
        for name in ("question", "reference", "answer"):
            if len(getattr(item, name)) > MAX_TEXT_CHARS:
                raise InvalidArgument(f"{name} is longer than {MAX_TEXT_CHARS} characters")
        calibration_id = ""
        if not self_test:
            try:
                calibration_id = await self.admitted(item.rubric)
            except NotCalibrated as exc:
                raise FailedPrecondition(str(exc)) from exc
        [result] = await self.panel.judge([item])
        return result, calibration_id

    async def judging_cost(self, submission_id: str) -> list[JudgingCost]:
        """What judging a submission cost, per dataset and judge model, with totals
        (core/cost.py); NOT_FOUND when nothing of it was judged."""
        if not submission_id:
            raise InvalidArgument("submission_id is required")
        judgments = await self._store.judgments(submission_id)
        if not judgments:
            raise NotFound(f"no judged items of submission {submission_id}")
        return judging_cost(judgments)

    async def measure(self, rubric: Rubric, n_resamples: int = 0) -> dict[str, Any]:
        """Calibrate on request: FAILED_PRECONDITION when there is nothing to measure."""
        if not 0 <= n_resamples <= 20_000:
            raise InvalidArgument("n_resamples must be between 0 (default 1,000) and 20,000")
        if not self.has_judge:
            raise FailedPrecondition(NO_JUDGE)
        try:
            return await self.calibrate(rubric, n_resamples or 1000)
        except ValueError as exc:
            raise FailedPrecondition(str(exc)) from exc

    async def calibration(self, rubric: Rubric) -> dict[str, Any]:
        """The latest calibration of the panel with the rubric; NOT_FOUND when none."""
        doc = await self._store.latest_calibration(self.panel.name, rubric.id, rubric.version)
        if doc is None:
            raise NotFound(f"no calibration of {self.panel.name} for {rubric.label}")
        return doc

    async def admitted(self, rubric: Rubric) -> str:
        """The calibration id admitting the rubric for official scoring.

        Raises:
            NotCalibrated: with the reason.
        """
        latest = await self._store.latest_calibration(self.panel.name, rubric.id, rubric.version)
        if latest is None or not latest["calibrated"] or "reason" not in latest:
            raise NotCalibrated(calibration_refusal(self.panel.name, rubric, latest))
        if latest["min_ratings"] < self.min_ratings or latest["threshold"] < self.kappa_threshold:
            raise NotCalibrated(
                f"judge {self.panel.name} with rubric {rubric.label} was calibrated under a "
                f"laxer gate (n >= {latest['min_ratings']}, lower bound >= "
                f"{latest['threshold']:.2f}) than today's (n >= {self.min_ratings}, lower bound "
                f">= {self.kappa_threshold:.2f}; calibration {latest['_id']}): run Calibrate again"
            )
        return str(latest["_id"])

    # -- judge requests ----------------------------------------------------------------------

    async def handle(self, event: scoring_events_pb2.JudgeRequested) -> bool:
        """Judges a request's items and publishes their scores (True); parks it (False) when
        uncalibrated, or when it has items with images and no judge sees images."""
        rubrics = {t.item_id: self.rubric_for(t.dataset, t.rubric_id) for t in event.tasks}
        calibrations: dict[tuple[str, int], str] = {}
        if not event.self_test:
            for rubric in {(r.id, r.version): r for r in rubrics.values()}.values():
                try:
                    calibrations[rubric.id, rubric.version] = await self.admitted(rubric)
                except NotCalibrated as refusal:
                    await self._park(event, str(refusal))
                    return False
        context = event.context
        keys = {k.item_id: k for k in await self._pool_keys.keys(context.pool_id)}
        canaries = (
            {}
            if self._variants is None
            else (await self._variants.variant(context.submission_id)).canaries
        )
        try:
            images, missing = await self._images_of([keys[t.item_id] for t in event.tasks])
        except NoVisionJudge as refusal:
            await self._park(event, str(refusal))
            return False
        inputs = [
            _input(
                t,
                rubrics[t.item_id],
                keys[t.item_id],
                canaries.get(t.item_id),
                tuple(images[i] for i in keys[t.item_id].image_ids or () if i in images),
            )
            for t in event.tasks
        ]
        results = await self._judge_available(inputs, [missing.get(t.item_id) for t in event.tasks])
        scores: list[scoring_events_pb2.ItemScore] = []
        judgments: list[dict[str, Any]] = []
        for task, item, result in zip(event.tasks, inputs, results, strict=True):
            calibration_id = calibrations.get((item.rubric.id, item.rubric.version), "")
            review = result.spread > self._review_spread
            if review:
                await self._open_review(task, item, result)
            scores.append(_item_score(task, result, self.panel, calibration_id, review))
            judgments.append(
                _judgment(event, task, result, calibration_id, keys[task.item_id].image_ids)
            )
            JUDGED.labels("unscored" if result.score is None else "scored").inc()
        await self._store.record_judgments(judgments)
        count_items(
            "judged", context.tenant_id, event.track, sum(r.score is not None for r in results)
        )
        message = scoring_events_pb2.ItemsScored(
            event_id=f"{context.submission_id}:{event.batch_id}:judge-scorer",
            batch_id=event.batch_id,
            # The submission's context, passed on whole as the metric scorer built it.
            context=context,
            scores=scores,
            scorer_version=SCORER_VERSION,
            scored_at=timestamp(datetime.now(UTC)),
        )
        await self._publisher.publish(
            [Outgoing(topics.ITEM_SCORED, message, key=context.submission_id)]
        )
        return True

    async def _images_of(
        self, keys: list[SealedKey]
    ) -> tuple[dict[str, JudgeImage], dict[str, str]]:
        """The bank images of the items (by content id), and why an item cannot be judged (by
        item id) when one of its images is missing from the bank or is not what its id names.

        Raises:
            NoVisionJudge: an item has images and no judge of the panel sees images.
            Exception: an image could not be fetched (transient: the request is retried).
        """
        wanted = sorted({i for k in keys for i in k.image_ids or ()})
        legacy = sorted(k.item_id for k in keys if k.image_ids is None)
        if legacy:
            log.warning(
                "items %s: their pool was frozen before sealed keys recorded image ids; "
                "judged from their text only",
                ", ".join(legacy[:5]) + (" ..." if len(legacy) > 5 else ""),
            )
        if not wanted:
            return {}, {}
        if not self.panel.sees_images:
            raise NoVisionJudge(NO_VISION_JUDGE)
        if self._images is None:
            raise RuntimeError("items with images, and no image source is configured")
        source = self._images
        found: dict[str, JudgeImage] = {}
        absent: dict[str, str] = {}

        async def fetch(image_id: str) -> None:
            try:
                found[image_id] = check_image(await source.image(image_id))
            except (ImageMissing, ImageMismatch) as exc:
                absent[image_id] = str(exc)

        await asyncio.gather(*(fetch(i) for i in wanted))
        missing = {
            k.item_id: "; ".join(absent[i] for i in k.image_ids or () if i in absent)
            for k in keys
            if any(i in absent for i in k.image_ids or ())
        }
        return found, missing

    async def _judge_available(
        self, inputs: list[JudgeInput], missing: list[str | None]
    ) -> list[PanelResult]:
        """The panel's results; an item missing an image is recorded unscorable, not judged."""
        ready = [item for item, reason in zip(inputs, missing, strict=True) if not reason]
        judged = iter(await self.panel.judge(ready) if ready else [])
        results = []
        for item, reason in zip(inputs, missing, strict=True):
            if not reason:
                results.append(next(judged))
                continue
            log.warning("item not judged: %s", reason)
            outcomes = tuple(
                JudgeOutcome(j.model, None, "", error=f"unscorable: {reason}")
                for j in self.panel.judges_of(item)
            )
            results.append(PanelResult(item.rubric, "", outcomes, (), None, 0.0))
        return results

    async def _park(self, event: scoring_events_pb2.JudgeRequested, reason: str) -> None:
        await self._store.park(
            {
                "_id": event.event_id,
                "submission_id": event.context.submission_id,
                "event": event.SerializeToString(),
                "reason": reason,
                "parked_at": _now(),
            }
        )
        PARKED.set(await self._store.parked_count())
        log.warning("judge request %s parked: %s", event.event_id, reason.split(":")[0])

    async def release_parked(self) -> int:
        """Judges parked requests whose rubrics are now calibrated; returns how many."""
        released = 0
        for doc in await self._store.parked():
            event = scoring_events_pb2.JudgeRequested.FromString(doc["event"])
            rubrics = {self.rubric_for(t.dataset, t.rubric_id) for t in event.tasks}
            try:
                for rubric in rubrics if not event.self_test else ():
                    await self.admitted(rubric)
            except NotCalibrated:
                continue
            # A request parked for want of a vision judge stays parked (False) until one is.
            if await self.handle(event):
                await self._store.unpark(doc["_id"])
                released += 1
        PARKED.set(await self._store.parked_count())
        return released

    async def _open_review(
        self, task: scoring_events_pb2.JudgeTask, item: JudgeInput, result: PanelResult
    ) -> None:
        REVIEWS.inc()
        await self._store.open_review(
            {
                # One review per (rubric, prompt): the same answer to the same item is one case.
                "_id": hashlib.sha256(
                    f"{item.rubric.label}\0{result.prompt_hash}".encode()
                ).hexdigest()[:24],
                "state": "open",
                "item_id": task.item_id,
                "dataset": task.dataset,
                "dimension": task.dimension,
                "rubric_id": item.rubric.id,
                "rubric_version": item.rubric.version,
                "question": item.question,
                "reference": item.reference,
                "key_points": list(item.key_points),
                "answer": item.answer,
                # The bank images the judges saw (GetImage without a tenant returns them).
                "image_ids": [image.image_id for image in item.images],
                "judge_scores": result.scores,
                "created_at": _now(),
            }
        )

    # -- calibration -------------------------------------------------------------------------

    async def calibrate(self, rubric: Rubric, n_resamples: int = 1000) -> dict[str, Any]:
        """Measures the panel against every physician rating of the rubric; records it."""
        async with self._calibrating[rubric.id, rubric.version]:
            ratings = await self._store.ratings(rubric.id)
            if not ratings:
                raise ValueError(f"no physician ratings for rubric {rubric.id}")
            cases: dict[str, JudgeInput] = {}
            for r in ratings:
                cases.setdefault(
                    r["case"],
                    JudgeInput(
                        rubric, r["question"], r["reference"], tuple(r["key_points"]), r["answer"]
                    ),
                )
            order = sorted(cases)
            results = dict(
                zip(order, await self.panel.judge([cases[c] for c in order]), strict=True)
            )
            pairs: list[RatedPair] = []
            criterion_pairs: list[CriterionPair] = []
            failures = 0
            for r in ratings:
                result = results[r["case"]]
                if result.score is None:
                    failures += 1
                    continue
                # Per criterion: where both the judge and the physician scored the criteria.
                judged = dict(result.criteria)
                criterion_pairs.extend(
                    CriterionPair(
                        criterion=c["name"],
                        judge=round(judged[c["name"]]),
                        physician=round(c["score"]),
                        case=r["case"],
                    )
                    for c in r.get("criteria", [])
                    if c["name"] in judged
                )
                # Ordinal agreement on the rubric's own integer points.
                pairs.append(
                    RatedPair(
                        judge=round(rubric.scale.min + result.score * _width(rubric)),
                        physician=round(r["score"]),
                        case=r["case"],
                        dimension=r.get("dimension", ""),
                    )
                )
            if not pairs:
                raise ValueError(f"the judge scored none of the {len(ratings)} rated answers")
            report = calibration_report(
                pairs,
                [PhysicianScore(r["case"], r["rater_id"], round(r["score"])) for r in ratings],
                list(range(int(rubric.scale.min), int(rubric.scale.max) + 1)),
                min_ratings=self.min_ratings,
                threshold=self.kappa_threshold,
                n_resamples=n_resamples,
                criteria=criterion_pairs,
                criterion_names=[c.name for c in rubric.criteria],
            )
            digest = hashlib.sha256(
                "\n".join(f"{r['_id']}\t{r['score']!r}" for r in ratings).encode()
            ).hexdigest()[:12]
            doc = {
                **report,
                "_id": f"{self.panel.name}:{rubric.id}:v{rubric.version}:{len(pairs)}:{digest}",
                "judge": self.panel.name,
                "rubric_id": rubric.id,
                "rubric_version": rubric.version,
                "rubric_hash": rubric.content_hash,
                # The gating kappa (quadratic) at the top level, as before the report existed.
                "kappa": report["quadratic"]["kappa"],
                "kappa_low": report["quadratic"]["low"],
                "kappa_high": report["quadratic"]["high"],
                "judge_failures": failures,
                "measured_at": _now(),
            }
            await self._store.add_calibration(doc)
            self.export(doc)
        log.info(
            "calibration %s: kappa %.3f [%.3f, %.3f] over %d answers: %s (%s)",
            doc["_id"],
            doc["kappa"],
            doc["kappa_low"],
            doc["kappa_high"],
            doc["answers"],
            "calibrated" if doc["calibrated"] else "NOT calibrated",
            doc["reason"],
        )
        if doc["calibrated"]:
            # Judging what waited can take long: not on the Calibrate request's path.
            task = asyncio.create_task(self._release_logged())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return doc

    async def _release_logged(self) -> None:
        try:
            released = await self.release_parked()
            log.info("released %d parked judge requests", released)
        except Exception:  # noqa: BLE001 - the next calibration or start-up tries again
            log.exception("releasing parked judge requests failed")

    def export(self, calibration: dict[str, Any]) -> None:
        """Publishes a calibration as Prometheus gauges."""
        labels = (
            calibration["judge"],
            f"{calibration['rubric_id']}.v{calibration['rubric_version']}",
        )
        KAPPA.labels(*labels).set(calibration["kappa"])
        KAPPA_LOW.labels(*labels).set(calibration["kappa_low"])
        CALIBRATED.labels(*labels).set(1.0 if calibration["calibrated"] else 0.0)

    async def export_all(self) -> None:
        """Gauges for every rubric's latest calibration (at start-up)."""
        for rubric in self.rubrics.rubrics:
            latest = await self._store.latest_calibration(
                self.panel.name, rubric.id, rubric.version
            )
            if latest is not None:
                self.export(latest)
        PARKED.set(await self._store.parked_count())


def _now() -> datetime:
    return datetime.now(UTC)


def _width(rubric: Rubric) -> float:
    return float(rubric.scale.max - rubric.scale.min)


def _input(
    task: scoring_events_pb2.JudgeTask,
    rubric: Rubric,
    key: SealedKey,
    canary: CanaryKey | None = None,
    images: tuple[JudgeImage, ...] = (),
) -> JudgeInput:
    """What the judge reads: the pool key's prompt and reference, or, for a canary, the prompt
    as its download showed it and its own key (judged like any item); and the item's bank
    images (a canary's too: only its text is altered)."""
    if canary is not None:
        return JudgeInput(
            rubric,
            canary.alter_prompt(key.prompt),
            canary.alter_key("\n".join(key.reference)),
            tuple(canary.alter_key(k) for k in key.key_points),
            task.answer,
            images,
        )
    return JudgeInput(
        rubric, key.prompt, "\n".join(key.reference), key.key_points, task.answer, images
    )


def _item_score(
    task: scoring_events_pb2.JudgeTask,
    result: PanelResult,
    panel: Panel,
    calibration_id: str,
    review: bool,
) -> scoring_events_pb2.ItemScore:
    score = 0.0 if result.score is None else result.score
    components = [scoring_events_pb2.ComponentScore(name="judge", score=score)]
    parsed = "" if result.score is None else f"{_panel_points(result):g}"
    recall = result.key_point_recall if task.key_point_recall else None
    if recall is not None:
        # The judge decided the key points too (the metric scorer left them to it): a second
        # component, merged with the judge's by the item's rule in the aggregator.
        components.append(scoring_events_pb2.ComponentScore(name="key_point_recall", score=recall))
        parsed = f"{parsed}; key_point_recall {recall:.4g}"
    part = scoring_events_pb2.ItemScore(
        item_id=task.item_id,
        dataset=task.dataset,
        dimension=task.dimension,
        group_id=task.group_id or task.item_id,
        component="judge",
        metric=task.metric or "judge",
        parsed=parsed,
        components=components,
        merge_rule=task.merge_rule or scoring_events_pb2.MERGE_RULE_MEAN,
        unscored=result.score is None,
        prompt_hash=task.prompt_hash,
        judge=scoring_events_pb2.JudgeLineage(
            # The judges of the item (only the vision-capable ones for an item with images).
            judge_models=[o.model for o in result.outcomes] or panel.models,
            rubric_id=result.rubric.id,
            rubric_version=result.rubric.version,
            rubric_hash=result.rubric.content_hash,
            prompt_hash=result.prompt_hash,
            calibration_id=calibration_id,
            panel_rule=panel.rule,
            panel_spread=result.spread,
            injection_flags=list(result.flags),
            sent_to_review=review,
            judge_scores=result.normalised_scores,
        ),
    )
    if len(components) == 1:
        # A part of several components is merged by the aggregator, under merge_rule.
        part.score = score
    return part


def _panel_points(result: PanelResult) -> float:
    """The item's judge score on the rubric's own scale (what a physician would read)."""
    assert result.score is not None
    return result.rubric.scale.min + result.score * _width(result.rubric)


def _judgment(
    event: scoring_events_pb2.JudgeRequested,
    task: scoring_events_pb2.JudgeTask,
    result: PanelResult,
    calibration_id: str,
    image_ids: tuple[str, ...] | None = (),
) -> dict[str, Any]:
    return {
        "_id": f"{event.context.submission_id}:{task.item_id}",
        "submission_id": event.context.submission_id,
        "tenant_id": event.context.tenant_id,
        "item_id": task.item_id,
        "dataset": task.dataset,
        "rubric": result.rubric.label,
        "rubric_hash": result.rubric.content_hash,
        "prompt_hash": result.prompt_hash,
        # The item's bank images shown to the judges (None: its pool's keys recorded none).
        "image_ids": None if image_ids is None else list(image_ids),
        "calibration_id": calibration_id,
        "score": result.score,
        # Judged key-point recall (None: the metric scorer matched the key points lexically, or
        # the item has none); each verdict's key_points_covered below.
        "key_point_recall": result.key_point_recall if task.key_point_recall else None,
        "spread": result.spread,
        "flags": list(result.flags),
        # The panel's score per rubric criterion ([]: no judge scored the criteria).
        "criteria": [{"name": n, "score": v} for n, v in result.criteria],
        "verdicts": [
            {
                "model": o.model,
                "score": None if o.verdict is None else o.verdict.score,
                "raw_score": None if o.verdict is None else o.verdict.raw_score,
                "rationale": "" if o.verdict is None else o.verdict.rationale,
                "key_points_covered": []
                if o.verdict is None
                else list(o.verdict.key_points_covered),
                "criteria": []
                if o.verdict is None
                else [{"name": n, "score": v} for n, v in o.verdict.criteria],
                "raw_output": o.raw_output,
                "error": o.error,
                "cached": o.cached,
                # Lineage and cost (core/cost.py): schema-decoded or text-parsed verdict, calls
                # (0 for a cache hit), server-reported tokens, estimated GPU-seconds.
                "structured": o.structured,
                "calls": o.calls,
                "prompt_tokens": o.prompt_tokens,
                "completion_tokens": o.completion_tokens,
                "gpu_seconds": o.gpu_seconds,
            }
            for o in result.outcomes
        ],
        "judged_at": _now(),
    }
