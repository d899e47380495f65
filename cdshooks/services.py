"""The CDS Hooks calls: validate a hook request, evaluate the rules, store and return the cards;
record feedback.

Facts for a call: the prefetch, per data category (patient, observations, conditions,
medications, allergies, genomics). Where the patient is stored here (``context.patientId`` is the
FHIR id of a stored patient; of the client's site when it has one, else a unique match), a
category the prefetch left out is read from the record, and the stored results (risk
assessments, imaging findings, note findings) are always added, so model-based rules work. These
are read as they were computed by the jobs (nothing is computed in the call for a stored patient).
A category a rule needs that is neither prefetched nor stored answers 412 (no FHIR server is
queried). A patient that exists only in the prefetch is answered from it: the validated risk
calculators the rules name (ASCVD, CHA2DS2-VASc, qSOFA, NEWS2...) are computed from the prefetch
in the call, by the risk job's own input mapping and calculators (``risk.services.assessments_for``);
trained models, note and image findings need a stored patient.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from cdss.audit import audit_record
from decision import load as decision_load
from decision.engine import evaluate, needs
from decision.facts import Facts, RiskFact
from decision.load import load_facts_bulk
from decision.models import Recommendation, RecommendationAction
from decision.services import ActionRefused, recommendation_accept, recommendation_override
from patients.models import Patient
from risk.models import RiskAssessment
from risk.record_inputs import RecordSnapshot
from risk.services import assessments_for

from .cards import build_card, cites
from .catalog import SERVICES, Catalog, ServiceDef, catalog_get
from .models import CardFeedback, IssuedCard, TrustedClient
from .prefetch import CATEGORY_OF_KEY, PrefetchError, facts_from_prefetch

log = logging.getLogger(__name__)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


class HookError(Exception):
    """A request the service cannot answer: ``status`` 400 (malformed), 404, 412 (data missing)."""

    def __init__(self, status: int, code: str, message: str, details: list[str] | None = None) -> None:
        self.status, self.code, self.message, self.details = status, code, message, details or []
        super().__init__(message)


def patient_ref_hash(patient_id: str) -> str:
    """A keyed hash of the EHR's patient id: links a patient's cards without storing the id."""
    return hmac.new(settings.SECRET_KEY.encode(), patient_id.encode(), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------------------------
# Request validation (CDS Hooks 2.0.1 "HTTP Request"; hooks patient-view 1.0, order-select 1.0,
# order-sign 1.0)


@dataclass
class HookRequest:
    service: ServiceDef
    hook_instance: uuid.UUID
    context: dict[str, Any]
    prefetch: dict[str, Any] | None
    fhir_server: str = ""
    patient_id: str = ""
    selections: list[str] = field(default_factory=list)
    draft_orders: dict[str, Any] | None = None


def _context_id(value: Any, name: str, problems: list[str], *, reference: bool = False) -> str:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"context.{name} is required (a string)")
        return ""
    if reference and not REFERENCE.match(value):
        problems.append(f"context.{name} must be a reference like 'Practitioner/123'")
    return value


def parse_request(service_id: str, body: Any) -> HookRequest:
    service = SERVICES.get(service_id)
    if service is None:
        raise HookError(404, "unknown_service", f"no CDS service {service_id!r} (see GET /cds-services)")
    if not isinstance(body, dict):
        raise HookError(400, "invalid_request", "the body must be a JSON object")
    problems: list[str] = []
    hook = body.get("hook")
    if hook is None:
        problems.append("hook is required")
    elif hook != service.hook:
        raise HookError(400, "wrong_hook", f"service {service_id!r} answers the {service.hook!r} hook, not {hook!r}")
    instance = body.get("hookInstance")
    hook_instance = None
    if not isinstance(instance, str) or not _UUID.match(instance):
        problems.append("hookInstance is required and must be a UUID")
    else:
        hook_instance = uuid.UUID(instance)
    context = body.get("context")
    if not isinstance(context, dict):
        problems.append("context is required (an object)")
        context = {}
    if "fhirAuthorization" in body and not body.get("fhirServer"):
        problems.append("fhirServer is required when fhirAuthorization is sent (cds-r-1)")
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        problems.append("prefetch must be an object")
    patient_id = ""
    if isinstance(body.get("context"), dict):
        _context_id(context.get("userId"), "userId", problems, reference=True)
        patient_id = _context_id(context.get("patientId"), "patientId", problems)
    selections: list[str] = []
    draft_orders = None
    if "draftOrders" in service.required_context and isinstance(body.get("context"), dict):
        draft_orders = context.get("draftOrders")
        if not isinstance(draft_orders, dict) or draft_orders.get("resourceType") != "Bundle":
            problems.append("context.draftOrders is required (a FHIR Bundle)")
            draft_orders = None
    if "selections" in service.required_context and isinstance(body.get("context"), dict):
        raw = context.get("selections")
        if not isinstance(raw, list) or not raw or not all(isinstance(s, str) and REFERENCE.match(s) for s in raw):
            problems.append("context.selections is required (a non-empty list of references like "
                            "'MedicationRequest/123')")
        else:
            selections = raw
            if draft_orders is not None:
                ids = {f"{(e.get('resource') or {}).get('resourceType')}/{(e.get('resource') or {}).get('id')}"
                       for e in draft_orders.get("entry") or [] if isinstance(e, dict)}
                missing = [s for s in raw if s not in ids]
                if missing:
                    problems.append(f"context.selections name orders not in draftOrders: {', '.join(missing)}")
    if problems or hook_instance is None:
        raise HookError(400, "invalid_request", "the hook request is not valid", problems)
    return HookRequest(service=service, hook_instance=hook_instance, context=context,
                       prefetch=prefetch, fhir_server=str(body.get("fhirServer") or ""), patient_id=patient_id,
                       selections=selections, draft_orders=draft_orders)


# --------------------------------------------------------------------------------------------
# The call


def _local_patient(patient_id: str, client: TrustedClient | None) -> Patient | None:
    qs = Patient.objects.filter(fhir_id=patient_id)
    if client is not None and client.site_id is not None:
        qs = qs.filter(site_id=client.site_id)
    found = list(qs[:2])
    return found[0] if len(found) == 1 else None


@dataclass
class HookResponse:
    body: dict[str, Any]
    local: bool
    seconds: float


def hook_call(request: HookRequest, *, client: TrustedClient | None, base_url: str) -> HookResponse:
    """Evaluate the service's rules for the request and store the cards issued."""
    started = time.perf_counter()
    catalog = catalog_get()
    now = timezone.now()
    service_id = request.service.id
    try:
        parsed = facts_from_prefetch(patient_id=request.patient_id, prefetch=request.prefetch, plan=catalog.plan,
                                     as_of=now, draft_orders=request.draft_orders, selections=request.selections)
    except PrefetchError as exc:
        if exc.too_large:
            raise HookError(413, "too_large", exc.problems[0]) from None
        raise HookError(400, "invalid_prefetch", "the prefetch or the draft orders cannot be read",
                        exc.problems) from None
    facts = parsed.facts
    patient = _local_patient(request.patient_id, client)
    needed = catalog.categories.get(service_id, set())
    if patient is not None:
        supplied = parsed.supplied | ({"patient"} if parsed.patient_found else set())
        _merge(facts, _stored_facts(patient.pk, catalog, now, supplied), parsed.supplied, parsed.patient_found)
    else:
        missing = sorted(needed - parsed.supplied - ({"patient"} if parsed.patient_found else set()))
        if missing:
            keys = [k for k, c in CATEGORY_OF_KEY.items() if c in missing]
            failed = f" (answered with an OperationOutcome: {', '.join(sorted(parsed.failed))})" if parsed.failed \
                else ""
            raise HookError(412, "prefetch_required",
                            f"the patient is not stored here and the prefetch lacks {', '.join(keys)}{failed}; this "
                            "service does not query FHIR servers: send these prefetch keys (null when empty)",
                            [f"prefetch.{k} is missing" for k in keys])
    rules = catalog.rules.get(service_id, [])
    if patient is None:
        facts.risks = prefetch_risks(parsed.snapshot, now, needs(rules)[0])
    site_id = patient.site_id if patient is not None else (client.site_id if client is not None else None)
    rules = [r for r in rules if r.version_id not in catalog.sites or site_id in catalog.sites[r.version_id]]
    results = [r for r in evaluate(rules, facts, trace_all=False) if r.fired]
    if request.service.hook == "order-select":
        results = [r for r in results if cites(r, parsed.selected_sources)]
    elif request.service.hook == "order-sign":
        results = [r for r in results if cites(r, set(parsed.draft_sources))]
    cards, issued = _cards(results, catalog, request, base_url=base_url, client=client, patient=patient,
                           draft_sources=parsed.draft_sources)
    with transaction.atomic():
        IssuedCard.objects.bulk_create(issued)
        if patient is not None:
            audit_record(user=None, action="cds-hooks", target=f"{service_id}:{request.hook_instance}",
                         patient=patient, detail=f"{len(cards)} card(s) for client {client.pk if client else '-'}")
    seconds = time.perf_counter() - started
    log.info("cds-hooks %s: %d card(s) from %d rule(s), stored patient=%s, %.1f ms", service_id, len(cards),
             len(rules), patient is not None, seconds * 1000)
    return HookResponse(body={"cards": cards}, local=patient is not None, seconds=seconds)


PREFETCH_RISK_SOURCE = "computed from the prefetch"


def prefetch_risks(snapshot: RecordSnapshot, as_of: dt.datetime, calculators: set[str]) -> dict[str, RiskFact]:
    """The named calculators scored from a prefetch, as the risk job scores a stored record (same
    input mapping, look-back windows and applicability; nothing stored). A calculator that does
    not apply is absent; one that lacks inputs has no value (its trace says so)."""
    if not calculators:
        return {}
    out = {}
    for row in assessments_for(snapshot, as_of=as_of, calculators=calculators):
        computed = row["status"] == RiskAssessment.Status.COMPUTED
        out[row["calculator"]] = RiskFact(
            calculator=row["calculator"], value=row["value"] if computed else None, unit=row["unit"],
            category=row["category"] if computed else "", at=as_of, source=PREFETCH_RISK_SOURCE,
            contributions=row["contributions"] if computed else {})
    return out


RECORD_CATEGORIES = frozenset({"patient", "observations", "conditions", "medications", "allergies", "genomics"})


def _stored_facts(pk: int, catalog: Catalog, now: dt.datetime, supplied: set[str]) -> Facts:
    """The stored patient's facts: all of them when the prefetch left a category out, else only
    the stored results (risk, notes, imaging), which no prefetch carries."""
    if not supplied >= RECORD_CATEGORIES:
        return load_facts_bulk([pk], as_of=now, plan=catalog.plan)[pk]
    out = {pk: Facts(patient_id=pk, as_of=now)}
    decision_load.add_risks(out, [pk], now, catalog.plan)
    decision_load.add_notes(out, [pk], now)
    out[pk].imaging = decision_load.IMAGING_PROVIDER([pk], now).get(pk, [])
    return out[pk]


def _merge(facts: Facts, stored: Facts, supplied: set[str], patient_found: bool) -> None:
    """Stored data for the categories the prefetch left out; stored results always."""
    facts.patient_id = stored.patient_id
    if not patient_found and "patient" not in supplied:
        facts.age, facts.sex = stored.age, stored.sex
    if "observations" not in supplied:
        facts.observations = stored.observations
    if "conditions" not in supplied:
        facts.conditions = stored.conditions
    if "medications" not in supplied:
        facts.medications = facts.medications + stored.medications  # draft orders first
    if "allergies" not in supplied:
        facts.allergies = stored.allergies
    if "genomics" not in supplied:
        facts.genomics = {**stored.genomics, **facts.genomics}
    if facts.pregnant is None:
        facts.pregnant = stored.pregnant
    facts.risks, facts.imaging, facts.notes = stored.risks, stored.imaging, stored.notes
    facts.cache.clear()


def _cards(results: list[Any], catalog: Catalog, request: HookRequest, *, base_url: str,
           client: TrustedClient | None, patient: Patient | None,
           draft_sources: list[str]) -> tuple[list[dict[str, Any]], list[IssuedCard]]:
    open_recs: dict[int, int] = {}
    if patient is not None and results:
        rule_ids = [catalog.meta[r.version_id].rule_id for r in results]
        open_recs = dict(Recommendation.objects.filter(patient=patient, rule_id__in=rule_ids, closed_at__isnull=True)
                         .values_list("rule_id", "pk"))
    ref_hash = patient_ref_hash(request.patient_id)
    topic_system = f"{base_url}/cds-services/topics"
    cards, issued = [], []
    # Most severe first, then by rule (a stable order for the EHR).
    rank = {"critical": 0, "warning": 1, "info": 2}
    for result in sorted(results, key=lambda r: (rank.get(r.severity, 3), r.rule)):
        meta = catalog.meta[result.version_id]
        card_uuid = uuid.uuid4()
        explain = base_url + reverse("cds-card", args=[card_uuid])
        card, labels = build_card(result, meta, card_uuid=card_uuid, explain_url=explain, topic_system=topic_system,
                                  draft_sources=draft_sources)
        cards.append(card)
        issued.append(IssuedCard(
            uuid=card_uuid, service_id=request.service.id, hook=request.service.hook,
            hook_instance=request.hook_instance, client=client, rule_id=meta.rule_id,
            rule_version_id=result.version_id, patient=patient, patient_ref_hash=ref_hash,
            recommendation_id=open_recs.get(meta.rule_id), indicator=card["indicator"], summary=card["summary"],
            detail=card.get("detail", ""), trace=result.trace, suggestions=labels))
    return cards, issued


# --------------------------------------------------------------------------------------------
# Feedback (CDS Hooks 2.0.1 "Feedback")


@dataclass
class FeedbackItem:
    card: uuid.UUID
    outcome: str
    at: dt.datetime
    suggestions: list[str]
    reason_system: str = ""
    reason_code: str = ""
    comment: str = ""


def parse_feedback(body: Any) -> list[FeedbackItem]:
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list) or not body["feedback"]:
        raise HookError(400, "invalid_feedback", "the body must be {\"feedback\": [...]} with at least one item")
    problems: list[str] = []
    items = []
    for i, raw in enumerate(body["feedback"]):
        where = f"feedback[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where} must be an object")
            continue
        card = raw.get("card")
        if not isinstance(card, str) or not _UUID.match(card):
            problems.append(f"{where}.card is required (the card's uuid)")
        outcome = raw.get("outcome")
        if outcome not in CardFeedback.Outcome.values:
            problems.append(f"{where}.outcome must be accepted or overridden (cds-fb-1)")
        stamp = raw.get("outcomeTimestamp")
        at = None
        try:
            at = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if isinstance(stamp, str) else None
        except ValueError:
            at = None
        if at is None or at.tzinfo is None:
            problems.append(f"{where}.outcomeTimestamp is required (ISO 8601 with a time zone)")
        accepted = raw.get("acceptedSuggestions")
        suggestions: list[str] = []
        if outcome == "accepted":
            if not isinstance(accepted, list) or not accepted or not all(
                    isinstance(s, dict) and isinstance(s.get("id"), str) and s["id"] for s in accepted):
                problems.append(f"{where}.acceptedSuggestions is required when accepted: [{{\"id\": uuid}}] "
                                "(cds-fb-2)")
            else:
                suggestions = [s["id"] for s in accepted]
        reason = raw.get("overrideReason")
        system = code = comment = ""
        if reason is not None:
            if outcome != "overridden":
                problems.append(f"{where}.overrideReason applies to an overridden card only")
            if not isinstance(reason, dict) or not (reason.get("reason") or reason.get("userComment")):
                problems.append(f"{where}.overrideReason needs a reason or a userComment (cds-fb-3)")
            else:
                coding = reason.get("reason")
                if coding is not None:
                    if not isinstance(coding, dict) or not coding.get("code") or not coding.get("system"):
                        problems.append(f"{where}.overrideReason.reason must be a Coding with system and code")
                    else:
                        system, code = str(coding["system"])[:500], str(coding["code"])[:100]
                comment = str(reason.get("userComment") or "")
        if not problems and at is not None and isinstance(card, str):
            items.append(FeedbackItem(uuid.UUID(card), str(outcome), at, suggestions, system, code, comment))
    if problems:
        raise HookError(400, "invalid_feedback", "the feedback is not valid", problems)
    return items


@dataclass
class FeedbackSummary:
    stored: int = 0
    duplicates: int = 0
    actions: int = 0


def feedback_record(service_id: str, items: list[FeedbackItem], *, client: TrustedClient | None) -> FeedbackSummary:
    """Store the feedback (each item once) and record it as an action on the in-app
    recommendation where there is one, so it counts in the same per-rule statistics. All or
    nothing: an unknown card refuses the whole batch."""
    if service_id not in SERVICES:
        raise HookError(404, "unknown_service", f"no CDS service {service_id!r}")
    cards = {c.uuid: c for c in IssuedCard.objects.filter(uuid__in=[i.card for i in items], service_id=service_id)
             .select_related("rule_version", "recommendation")}
    unknown = sorted({str(i.card) for i in items if i.card not in cards})
    if unknown:
        raise HookError(404, "unknown_card", f"no card issued by service {service_id!r} with uuid "
                        f"{', '.join(unknown)}")
    foreign = [str(i.card) for i in items if client is not None and cards[i.card].client_id not in (None, client.pk)]
    if foreign:
        raise HookError(403, "not_your_card", f"cards issued to another client: {', '.join(foreign)}")
    summary = FeedbackSummary()
    with transaction.atomic():
        for item in items:
            card = cards[item.card]
            unknown_suggestions = [s for s in item.suggestions if s not in (card.suggestions or {})]
            if unknown_suggestions:
                raise HookError(400, "invalid_feedback", f"card {item.card} has no suggestion "
                                f"{', '.join(unknown_suggestions)}")
            for suggestion in item.suggestions or [""]:
                reasons = {r.get("code"): r for r in card.rule_version.override_reasons or []}
                display = str((reasons.get(item.reason_code) or {}).get("display", ""))[:300]
                try:
                    with transaction.atomic():
                        fb = CardFeedback.objects.create(
                            card=card, outcome=item.outcome, outcome_timestamp=item.at, suggestion=suggestion,
                            reason_system=item.reason_system, reason_code=item.reason_code, reason_display=display,
                            user_comment=item.comment)
                except IntegrityError:
                    summary.duplicates += 1
                    continue
                summary.stored += 1
                action = _record_action(card, item, suggestion, display)
                if action is not None:
                    fb.action = action
                    fb.save(update_fields=["action"])
                    summary.actions += 1
    log.info("cds-hooks feedback %s: %d stored, %d duplicate(s), %d action(s)", service_id, summary.stored,
             summary.duplicates, summary.actions)
    return summary


def _record_action(card: IssuedCard, item: FeedbackItem, suggestion: str,
                   display: str) -> RecommendationAction | None:
    """The feedback as a RecommendationAction (source cds-hooks) on the stored patient's
    recommendation of the same rule: through the decision services while it is active (its status
    changes as in the app), else appended as a plain action row. None for a patient not stored
    here (the statistics then come from CardFeedback)."""
    rec = card.recommendation
    if rec is None:
        return None
    label = str((card.suggestions or {}).get(suggestion, ""))[:300]
    source = RecommendationAction.Source.CDS_HOOKS
    if rec.status == Recommendation.Status.ACTIVE:
        try:
            if item.outcome == "accepted":
                return recommendation_accept(rec, user=None, suggestion=label, source=source, comment=item.comment)
            return recommendation_override(rec, user=None, reason_code=item.reason_code, comment=item.comment,
                                           source=source)
        except ActionRefused:
            pass  # a reason outside the rule's list, or no comment on a critical card: recorded as given
    return RecommendationAction.objects.create(
        recommendation=rec, rule_id=rec.rule_id, rule_version_id=card.rule_version_id,
        action=RecommendationAction.Action.ACCEPT if item.outcome == "accepted" else RecommendationAction.Action.OVERRIDE,
        reason_code=item.reason_code, reason_display=display, comment=item.comment, suggestion=label, source=source)
