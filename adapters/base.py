"""What adapters implement and raise: defined beside Event and Action in `bot.transport`."""
from bot.transport import ChannelLimits, DeliveryError, Pending, Transport

__all__ = ["ChannelLimits", "DeliveryError", "Pending", "Transport"]
