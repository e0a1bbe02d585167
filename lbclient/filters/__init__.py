"""The supplier chain between the registry's list and the scheduler."""

from lbclient.filters._base import Filter, FilterFactory

__all__ = ["Filter", "FilterFactory"]
