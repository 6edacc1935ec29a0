"""Outbound senders for the outbox, one per provider."""
