"""Cards from the engine's results, and the checks every response must pass (pure Python).

A card follows CDS Hooks 2.0.1 "CDS Service Response" (Card, Suggestion, Action, Link) and the
specification's invariants (HL7/cds-hooks ``input/fsh/invariants``: cds-resp-1..6): summary under
140 characters, indicator info|warning|critical, source with a label, ``selectionBehavior``
with every ``suggestions``, a ``display`` on every override reason, a description on every
action, ``resourceId`` (not ``resource``) on deletes, ``appContext`` only on smart links. An
optional member without a value is left out: nothing is ever null, "", [] or {} (except
``cards: []``).
"""

from __future__ import annotations

import uuid
from typing import Any

from decision.engine import Result

from .catalog import RuleMeta

SUMMARY_MAX = 139  # "<140 characters"
INDICATORS = ("info", "warning", "critical")
SELECTION_BEHAVIORS = ("at-most-one", "any")
ACTION_TYPES = ("create", "update", "delete")
LINK_TYPES = ("absolute", "smart")
SOURCE_LABEL = "CDSS decision support"


def short(text: str, limit: int = SUMMARY_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def prune(node: Any) -> Any:
    """A copy without null, "", [] or {} members (recursively)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            pruned = prune(value)
            if pruned is None or pruned == "" or pruned == [] or pruned == {}:
                continue
            out[key] = pruned
        return out
    if isinstance(node, list):
        items = [prune(v) for v in node]
        return [v for v in items if not (v is None or v == "" or v == [] or v == {})]
    return node


def _value_text(entry: dict[str, Any]) -> str:
    value = entry.get("value")
    if value is None:
        return "not recorded"
    text = f"{round(value, 2):g}" if isinstance(value, float) else str(value)
    unit = entry.get("value_unit") or ""
    return f"{text} {unit}".strip() if unit not in ("1", "a") else text


def _trace_lines(trace: list[dict[str, Any]], depth: int = 0) -> list[str]:
    lines = []
    pad = "  " * depth
    for entry in trace:
        if entry.get("kind") == "group":
            mark = "met" if entry.get("held") else "not met"
            lines.append(f"{pad}- {entry.get('logic', 'all')} of ({mark}):")
            lines.extend(_trace_lines(entry.get("items") or [], depth + 1))
            continue
        fact = str(entry.get("fact", ""))
        if entry.get("kind") == "shown":
            lines.append(f"{pad}- shown: `{fact}` = {_value_text(entry)}")
            continue
        op = entry.get("op", "")
        threshold = entry.get("threshold")
        test = f"{op} {threshold} {entry.get('unit') or ''}".strip() if threshold is not None else op
        found = "" if op in ("present", "absent") else f" (value {_value_text(entry)})"
        when = f", {str(entry['at'])[:10]}" if entry.get("at") else ""
        held = "**met**" if entry.get("held") else "not met"
        problem = f"; {entry['problem']}" if entry.get("problem") else ""
        # Evidence the EHR can resolve: prefetched resources ("Type/id"); stored rows are shown on
        # the explanation page instead.
        source = str(entry.get("source") or "")
        evidence = f", from {source}" if "/" in source else ""
        lines.append(f"{pad}- `{fact}` {test}: {held}{found}{when}{evidence}{problem}")
    return lines


def detail_markdown(result: Result, meta: RuleMeta) -> str:
    """The card's detail: what fired and why (the trace), the rationale and the citation."""
    parts = [f"Rule **{meta.slug} v{meta.number}** ({meta.title}) fired because:", "",
             *_trace_lines(result.trace)]
    if result.detail.strip():
        parts += ["", result.detail.strip()]
    if meta.rationale.strip():
        parts += ["", meta.rationale.strip()]
    if meta.citation_source.strip():
        parts += ["", f"Source: {meta.citation_source.strip()}"]
    return "\n".join(parts)


def _evidence(trace: list[dict[str, Any]]) -> list[str]:
    """Every source a trace names (conditions, nested groups, explanations), leaving out the
    conditions and groups that did not hold (an "any" branch that did not fire the rule)."""
    out: list[str] = []
    for entry in trace:
        if entry.get("held") is False:
            continue
        if entry.get("kind") == "group":
            out.extend(_evidence(entry.get("items") or []))
            continue
        if entry.get("source"):
            out.append(str(entry["source"]))
        explanation = entry.get("explanation") or {}
        out.extend(str(s) for s in explanation.get("matches") or [])
    return out


def cites(result: Result, sources: set[str]) -> bool:
    """Whether the result's evidence names one of ``sources`` (e.g. a draft order)."""
    return any(s in sources for s in _evidence(result.trace))


def build_card(
    result: Result, meta: RuleMeta, *, card_uuid: uuid.UUID, explain_url: str, topic_system: str,
    draft_sources: list[str] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """One card and its suggestions (uuid -> label, stored for feedback)."""
    suggestions: list[dict[str, Any]] = []
    labels: dict[str, str] = {}
    cited_drafts = [s for s in _evidence(result.trace) if s in set(draft_sources or [])]
    for i, action in enumerate(meta.suggested_actions):
        label = str(action.get("label") or "").strip()
        if not label:
            continue
        sid = str(uuid.uuid5(card_uuid, f"suggestion-{i}"))
        suggestion: dict[str, Any] = {"label": short(label, 200), "uuid": sid, "isRecommended": not suggestions}
        if action.get("type") == "discontinue" and cited_drafts:
            # The order being placed is the one to withdraw (a delete names it by resourceId).
            suggestion["actions"] = [{"type": "delete", "description": f"Remove the draft order {ref}",
                                      "resourceId": ref} for ref in dict.fromkeys(cited_drafts)]
        suggestions.append(suggestion)
        labels[sid] = label
    reasons = [
        {"system": str(r.get("system", "")), "code": str(r.get("code", "")), "display": str(r.get("display", ""))}
        for r in meta.override_reasons
        if r.get("system") and r.get("code") and r.get("display")
    ]
    source: dict[str, Any] = {
        "label": short(f"{SOURCE_LABEL}: {meta.title}", 200),
        "url": meta.citation_url,
        "topic": {"system": topic_system, "code": meta.slug, "display": meta.title},
    }
    card: dict[str, Any] = {
        "uuid": str(card_uuid),
        "summary": short(result.summary or meta.title),
        "indicator": result.severity if result.severity in INDICATORS else "info",
        "source": source,
        "detail": detail_markdown(result, meta),
        "overrideReasons": reasons,
        "links": [{"label": "Why this card? Full explanation", "url": explain_url, "type": "absolute"}],
    }
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    return prune(card), labels


# --------------------------------------------------------------------------------------------
# Conformance (run by the tests on every response; cheap enough for a debug check)


def _empty_members(node: Any, path: str, out: list[str], *, top: bool = False) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else key
            if value is None or value == "" or value == {} or (value == [] and not (top and key == "cards")):
                out.append(f"{where} is null or empty")
            _empty_members(value, where, out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _empty_members(value, f"{path}[{i}]", out)


def _coding(node: Any, where: str, out: list[str], *, display: bool) -> None:
    if not isinstance(node, dict) or not node.get("system") or not node.get("code"):
        out.append(f"{where}: a Coding needs system and code")
    elif display and not node.get("display"):
        out.append(f"{where}: display is required (cds-resp-4)")


def response_problems(body: Any) -> list[str]:
    """Every way ``body`` breaks the CDS Hooks 2.0.1 response rules (empty when conformant)."""
    out: list[str] = []
    if not isinstance(body, dict) or not isinstance(body.get("cards"), list):
        return ["cards (an array) is required"]
    _empty_members(body, "", out, top=True)
    for i, card in enumerate(body["cards"]):
        where = f"cards[{i}]"
        if not isinstance(card, dict):
            out.append(f"{where} must be an object")
            continue
        summary = card.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) >= 140:
            out.append(f"{where}.summary is required and shorter than 140 characters")
        if card.get("indicator") not in INDICATORS:
            out.append(f"{where}.indicator must be one of {', '.join(INDICATORS)}")
        source = card.get("source")
        if not isinstance(source, dict) or not source.get("label"):
            out.append(f"{where}.source.label is required")
        elif "topic" in source:
            _coding(source["topic"], f"{where}.source.topic", out, display=False)
        if "uuid" in card:
            try:
                uuid.UUID(str(card["uuid"]))
            except ValueError:
                out.append(f"{where}.uuid is not a UUID")
        for j, reason in enumerate(card.get("overrideReasons") or []):
            _coding(reason, f"{where}.overrideReasons[{j}]", out, display=True)
        suggestions = card.get("suggestions")
        if suggestions is not None:
            behavior = card.get("selectionBehavior")
            if behavior not in SELECTION_BEHAVIORS:
                out.append(f"{where}.selectionBehavior is required with suggestions (cds-resp-6)")
            recommended = sum(1 for s in suggestions if isinstance(s, dict) and s.get("isRecommended"))
            if behavior == "at-most-one" and recommended > 1:
                out.append(f"{where}: at most one suggestion may be recommended (cds-resp-1)")
            for j, s in enumerate(suggestions):
                swhere = f"{where}.suggestions[{j}]"
                if not isinstance(s, dict) or not s.get("label"):
                    out.append(f"{swhere}.label is required")
                    continue
                for k, action in enumerate(s.get("actions") or []):
                    awhere = f"{swhere}.actions[{k}]"
                    if action.get("type") not in ACTION_TYPES:
                        out.append(f"{awhere}.type must be one of {', '.join(ACTION_TYPES)}")
                    if not action.get("description"):
                        out.append(f"{awhere}.description is required (cds-resp-5)")
                    if action.get("type") == "delete" and ("resource" in action or not action.get("resourceId")):
                        out.append(f"{awhere}: a delete names resourceId, not resource (cds-resp-2)")
                    if action.get("type") in ("create", "update") and not isinstance(action.get("resource"), dict):
                        out.append(f"{awhere}: create and update carry the resource")
        elif "selectionBehavior" in card:
            out.append(f"{where}.selectionBehavior without suggestions")
        for j, link in enumerate(card.get("links") or []):
            lwhere = f"{where}.links[{j}]"
            if not isinstance(link, dict) or not link.get("label") or not link.get("url"):
                out.append(f"{lwhere}: label and url are required")
                continue
            if link.get("type") not in LINK_TYPES:
                out.append(f"{lwhere}.type must be absolute or smart")
            if "appContext" in link and link.get("type") != "smart":
                out.append(f"{lwhere}: appContext only on smart links (cds-resp-3)")
            if link.get("type") == "absolute" and not str(link["url"]).startswith(("https://", "http://")):
                out.append(f"{lwhere}: an absolute link needs an absolute URL")
    return out
