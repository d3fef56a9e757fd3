"""How every API of the kit reads request bodies and words their errors
(REST_FRAMEWORK in config/settings/base.py points here).

Its own module: DRF reads these settings when a view class is defined, so
they cannot live in a module that defines views."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.views import exception_handler as drf_exception_handler

from jobs.storable import MAX_JSON_DEPTH, unstorable_reason


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"


def _too_large(length: int) -> RequestTooLarge:
    return RequestTooLarge(f"Request body is {length} bytes; the limit is {settings.DATA_UPLOAD_MAX_MEMORY_SIZE}.")


class BoundedJSONParser(JSONParser):
    """Refuses with a 400 what cannot be stored (jobs/storable.py). JSON
    bodies over DATA_UPLOAD_MAX_MEMORY_SIZE get a 413 naming the limit
    before a byte is parsed: DRF reads the stream itself, so Django's own
    limit (applied to request.body and forms) never sees them. Every API of
    the kit parses JSON through this (REST_FRAMEWORK in settings)."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        length = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        if settings.DATA_UPLOAD_MAX_MEMORY_SIZE is not None and length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            raise _too_large(length)
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.") from None
        # What PostgreSQL would refuse with a 500 later (NUL, lone
        # surrogates, 1e400), refused here with a 400 naming the field.
        if found := unstorable_reason(data):
            field, problem = found
            raise ValidationError({field: [f"{field} {problem}."]})
        return data


def exception_handler(exc, context):
    """DRF's handler, plus Django's RequestDataTooBig (a form body over the
    limit) as the same JSON 413 instead of an HTML 400 page."""
    if isinstance(exc, RequestDataTooBig):
        request = context.get("request")
        exc = _too_large(int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0)
    return drf_exception_handler(exc, context)
