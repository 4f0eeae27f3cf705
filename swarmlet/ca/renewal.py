"""When a node should renew its certificate.

Like SwarmKit, each node picks a random moment between 50 % and 80 % of its
certificate's validity, so a cluster whose certificates were all issued at once does
not ask the CA for new ones all at once."""

import random
from datetime import datetime

RENEWAL_WINDOW = (0.5, 0.8)


def renewal_delay(not_before: datetime, not_after: datetime, now: datetime,
                  rng: random.Random = random) -> float:
    """Seconds from `now` until the chosen renewal moment; 0 if it has passed."""
    earliest, latest = RENEWAL_WINDOW
    moment = not_before + (not_after - not_before) * rng.uniform(earliest, latest)
    return max(0.0, (moment - now).total_seconds())
