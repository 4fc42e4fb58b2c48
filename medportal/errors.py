"""One application error hierarchy, rendered in one JSON shape by one handler.

Services raise these; views turn them into messages, the API into
``{"error": {"code": ..., "message": ..., "details": ...}}``.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler

from .db import BUSY_MESSAGE, RETRY_AFTER_S, is_pool_exhausted


class ApplicationError(Exception):
    code = "error"
    http_status = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, *, details: object | None = None):
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(ApplicationError):
    code = "invalid"


class NotAllowed(ApplicationError):
    code = "forbidden"
    http_status = status.HTTP_403_FORBIDDEN


class Conflict(ApplicationError):
    """Someone else changed the object since it was loaded (optimistic lock lost)."""

    code = "conflict"
    http_status = status.HTTP_409_CONFLICT


class InvalidTransition(ApplicationError):
    code = "invalid_transition"
    http_status = status.HTTP_409_CONFLICT


def _body(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


def api_exception_handler(exc, context):
    if is_pool_exhausted(exc):
        return Response(_body("database_busy", str(BUSY_MESSAGE)), status=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, ApplicationError):
        return Response(_body(exc.code, exc.message, exc.details), status=exc.http_status)
    if isinstance(exc, DjangoValidationError):
        details = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        return Response(_body("invalid", "; ".join(exc.messages), details), status=400)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, APIException):
        detail = response.data
        if isinstance(exc.detail, str) or (isinstance(detail, dict) and set(detail) == {"detail"}):
            message = str(exc.detail)
            details = None
        else:
            message = "Invalid input."
            details = detail
        response.data = _body(getattr(exc, "default_code", "error"), message, details)
    elif isinstance(exc, (Http404, PermissionDenied)):
        response.data = _body("not_found" if isinstance(exc, Http404) else "forbidden", str(response.data.get("detail", "")))
    return response
