"""The marker for message ids named in one place and looked up in another."""

from __future__ import annotations


def N_(message_id: str) -> str:
    """Marks a message id looked up later (an error's `message_id`), so that extraction finds it."""
    return message_id


def Np_(message_id: str) -> str:
    """Marks a message id with plural forms, looked up later with `Texts.plural`."""
    return message_id
