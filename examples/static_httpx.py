"""Balance a sync httpx.Client over a fixed list of instances, and survive one going down.

    python examples/static_httpx.py

Starts two real HTTP servers on loopback (lbclient.testing.HTTPBackend) so it runs anywhere;
in your code the addresses are your service's instances.
"""

from __future__ import annotations

from collections import Counter

import httpx

import lbclient
from lbclient.testing import HTTPBackend, free_port


def main() -> None:
    with HTTPBackend("orders-a") as a, HTTPBackend("orders-b") as b:
        down = f"127.0.0.1:{free_port()}"  # an instance that refuses connections
        lb = lbclient.LoadBalancer(
            lbclient.StaticRegistry({"orders": [a.address, b.address, down]}),
            scheduler="round_robin",
        )
        with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
            answered = Counter(
                client.get("http://orders/api/items", params={"page": page}).json()["backend"]
                for page in range(12)
            )
            print("12 GETs answered by:", dict(sorted(answered.items())))
            print("(requests that met the instance that is down were retried on another one)")

            try:
                client.get("http://payments/")
            except lbclient.ServiceNotFound as exc:
                print("unknown service:", exc)

        for row in lb.stats("orders")["instances"]:
            print(
                f"  {row['address']:>16}: {row['picks']} picks, {row['successes']} ok, "
                f"{row['failures']} failed, {row['in_flight']} in flight"
            )
        lb.close()


if __name__ == "__main__":
    main()
