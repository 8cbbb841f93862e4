"""The judge of "nothing lost": compares every record ever created with the back office and the servers."""

from __future__ import annotations

from pathlib import Path

from .state import connect


def _ranges(seqs: list[int], limit: int = 5) -> str:
    """'1-3, 7, 9-12' (the first few runs) for violation messages."""
    runs: list[str] = []
    start = prev = None
    for s in sorted(seqs):
        if prev is not None and s == prev + 1:
            prev = s
            continue
        if start is not None:
            runs.append(f"{start}-{prev}" if prev != start else f"{start}")
        start = prev = s
    if start is not None:
        runs.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(runs[:limit]) + (", ..." if len(runs) > limit else "")


def verify(db_path: Path, complete: bool = False) -> dict:
    """{"ok", "servers": {NAME: counts}, "violations": [text]}.

    Per record: in the back office exactly once, or still held by its server (both at once is fine), never
    neither, never twice in the back office; the back office holds each server's records in the server's order.
    complete: also every record in the back office and purged from its server.
    """
    db = connect(db_path, readonly=True)
    try:
        # One read transaction: every query below sees the same snapshot, even while the lab keeps working
        # (otherwise a record created, uploaded and acknowledged between two queries could look "unknown").
        db.execute("BEGIN")
        servers = db.execute("SELECT id, name, host_id FROM servers ORDER BY id").fetchall()
        report: dict = {"ok": True, "servers": {}, "violations": []}
        by_host = {s["host_id"]: s for s in servers}
        for (host,) in db.execute("SELECT DISTINCT host_id FROM bo_records"):
            if host not in by_host:
                report["violations"].append(f"back office holds records of unknown host id {host}")
        for s in servers:
            held: dict[int, bool] = {seq: not purged for seq, purged in db.execute(
                "SELECT seq, purged FROM records WHERE server_id=?", (s["id"],))}
            bo_seqs = [seq for (seq,) in db.execute("SELECT seq FROM bo_records WHERE host_id=? ORDER BY id",
                                                    (s["host_id"],))]
            in_bo: dict[int, int] = {}
            for seq in bo_seqs:
                in_bo[seq] = in_bo.get(seq, 0) + 1
            missing = [seq for seq, h in held.items() if not h and seq not in in_bo]
            duplicated = [seq for seq, n in in_bo.items() if n > 1]
            unknown = [seq for seq in in_bo if seq not in held]
            out_of_order = [b for a, b in zip(bo_seqs, bo_seqs[1:], strict=False) if b <= a]
            counts = {"created": len(held), "held": sum(held.values()), "in_backoffice": len(in_bo),
                      "missing": len(missing), "duplicated": len(duplicated), "out_of_order": len(out_of_order),
                      "unknown": len(unknown)}
            name = s["name"]
            problems = [(missing, "lost (purged from the server, never in the back office)"),
                        (duplicated, "stored more than once in the back office"),
                        (out_of_order, "stored in the back office out of the server's order"),
                        (unknown, "in the back office but never created on the server")]
            if complete:
                not_uploaded = [seq for seq in held if seq not in in_bo]
                not_purged = [seq for seq, h in held.items() if h]
                counts.update(not_uploaded=len(not_uploaded), not_purged=len(not_purged))
                problems += [(not_uploaded, "not in the back office (--complete)"),
                             (not_purged, "still held by the server (--complete)")]
            for seqs, what in problems:
                if seqs:
                    report["violations"].append(f"{name}: {len(seqs)} records {what}: seq {_ranges(seqs)}")
            report["servers"][name] = counts
        report["ok"] = not report["violations"]
        return report
    finally:
        db.close()  # ends the read transaction
