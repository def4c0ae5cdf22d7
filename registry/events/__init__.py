"""Events (webhooks): what changed, written to an outbox in the index with the change, and delivered
to each configured endpoint in Distribution's notification format, at least once."""

from registry.events.delivery import Delivery, Webhooks
from registry.events.outbox import Outbox
from registry.events.records import ENVELOPE_MEDIA_TYPE, Caller, Target

__all__ = ["ENVELOPE_MEDIA_TYPE", "Caller", "Delivery", "Outbox", "Target", "Webhooks"]
