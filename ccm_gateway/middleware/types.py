"""ASGI type aliases shared by the stages (Starlette's own, re-exported under short names)."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]
