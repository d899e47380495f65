"""REST API of notes: add a note to a patient's record (its extraction is queued with it)."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError, PermissionDenied, ValidationError
from rest_framework.parsers import BaseParser, FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from patients.api import patient_for_api
from patients.selectors import is_clinician

from .note_input import NoteInputError, note_text_clean, note_text_from_bytes
from .services import note_create, note_max_bytes


class PlainTextParser(BaseParser):
    """``text/plain`` (or RTF) body: kept as bytes, decoded by ``nlp.note_input``'s rule."""

    media_type = "text/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = note_max_bytes()
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise ParseError(f"The note is larger than {limit:,} bytes.")
        return {"_bytes": bytes(data)}


class NoteInputSerializer(serializers.Serializer[Any]):
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                 help_text="The note (UTF-8). Give text or file.")
    file = serializers.FileField(required=False, help_text="A plain-text (UTF-8, UTF-16 with BOM) or RTF file.")
    title = serializers.CharField(required=False, allow_blank=True, max_length=200)
    written_at = serializers.DateTimeField(required=False, help_text="When the note was written (default: now).")


class NoteOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    patient = serializers.UUIDField()
    title = serializers.CharField()
    written_at = serializers.DateTimeField()
    characters = serializers.IntegerField()
    job = serializers.DictField()
    url = serializers.CharField()


def note_text_from_request(*, text: str | None, upload: Any, raw: bytes | None) -> str:
    """The note's text from one of: a body of bytes, an uploaded file, or a text field; the
    rule of ``nlp.note_input`` for each. NoteInputError when it is wrong or missing."""
    limit = note_max_bytes()
    given = [x for x in (raw, upload, text) if x is not None]
    if len(given) != 1:
        raise NoteInputError("Send the note once: as text or as a file, not both." if given
                             else "Send the note as text or as a file.")
    if raw is not None:
        return note_text_from_bytes(raw, max_bytes=limit)
    if upload is not None:
        if upload.size is not None and upload.size > limit:
            raise NoteInputError(f"The file is {upload.size:,} bytes; the limit is {limit:,} bytes.")
        return note_text_from_bytes(upload.read(limit + 1), max_bytes=limit)
    return note_text_clean(str(text), max_bytes=limit)


def may_add_notes(user: Any) -> bool:
    return is_clinician(user, or_perm="patients.add_clinicalnote")


class PatientNoteCreateApi(APIView):
    """POST /api/patients/{id}/notes/: a typed note as JSON (``text``), a file (multipart
    ``file``), or the body itself (``text/plain``, ``text/rtf``). 201 with the note's id and its
    queued extraction job; 400 naming what is wrong with the note (never quoting it)."""

    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser, MultiPartParser, FormParser, PlainTextParser]

    @extend_schema(
        request={"application/json": NoteInputSerializer, "multipart/form-data": NoteInputSerializer,
                 "text/plain": str},
        responses={201: NoteOutputSerializer, 400: dict, 404: dict},
        examples=[OpenApiExample("Typed note", value={"text": "Assessment: HTN. Plan: lisinopril 10 mg daily.",
                                                      "title": "Clinic note"}, request_only=True)],
    )
    def post(self, request: Request, external_id: uuid.UUID) -> Response:
        if not may_add_notes(request.user):
            raise PermissionDenied("You may not add notes.")
        patient = patient_for_api(request, external_id)
        raw: bytes | None = None
        fields: Any = request.data
        payload: Any
        if isinstance(fields, dict) and "_bytes" in fields:  # PlainTextParser
            raw, payload = fields["_bytes"], {}
        elif hasattr(fields, "getlist"):  # multipart or form: one value per field
            payload = {key: fields.get(key) for key in fields}
        else:
            payload = fields
        serializer = NoteInputSerializer(data=payload)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            text = note_text_from_request(text=data.get("text"), upload=data.get("file"), raw=raw)
        except NoteInputError as exc:
            raise ValidationError({"note": [str(exc)]}) from None
        with transaction.atomic():
            note, job = note_create(user=request.user, patient=patient, text=text, title=data.get("title", ""),
                                    written_at=data.get("written_at"), request=request)
        body = {
            "id": note.external_id, "patient": patient.external_id, "title": note.display,
            "written_at": note.written_at, "characters": len(note.text),
            "job": {"kind": job.kind, "status": job.status},
            "url": reverse("note-detail", args=[patient.external_id, note.external_id]),
        }
        return Response(NoteOutputSerializer(body).data, status=status.HTTP_201_CREATED)
