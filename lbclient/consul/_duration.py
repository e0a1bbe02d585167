"""Go durations for the Consul integration; the parser lives in ``lbclient._duration`` so that
``lbclient.testing.ConsulTestServer`` shares it without needing the ``consul`` extra."""

from lbclient._duration import format_go_duration, parse_go_duration, to_seconds

__all__ = ["format_go_duration", "parse_go_duration", "to_seconds"]
