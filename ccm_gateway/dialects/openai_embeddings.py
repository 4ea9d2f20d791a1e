"""OpenAI ``POST /v1/embeddings``: the request head, and the base64 form of a vector.

The head is validated like a chat head (400 naming the field) so bad requests never reach an
upstream; the raw fields are kept, so pass-through upstreams get the client's bytes with only the
model name changed. ``input`` is decoded because a translating upstream (Gemini) needs the texts.
"""

from __future__ import annotations

import base64
import sys
from array import array

import msgspec
from msgspec import Raw

from ..errors import InvalidRequest
from . import head

FORMATS = ("float", "base64")
# One array-like type per union level is all msgspec allows; homogeneity is checked afterwards.
_INPUT = msgspec.json.Decoder(str | list[str | int | list[int]])
_OPT_STR = msgspec.json.Decoder(str | None)
_INPUT_SHAPES = "a string, an array of strings, an array of token ids or an array of token-id arrays"


class EmbeddingsHead(head.RequestHead):
    """An embeddings request: model, the inputs (texts or token-id lists), output format and size."""

    __slots__ = ("dimensions", "encoding_format", "texts", "tokens")

    def __init__(
        self,
        fields: dict[str, Raw],
        model: str,
        texts: list[str] | None,
        tokens: list[list[int]] | None,
        encoding_format: str,
        dimensions: int | None,
    ) -> None:
        super().__init__(fields, model, False)
        self.texts = texts
        self.tokens = tokens
        self.encoding_format = encoding_format
        self.dimensions = dimensions


def parse_head(body: bytes) -> EmbeddingsHead:
    fields = head.read_fields(body)
    model = head.string(fields, "model")
    texts, tokens = _inputs(head.required(fields, "input"))
    fmt = _encoding_format(fields.get("encoding_format"))
    dimensions = head.integer(fields, "dimensions", optional=True)
    if dimensions is not None and dimensions < 1:
        raise InvalidRequest("dimensions: must be a positive integer", param="dimensions")
    raw_user = fields.get("user")
    if raw_user is not None:
        try:
            _OPT_STR.decode(raw_user)
        except msgspec.ValidationError:
            raise InvalidRequest("user: expected a string", param="user") from None
    return EmbeddingsHead(fields, model, texts, tokens, fmt, dimensions)


def _inputs(raw: Raw) -> tuple[list[str] | None, list[list[int]] | None]:
    """``(texts, None)`` or ``(None, token-id lists)``; mixed or empty arrays are refused."""
    try:
        value = _INPUT.decode(raw)
    except msgspec.ValidationError:
        raise InvalidRequest(f"input: expected {_INPUT_SHAPES}", param="input") from None
    if isinstance(value, str):
        return [value], None
    if not value:
        raise InvalidRequest("input: must not be an empty array", param="input")
    if all(isinstance(v, str) for v in value):
        return value, None  # type: ignore[return-value]
    if all(isinstance(v, int) for v in value):
        return None, [value]  # type: ignore[list-item]
    if all(isinstance(v, list) for v in value):
        if not all(value):
            raise InvalidRequest("input: token-id arrays must not be empty", param="input")
        return None, value  # type: ignore[return-value]
    raise InvalidRequest(f"input: expected {_INPUT_SHAPES}, not a mix of them", param="input")


def _encoding_format(raw: Raw | None) -> str:
    if raw is None:
        return "float"
    try:
        fmt = _OPT_STR.decode(raw)
    except msgspec.ValidationError:
        fmt = ""
    if fmt is None:
        return "float"
    if fmt not in FORMATS:
        raise InvalidRequest('encoding_format: expected "float" or "base64"', param="encoding_format")
    return fmt


def to_base64(values: list[float]) -> str:
    """A vector as OpenAI's base64 form: little-endian float32, which the SDK decodes client-side."""
    packed = array("f", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")
