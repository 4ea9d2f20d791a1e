"""The few request fields the gateway reads on the hot path, and the model-name rewrite.

The body is decoded once into ``{field: raw JSON bytes}``: msgspec scans it without building the
nested messages, the fields we need are decoded from their small raw slices, and the upstream body
is the same raw slices re-joined with a new model name — no decode/re-encode of the conversation.
"""

from __future__ import annotations

import msgspec
from msgspec import Raw

from ..errors import InvalidRequest

_FIELDS = msgspec.json.Decoder(dict[str, Raw])
_STR = msgspec.json.Decoder(str)
_BOOL = msgspec.json.Decoder(bool)
_INT = msgspec.json.Decoder(int)
_encode = msgspec.json.encode
_KINDS = {ord("{"): "an object", ord("["): "an array", ord('"'): "a string", ord("t"): "a boolean",
          ord("f"): "a boolean", ord("n"): "null"}


class RequestHead:
    """What the gateway needs from a chat request: model, stream flag, and the raw fields."""

    __slots__ = ("fields", "model", "stream")

    def __init__(self, fields: dict[str, Raw], model: str, stream: bool) -> None:
        self.fields = fields
        self.model = model
        self.stream = stream

    def body_for(self, model: str, original: bytes, replace: dict[str, Raw] | None = None) -> bytes:
        """The request bytes with the model name (and the ``replace`` fields, raw JSON) replaced; the
        original bytes when nothing changes."""
        if model == self.model and not replace:
            return original
        fields = dict(self.fields)
        fields["model"] = Raw(_encode(model))
        if replace:
            fields.update(replace)
        return _encode(fields)


def read_fields(body: bytes) -> dict[str, Raw]:
    if not body:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        return _FIELDS.decode(body)
    except msgspec.ValidationError:
        raise InvalidRequest("request body must be a JSON object") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:  # msgspec's own bound (the request guard's tighter one may not have run yet)
        raise InvalidRequest("request body nests too deeply") from None


def _first(raw: Raw) -> int:
    """The first byte of a raw JSON value (its type), without copying the value."""
    return memoryview(raw)[0] if len(raw) else 0


def _is_null(raw: Raw | None) -> bool:
    return raw is None or (len(raw) == 4 and memoryview(raw) == b"null")


def _kind(raw: Raw) -> str:
    return _KINDS.get(_first(raw), "a number") if len(raw) else "nothing"


def _wrong(name: str, expected: str, raw: Raw) -> InvalidRequest:
    return InvalidRequest(f"{name}: expected {expected}, got {_kind(raw)}", param=name)


def required(fields: dict[str, Raw], name: str) -> Raw:
    raw = fields.get(name)
    if raw is None:
        raise InvalidRequest(f"{name}: field required", param=name)
    return raw


def string(fields: dict[str, Raw], name: str) -> str:
    raw = required(fields, name)
    try:
        value = _STR.decode(raw)
    except msgspec.ValidationError:
        raise _wrong(name, "a string", raw) from None
    if not value:
        raise InvalidRequest(f"{name}: must not be empty", param=name)
    return value


def flag(fields: dict[str, Raw], name: str) -> bool:
    raw = fields.get(name)
    if _is_null(raw):
        return False
    try:
        return _BOOL.decode(raw)
    except msgspec.ValidationError:
        raise _wrong(name, "a boolean", raw) from None


def integer(fields: dict[str, Raw], name: str, *, optional: bool = False) -> int | None:
    raw = fields.get(name)
    if raw is None or (optional and _is_null(raw)):
        if optional:
            return None
        raise InvalidRequest(f"{name}: field required", param=name)
    try:
        return _INT.decode(raw)
    except msgspec.ValidationError:
        raise _wrong(name, "an integer", raw) from None


def array(fields: dict[str, Raw], name: str, *, optional: bool = False) -> None:
    raw = fields.get(name)
    if raw is None:
        if optional:
            return
        raise InvalidRequest(f"{name}: field required", param=name)
    if _first(raw) != ord("["):
        raise _wrong(name, "an array", raw)


def obj(fields: dict[str, Raw], name: str) -> None:
    raw = fields.get(name)
    if not _is_null(raw) and _first(raw) != ord("{"):
        raise _wrong(name, "an object", raw)
