"""The fixes secure aggregation's errors name: what a party can do about a message it refused.

Every step refuses what it cannot trust (a malformed message, one out of order, an impossible
request) with a :class:`~fedsilo.errors.SecAggError`; the silo that sent it is then left out of
the round, or the round is abandoned before anything is unmasked.
"""

SAME_VERSION = "run the same fedsilo version on the server and on every silo (the message is malformed)"
STEP_ORDER = "the protocol's steps run in order: advertise, share_keys, masked_input, unmask"
REFUSED = "the server's request breaks the protocol; this silo leaves the round (nothing is revealed)"
