"""Dialect → the module that owns its wire types (request head, error shapes, usage)."""

from types import ModuleType

from . import Dialect, anthropic_messages, openai_chat

WIRE: dict[Dialect, ModuleType] = {
    Dialect.OPENAI_CHAT: openai_chat,
    Dialect.ANTHROPIC_MESSAGES: anthropic_messages,
}
