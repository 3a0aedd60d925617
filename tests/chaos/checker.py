"""The ledger of a run and its report: what was accepted, what arrived, what is missing.

Every ``sent`` receipt is recorded by sender and body sequence number (a retried frame may get a
receipt with a mid other than the one delivered, so the body, not the receipt's mid, identifies
a message). Every ``message`` frame that reaches a client is recorded with its mid, duplicates
included. The report compares the two.

Order (docs/architecture.md, "Order"): for one sender, mids sort in send order; one router
delivers a sender's messages to a recipient in that order, but several routers or a failure may
reorder arrivals, and clients that need a strict order sort by mid. So the checker counts two
things per sender -> recipient pair: ``mid order`` violations (a later message with a smaller
mid: a broken promise, must be 0) and ``arrival order`` violations (a message arriving after a
later one of the same sender: allowed under faults, reported).

With history on (``SWITCHBOARD_HISTORY``, the default) a uid's other connections get the messages
it sent too: here a client's next connection, whose sync at ``init`` brings what it sent before
the reconnect. No load sends to its own uid, so an arrival from the recipient itself is such an
own copy: owed to nobody, it is left out of the report.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Accepted:
    """A send that got its ``sent`` receipt."""

    sender: str
    seq: int
    receipt_mid: str
    recipients: frozenset[str]


@dataclass(frozen=True, slots=True)
class Arrival:
    """One ``message`` frame as a client received it, duplicates included."""

    recipient: str
    mid: str
    sender: str
    seq: int
    at_s: float
    is_drain: bool


@dataclass
class Ledger:
    accepted: dict[tuple[str, int], Accepted] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    rejected: int = 0
    """Sends refused for good (not ``unavailable``): not accepted, so never owed."""

    def accept(self, accepted: Accepted) -> None:
        self.accepted[(accepted.sender, accepted.seq)] = accepted

    def arrive(self, arrival: Arrival) -> None:
        self.arrivals.append(arrival)

    def missing(self) -> list[tuple[str, int, str]]:
        """(sender, seq, recipient) of every accepted copy that never arrived."""
        seen = {(a.sender, a.seq, a.recipient) for a in self.arrivals}
        return sorted(
            (sent.sender, sent.seq, recipient)
            for sent in self.accepted.values()
            for recipient in sent.recipients
            if (sent.sender, sent.seq, recipient) not in seen
        )


@dataclass(frozen=True, slots=True)
class Report:
    scenario: str
    accepted: int
    """Sends with a ``sent`` receipt."""
    owed: int
    """Copies owed: one per recipient of each accepted send."""
    delivered: int
    """Owed copies that arrived at least once."""
    lost: int
    duplicates: int
    """Arrivals of a mid the recipient had already received."""
    remids: int
    """Copies that arrived under two mids (a retry routed twice): clients cannot drop these."""
    misrouted: int
    """Arrivals at a uid the message was not addressed to."""
    mid_order_violations: int
    arrival_order_violations: int
    drained: int
    """Owed copies that arrived only in the final drain (from the offline store)."""
    recovery_s: float | None
    """From the fault to the first fully served probe round after the repair; None: never."""
    note: str = ""

    @property
    def is_ok(self) -> bool:
        return self.lost == 0 and self.misrouted == 0 and self.mid_order_violations == 0


def report(
    scenario: str, ledger: Ledger, recovery_s: float | None, note: str = ""
) -> Report:
    first_arrival: dict[tuple[str, int, str], Arrival] = {}
    mids_per_copy: dict[tuple[str, int, str], set[str]] = defaultdict(set)
    seen_mids: set[tuple[str, str]] = set()
    duplicates = misrouted = 0
    # Per sender -> recipient: the seqs in arrival order (duplicates dropped), and mid -> seq.
    arrival_seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
    mid_seq: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for arrival in ledger.arrivals:
        if arrival.recipient == arrival.sender:
            continue  # an own copy (see the module's docstring)
        key = (arrival.recipient, arrival.mid)
        if key in seen_mids:
            duplicates += 1
            continue
        seen_mids.add(key)
        copy = (arrival.sender, arrival.seq, arrival.recipient)
        mids_per_copy[copy].add(arrival.mid)
        first_arrival.setdefault(copy, arrival)
        sent = ledger.accepted.get((arrival.sender, arrival.seq))
        if sent is not None and arrival.recipient not in sent.recipients:
            misrouted += 1
        pair = (arrival.sender, arrival.recipient)
        arrival_seqs[pair].append(arrival.seq)
        mid_seq[pair][arrival.mid] = arrival.seq
    owed = sum(len(sent.recipients) for sent in ledger.accepted.values())
    owed_copies = [
        (sent.sender, sent.seq, recipient)
        for sent in ledger.accepted.values()
        for recipient in sent.recipients
    ]
    delivered = sum(1 for copy in owed_copies if copy in first_arrival)
    drained = sum(
        1
        for copy in owed_copies
        if copy in first_arrival and first_arrival[copy].is_drain
    )
    remids = sum(1 for mids in mids_per_copy.values() if len(mids) > 1)
    return Report(
        scenario=scenario,
        accepted=len(ledger.accepted),
        owed=owed,
        delivered=delivered,
        lost=owed - delivered,
        duplicates=duplicates,
        remids=remids,
        misrouted=misrouted,
        mid_order_violations=sum(
            count_late(distinct_by_seq(seq for _, seq in sorted(by_mid.items())))
            for by_mid in mid_seq.values()
        ),
        arrival_order_violations=sum(
            count_late(distinct_by_seq(seqs)) for seqs in arrival_seqs.values()
        ),
        drained=drained,
        recovery_s=recovery_s,
        note=note,
    )


def distinct_by_seq(seqs: Iterable[int]) -> list[int]:
    """The seqs without repeats (a copy under two mids counts once, at its first place)."""
    return list(dict.fromkeys(seqs))


def count_late(seqs: list[int]) -> int:
    """How many seqs come after a greater one (each late message counts once)."""
    late = 0
    highest = -1
    for seq in seqs:
        if seq < highest:
            late += 1
        highest = max(highest, seq)
    return late


COLUMNS = (
    "scenario",
    "accepted",
    "copies owed",
    "delivered",
    "lost",
    "duplicates (same mid)",
    "copies under 2 mids",
    "misrouted",
    "mid-order violations",
    "arrival-order violations",
    "from the offline store at the drain",
    "recovery (s)",
)


def markdown_table(reports: list[Report]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for r in reports:
        recovery = "never" if r.recovery_s is None else f"{r.recovery_s:.1f}"
        name = f"{r.scenario} ({r.note})" if r.note else r.scenario
        cells = (
            name,
            r.accepted,
            r.owed,
            r.delivered,
            r.lost,
            r.duplicates,
            r.remids,
            r.misrouted,
            r.mid_order_violations,
            r.arrival_order_violations,
            r.drained,
            recovery,
        )
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
