# SPDX-License-Identifier: Apache-2.0
"""A Python client for vtpmd's RPC over RabbitMQ (docs/client.md,
docs/protocol.md).

    import vtpmclient

    with vtpmclient.Client("amqp://guest:guest@127.0.0.1:5672/%2f") as c:
        caps = c.call("compute-1", "get_capabilities", {})
"""

from ._fault import Fault
from .client import Client

__all__ = ["Client", "Fault"]
__version__ = "0.1.0"
