# SPDX-License-Identifier: Apache-2.0
"""The one exception of the client: a fault, from a worker's reply or made
by the client itself (docs/protocol.md, "Fault codes"; docs/client.md)."""

# The wire's fault codes (include/vtpm/error.h) and whether each one is
# retryable, as vtpmd sends them.
CODES = {
    "BadRequest": False,
    "UnsupportedVersion": False,
    "UnknownMethod": False,
    "Expired": False,
    "InvalidTPMConfig": False,
    "FlavorImageConflict": False,
    "TPMUnsupported": False,
    "SecretRequired": False,
    "InstanceNotFound": False,
    "InstanceConflict": True,
    "StateNotFound": False,
    "StateIntegrity": False,
    "StateTransferFailed": True,
    "HypervisorError": True,
    "Busy": True,
    "Internal": False,
    "SecretInvalid": False,
    "UnsupportedOperation": False,
}

# Made by the client only, never on the wire: no reply arrived in time
# (vtpmctl call's exit 3).  Retryable: the same request sent again with the
# same message_id is answered by the worker's reply cache, or joins the
# copy still running, instead of running twice.
TIMEOUT = "Timeout"


class Fault(Exception):
    """A call that did not succeed.

    code       a fault code of docs/protocol.md ("BadRequest", ...), or
               "Timeout" (no reply within the call's timeout; client only).
               A code this client does not know (from a newer worker) is
               "Internal", the name received in details["received_code"].
    message    text for people; do not parse it.
    retryable  True if the same request, sent again unchanged (same
               message_id), may succeed later.
    details    a dict: "source" ("worker": a worker's reply; "client": made
               here, e.g. the broker cannot be reached, a bad argument, a
               timeout), and where known "host", "method", "message_id",
               "broker" (the node, without credentials), "timeout_s",
               "attempts" (call_with_retry); any other keys of the reply's
               fault map are kept too.
    """

    def __init__(self, code, message, retryable=None, details=None):
        super().__init__(code, message)
        self.code = code
        self.message = message
        if retryable is None:
            retryable = True if code == TIMEOUT else CODES.get(code, False)
        self.retryable = bool(retryable)
        self.details = dict(details or {})

    def prefix(self, text):
        """Put "text: " before the message (where it happened)."""
        self.message = "%s: %s" % (text, self.message)
        self.args = (self.code, self.message)
        return self

    def __str__(self):
        return "%s: %s" % (self.code, self.message)

    def __repr__(self):
        return "Fault(%r, %r, retryable=%r, details=%r)" % (self.code, self.message,
                                                            self.retryable, self.details)
