"""Secret values and where they come from.

Config strings such as ``"env:OPENAI_API_KEY"`` or ``"file:/run/secrets/key"`` are references; they
are resolved once, at load, into :class:`Secret` objects whose ``repr``/``str`` never show the value.
A trailing ``?`` (``"env:OPENAI_API_KEY?"``) makes a reference optional: when it cannot be resolved
the Secret is *absent* (``bool(secret)`` is False), which is how the default config lights providers
up only when their keys exist.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

__all__ = [
    "MissingSecret",
    "Secret",
    "SecretSource",
    "register_source",
    "resolve_reference",
]


class MissingSecret(ValueError):
    """A secret reference that names something that does not exist."""


class Secret:
    """A credential. Shows ``Secret('env:NAME')`` (its source, never its value) when printed."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str | None, source: str = "inline") -> None:
        self._value = value
        self.source = source

    def __bool__(self) -> bool:
        return self._value is not None

    def reveal(self) -> str:
        """The plain value; call only where it leaves the process for its rightful destination."""
        if self._value is None:
            raise MissingSecret(f"{self.source} was not set when the config was loaded")
        return self._value

    def fingerprint(self) -> str:
        """A short, non-reversible tag that lets operators tell two keys apart."""
        return hashlib.sha256(self.reveal().encode()).hexdigest()[:8] if self else "absent"

    def __repr__(self) -> str:
        return f"Secret({self.source!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


class SecretSource(Protocol):
    """Resolves the part after ``scheme:`` into a value, or raises :class:`MissingSecret`."""

    def __call__(self, name: str, env: Mapping[str, str]) -> str: ...


def _from_env(name: str, env: Mapping[str, str]) -> str:
    if name not in env or env[name] == "":
        raise MissingSecret(f"environment variable {name} is not set")
    return env[name]


def _from_file(name: str, env: Mapping[str, str]) -> str:
    path = Path(name).expanduser()
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise MissingSecret(f"secret file {path} does not exist") from None
    except OSError as exc:
        raise MissingSecret(f"secret file {path} cannot be read ({exc.strerror})") from None


def _from_aws_secrets_manager(name: str, env: Mapping[str, str]) -> str:
    """``aws-sm:NAME`` or ``aws-sm:NAME#json_key`` (needs the ``aws`` extra: boto3)."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise MissingSecret("aws-sm: references need boto3 (pip install 'ccm_gateway[aws]')") from None
    secret_id, _, json_key = name.partition("#")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    try:
        client = boto3.client("secretsmanager", region_name=region)
        value = client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise MissingSecret(f"AWS secret {secret_id!r} cannot be read ({code})") from None
    except BotoCoreError as exc:
        raise MissingSecret(f"AWS secret {secret_id!r} cannot be read ({type(exc).__name__})") from None
    text = value.get("SecretString")
    if text is None:
        raise MissingSecret(f"AWS secret {secret_id!r} has no string value")
    if not json_key:
        return text
    try:
        return str(json.loads(text)[json_key])
    except (ValueError, KeyError, TypeError):
        raise MissingSecret(f"AWS secret {secret_id!r} has no JSON key {json_key!r}") from None


_SOURCES: dict[str, SecretSource] = {
    "env": _from_env,
    "file": _from_file,
    "aws-sm": _from_aws_secrets_manager,
}


def register_source(scheme: str, source: SecretSource) -> None:
    """Teach the loader a new ``scheme:NAME`` reference (e.g. a vault client)."""
    _SOURCES[scheme] = source


def resolve_reference(text: str, env: Mapping[str, str]) -> Secret:
    """Turn a config string into a Secret; an absent one when an optional (``?``) reference is missing.

    A string whose prefix is not a registered scheme is an inline value (fine for tests, not for
    production) and is kept as is.
    """
    optional = text.endswith("?")
    scheme, sep, name = text.partition(":")
    source = _SOURCES.get(scheme) if sep else None
    if source is None:
        return Secret(text, "inline")
    if optional:
        name = name[:-1]
    ref = f"{scheme}:{name}"
    try:
        return Secret(source(name, env), ref)
    except MissingSecret:
        if optional:
            return Secret(None, ref)
        raise
