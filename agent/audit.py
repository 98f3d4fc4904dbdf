"""The audit trail: who changed what, when — append-only and tamper-evident.

Every entry is one row of the ``audit`` table (schema migration 3). Entries form a hash chain:

* ``seq`` is 1 for the first entry and the previous entry's ``seq`` + 1 after that, so a
  deleted entry leaves a gap;
* ``prev_hash`` is the previous entry's ``hash`` (``GENESIS``, 64 zeros, for entry 1);
* ``hash`` is the SHA-256 (lower-case hex) of the UTF-8 bytes of this JSON array::

      [seq, at, actor, action, target, before_sha256, after_sha256, detail, prev_hash]

  serialized with ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` — no spaces,
  non-ASCII kept as is. ``seq`` is a JSON number; every other element is the column's text
  exactly as stored (``detail`` is the stored JSON *string*, not the parsed object), so any
  change to any column, even a whitespace-only one, changes the hash.

A deleted *last* entry leaves no gap, so each append also writes a head pointer,
``settings['audit.head'] = {"seq": N, "hash": "..."}``, in the same transaction; :func:`verify`
compares the end of the chain with it.

Retention (agent/retention.py) may remove the oldest entries (older than ``[retention]
audit_days``). It removes a prefix of the chain only and records where the kept part starts,
``settings['audit.anchor'] = {"seq": N, "hash": "..."}`` (entry N's hash), plus an
``audit.prune`` entry naming N; :func:`verify` then checks entry N+1 against the anchor instead
of the genesis value, so every kept entry is still proven.

What is (and is not) stored. ``before`` and ``after`` are reduced to the SHA-256 of their
canonical JSON (:func:`digest`): the audit table can prove what a record looked like without
holding a second copy of it, so it never becomes another place patient data lives. ``detail``
is stored in clear and must hold only ids, counts, roles and reasons — never names, MRNs,
dates of birth or any other patient data. It is limited to a flat dict of scalars (or lists of
scalars) so that nobody drops a whole record into it by accident.

Limits. The chain is not keyed: someone who can write the (encrypted) store *and* recomputes
every later hash and the head pointer can rewrite history undetected. The chain exists to make
casual or partial tampering — an edited row, a deleted row, rows shuffled, a truncated tail —
visible and precisely located, not to defeat an attacker holding the store key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from agent.store import Store, now

GENESIS = "0" * 64
HEAD_KEY = "audit.head"
ANCHOR_KEY = "audit.anchor"  # where the chain starts after retention removed its oldest entries

_COLUMNS = ("id", "seq", "at", "actor", "action", "target", "before_sha256", "after_sha256", "detail",
            "prev_hash", "hash")


# -- hashing -------------------------------------------------------------------------------------
def _canonical_default(obj: Any) -> Any:
    """JSON for the few non-JSON types a before/after state may hold, deterministically."""
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    # anything else could serialize differently from run to run (reprs with addresses)
    raise TypeError(f"cannot hash a {type(obj).__name__} for the audit trail; pass plain data")


def digest(obj: object) -> str:
    """SHA-256 of ``obj`` as canonical JSON (sorted keys, no spaces); ``""`` for ``None``.

    ``None`` means "no such state" (e.g. nothing existed *before* a create). Callers and
    reviewers can recompute this from a record's current state to check an entry's
    ``after_sha256``.
    """
    if obj is None:
        return ""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_canonical_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def entry_hash(seq: Any, at: Any, actor: Any, action: Any, target: Any, before_sha256: Any,
               after_sha256: Any, detail: Any, prev_hash: Any) -> str:
    """The chain hash of one entry, over the documented serialization (see module docstring).

    Takes the values as stored, untyped, so :func:`verify` can hash a tampered row (say, a
    ``seq`` turned into text) without crashing; such a row simply no longer matches.
    """
    payload = json.dumps([seq, at, actor, action, target, before_sha256, after_sha256, detail, prev_hash],
                         separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _detail_json(detail: dict[str, Any] | None) -> str:
    """Canonical JSON for ``detail``, refusing nested records (the likely way PHI sneaks in)."""
    detail = detail or {}
    if not isinstance(detail, dict):
        raise TypeError("audit detail must be a dict of ids, counts and reasons")
    scalar = (str, int, float, bool, type(None))
    for key, value in detail.items():
        if not isinstance(key, str):
            raise TypeError("audit detail keys must be strings")
        ok = isinstance(value, scalar) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, scalar) for v in value))
        if not ok:
            raise TypeError(f"audit detail {key!r} must be a scalar or a list of scalars (ids, counts, "
                            "reasons); hash whole records via before=/after= instead")
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- appending -----------------------------------------------------------------------------------
def _parse_head(raw: str) -> tuple[int, str] | None:
    """(seq, hash) from the head pointer's JSON; None when absent or unreadable."""
    if not raw:
        return None
    try:
        d = json.loads(raw)
        return int(d["seq"]), str(d["hash"])
    except (ValueError, KeyError, TypeError):
        return None


def record(store: Store, *, actor: str, action: str, target: str = "", before: object = None,
           after: object = None, detail: dict[str, Any] | None = None) -> int:
    """Append one entry and return its ``seq``.

    Call it INSIDE the transaction that makes the change (``with store.tx(): ...; record(...)``):
    then the change and its audit entry commit together or not at all, and the transaction's
    write lock (``BEGIN IMMEDIATE``) serializes appends from concurrent connections, so two
    writers can never take the same ``seq``. Called outside a transaction it opens its own —
    acceptable for events that change nothing else, but an entry about a change committed
    separately could then be lost (or recorded for a change that rolled back).

    ``before``/``after`` are stored only as :func:`digest` hashes. ``detail`` is stored in clear:
    put ids, counts, roles and reasons there, NEVER patient data (names, MRNs, birth dates,
    addresses, free text copied from a document).
    """
    if not store.conn.in_transaction:
        with store.tx():
            return record(store, actor=actor, action=action, target=target, before=before, after=after,
                          detail=detail)
    conn = store.conn
    detail_text = _detail_json(detail)
    before_sha, after_sha = digest(before), digest(after)
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    head = _parse_head(store.setting(HEAD_KEY))
    # Chain from the head pointer, not from the last row: if the last row was deleted, a new
    # entry must not reuse its seq and so paper over the deletion.
    if head is not None and (last is None or head[0] >= int(last[0])):
        prev_seq, prev_hash = head
    elif last is not None:
        prev_seq, prev_hash = int(last[0]), str(last[1])
    else:
        prev_seq, prev_hash = 0, GENESIS
    seq, at = prev_seq + 1, now()
    h = entry_hash(seq, at, actor, action, target, before_sha, after_sha, detail_text, prev_hash)
    conn.execute(
        "INSERT INTO audit (seq, at, actor, action, target, before_sha256, after_sha256, detail, prev_hash, hash) "
        "VALUES (?,?,?,?,?,?,?,?,?,?)",
        (seq, at, actor, action, target, before_sha, after_sha, detail_text, prev_hash, h))
    store.set_setting(HEAD_KEY, json.dumps({"seq": seq, "hash": h}, separators=(",", ":")))
    return seq


# -- listing -------------------------------------------------------------------------------------
def entries(store: Store, limit: int = 100, offset: int = 0, action: str | None = None) -> list[dict[str, Any]]:
    """Entries newest first. They hold actors, actions, ids and hashes only — no patient data."""
    sql = f"SELECT {', '.join(_COLUMNS)} FROM audit"
    args: list[Any] = []
    if action:
        sql += " WHERE action = ?"
        args.append(action)
    sql += " ORDER BY seq DESC LIMIT ? OFFSET ?"
    args += [limit, offset]
    out = []
    for row in store.conn.execute(sql, args):
        d = dict(zip(_COLUMNS, row, strict=True))
        try:
            d["detail"] = json.loads(d["detail"])
        except (TypeError, ValueError):
            pass  # a tampered detail is shown as stored; verify() reports it
        out.append(d)
    return out


def count(store: Store, action: str | None = None) -> int:
    if action:
        return int(store.conn.execute("SELECT count(*) FROM audit WHERE action = ?", (action,)).fetchone()[0])
    return int(store.conn.execute("SELECT count(*) FROM audit").fetchone()[0])


# -- verifying -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One thing wrong with the trail. ``seq`` is the entry it is about (the first one, for a range)."""

    seq: int
    kind: str  # edited | deleted | reordered | chain
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "message": self.message}


@dataclass
class _Row:
    id: int
    seq: Any
    values: tuple[Any, ...]  # (seq, at, actor, action, target, before, after, detail, prev_hash)
    hash: Any

    @property
    def prev_hash(self) -> Any:
        return self.values[-1]

    def computed(self, seq: Any = None) -> str:
        vals = self.values if seq is None else (seq, *self.values[1:])
        return entry_hash(*vals)


def _span(first: int, last: int) -> str:
    return f"entry {first}" if first == last else f"entries {first} to {last}"


def _names(seqs: list[int]) -> str:
    seqs = sorted(seqs)
    if len(seqs) == 1:
        return f"entry {seqs[0]}"
    return "entries " + ", ".join(map(str, seqs[:-1])) + f" and {seqs[-1]}"


def _increasing_run(seqs: list[int]) -> set[int]:
    """The longest increasing subsequence of ``seqs`` (as a set): the rows still in order."""
    tails: list[int] = []  # tails[k] = index in seqs ending the best run of length k+1
    back: list[int] = [-1] * len(seqs)
    for i, s in enumerate(seqs):
        lo, hi = 0, len(tails)
        while lo < hi:
            mid = (lo + hi) // 2
            if seqs[tails[mid]] < s:
                lo = mid + 1
            else:
                hi = mid
        back[i] = tails[lo - 1] if lo else -1
        if lo == len(tails):
            tails.append(i)
        else:
            tails[lo] = i
    keep: set[int] = set()
    i = tails[-1] if tails else -1
    while i >= 0:
        keep.add(seqs[i])
        i = back[i]
    return keep


def _storage_order(rows: list[_Row]) -> list[Problem]:
    """Entries stored (by id) out of their seq order, each named with the entry it jumped.

    The fewest rows that must move to restore order are those outside the longest increasing
    run; each is reported next to the neighbour it is out of order with.
    """
    seqs = [row.seq for row in rows]
    keep = _increasing_run(seqs)
    out = []
    for i, s in enumerate(seqs):
        if s in keep:
            continue
        if i + 1 < len(seqs) and seqs[i + 1] < s:
            other, where = seqs[i + 1], "before"
        elif i > 0 and seqs[i - 1] > s:
            other, where = seqs[i - 1], "after"
        else:
            out.append(Problem(s, "reordered", f"entry {s} is out of order: it is stored away from its place"))
            continue
        a, b = sorted((s, other))
        out.append(Problem(a, "reordered", f"entries {a} and {b} are out of order: entry {s} is stored {where} "
                                           f"entry {other}"))
    return out


def _moved(rows: list[_Row], self_ok: dict[int, bool], start: tuple[str, int] = (GENESIS, 0)) -> dict[int, int]:
    """{row seq: seq of the entry whose content it really holds} for rows whose content was moved
    under another number. Such a row fails its own hash but hashes correctly under the seq its
    prev_hash link points to; links are followed from the intact rows outwards, so a swapped
    pair is resolved one after the other in linear time.
    """
    waiting: dict[Any, list[_Row]] = {}
    for row in rows:
        if not self_ok[row.seq]:
            waiting.setdefault(row.prev_hash, []).append(row)
    queue: list[tuple[Any, int]] = [start] + [(row.hash, row.seq) for row in rows if self_ok[row.seq]]
    moved: dict[int, int] = {}
    while queue and waiting:
        h, s = queue.pop()
        for row in waiting.pop(h, []):
            if row.seq != s + 1 and row.computed(s + 1) == row.hash:
                moved[row.seq] = s + 1
                queue.append((row.hash, s + 1))
    return moved


def verify(store: Store) -> list[Problem]:
    """Check the whole chain; ``[]`` means intact. Problems come sorted by entry, so the first
    one is where tampering starts; the rest are still listed (one tamper rarely comes alone).

    Reads rows and head pointer in one read transaction so an append committing meanwhile
    cannot look like a deleted tail.
    """
    conn = store.conn
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        raw = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM audit ORDER BY id").fetchall()
        head_text = store.setting(HEAD_KEY)
        anchor = _parse_head(store.setting(ANCHOR_KEY))
    finally:
        if own:
            conn.execute("ROLLBACK")
    head = _parse_head(head_text)
    base_seq, base_hash = anchor if anchor is not None else (0, GENESIS)

    problems: list[Problem] = []
    rows: list[_Row] = []
    for r in raw:
        row = _Row(id=int(r[0]), seq=r[1], values=tuple(r[1:10]), hash=r[10])
        if isinstance(row.seq, int) and not isinstance(row.seq, bool) and row.seq >= 1:
            if row.seq > base_seq:  # entries up to the anchor were pruned; one left behind is not checked
                rows.append(row)
        else:
            problems.append(Problem(0, "edited", f"the audit row with id {row.id} was edited: its entry number "
                                                 f"{row.seq!r} is not a valid sequence number"))
    if head_text and head is None:
        problems.append(Problem(0, "chain", f"the head pointer (settings '{HEAD_KEY}') is unreadable: "
                                            "it was edited"))

    by_seq = sorted(rows, key=lambda x: x.seq)
    self_ok = {row.seq: row.computed() == row.hash for row in rows}

    # 1. Storage order: rows are inserted in seq order, so ids must rise with seq. Rows swapped
    #    wholesale (seq included) keep a valid chain in seq order and show only here.
    problems += _storage_order(rows)

    # 2. Contents moved between rows with the seq numbers left in place.
    moved = _moved(rows, self_ok, (base_hash, base_seq))
    if moved:
        involved = sorted(set(moved) | set(moved.values()))
        problems.append(Problem(involved[0], "reordered",
                                f"{_names(involved)} are out of order: their contents were swapped (a row holds "
                                "another entry's content under its own number)"))

    # 3. Walk the chain in seq order: gaps (deleted entries), edited rows, broken links.
    for i, row in enumerate(by_seq):
        prev = by_seq[i - 1] if i else None
        nxt = by_seq[i + 1] if i + 1 < len(by_seq) else None
        if prev is None and row.seq > base_seq + 1:
            problems.append(Problem(base_seq + 1, "deleted", f"{_span(base_seq + 1, row.seq - 1)} "
                                    f"{'is' if row.seq == base_seq + 2 else 'are'} missing (deleted): "
                                    f"the trail starts at entry {row.seq}"))
        elif prev is not None and row.seq > prev.seq + 1:
            problems.append(Problem(prev.seq + 1, "deleted",
                                    f"{_span(prev.seq + 1, row.seq - 1)} "
                                    f"{'is' if row.seq == prev.seq + 2 else 'are'} missing (deleted): "
                                    f"entry {row.seq} follows entry {prev.seq}"))
        if row.seq in moved:
            continue
        # what the next entry (or, for the last one, the head pointer) says this entry's hash is
        if nxt is not None and nxt.seq == row.seq + 1 and self_ok[nxt.seq] and nxt.seq not in moved:
            link: str | None = nxt.prev_hash
        elif nxt is None and head is not None and head[0] == row.seq:
            link = head[1]
        else:
            link = None
        if not self_ok[row.seq]:
            if link is not None and link == row.computed() and link != row.hash:
                linker = f"entry {row.seq + 1}" if nxt is not None else "the head pointer"
                problems.append(Problem(row.seq, "edited",
                                        f"entry {row.seq} was edited: its stored hash was changed (its content "
                                        f"still matches the hash {linker} links to)"))
            else:
                problems.append(Problem(row.seq, "edited", f"entry {row.seq} was edited: its content no longer "
                                                           "matches its hash"))
            continue
        # a self-consistent entry: does it link to its predecessor?
        if row.seq == base_seq + 1:
            if base_seq and row.prev_hash != base_hash:
                problems.append(Problem(row.seq, "chain", f"entry {row.seq} does not continue the chain from "
                                                          f"where retention cut it (entry {base_seq})"))
            elif not base_seq and row.prev_hash != GENESIS:
                problems.append(Problem(1, "chain", "entry 1 does not start the chain: its prev_hash is not "
                                                    "the genesis value (it was rewritten with a recomputed hash)"))
        elif prev is not None and prev.seq == row.seq - 1 and prev.seq not in moved:
            if self_ok[prev.seq]:
                if row.prev_hash != prev.hash:
                    problems.append(Problem(row.seq, "chain",
                                            f"the chain breaks between entries {prev.seq} and {row.seq}: entry "
                                            f"{row.seq} does not link to entry {prev.seq}'s hash (one of them was "
                                            "rewritten with a recomputed hash)"))
            elif row.prev_hash not in (prev.hash, prev.computed()):
                problems.append(Problem(row.seq, "chain",
                                        f"the chain breaks between entries {prev.seq} and {row.seq}: entry "
                                        f"{row.seq} does not link to entry {prev.seq}"))

    # 4. The tail, against the head pointer written with every append.
    last = by_seq[-1] if by_seq else None
    last_seq = last.seq if last else 0
    if head is None and not head_text and rows:
        problems.append(Problem(last_seq, "chain", f"the head pointer (settings '{HEAD_KEY}') is missing, so a "
                                                   "deleted tail could not be detected: it was removed"))
    elif head is not None:
        hseq, hhash = head
        if hseq > last_seq:
            n = hseq - last_seq
            if not rows:
                msg = f"all {n} entries were deleted: the trail is empty but entry {hseq} was recorded"
            elif n == 1:
                msg = f"the last entry (entry {hseq}) was deleted: the trail ends at entry {last_seq}"
            else:
                msg = (f"the last {n} entries ({_span(last_seq + 1, hseq)}) were deleted: the trail ends at "
                       f"entry {last_seq}")
            problems.append(Problem(last_seq + 1, "deleted", msg))
        elif hseq < last_seq:
            problems.append(Problem(hseq + 1, "chain",
                                    f"{_span(hseq + 1, last_seq)} {'was' if hseq + 1 == last_seq else 'were'} added "
                                    f"outside ChargeBridge: the head pointer says the trail ends at entry {hseq}"))
        elif last is not None and self_ok[last.seq] and last.seq not in moved and hhash != last.hash:
            problems.append(Problem(last.seq, "chain",
                                    f"entry {last.seq} does not match the head pointer: it was rewritten with a "
                                    "recomputed hash (or the head pointer was edited)"))

    kinds = {"deleted": 0, "reordered": 1, "edited": 2, "chain": 3}
    problems.sort(key=lambda p: (p.seq, kinds.get(p.kind, 9)))
    return problems
