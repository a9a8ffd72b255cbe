"""`xrtc tune-db`: show, merge and prune tuning databases."""

from __future__ import annotations

import os
import sys
import time

from ..errors import OutputExistsError, UsageError


class TuneDb:
    """Show, merge or prune a tuning database (what `xrtc compile --tune` and `xrtc tune` measured).

    show [--tuning-db PATH]: one line per entry (model, tuner, mode, machine, versions, winner) and whether this
    machine and install would reuse it. merge A B -o C: C holds the entries of both (where both measured the same
    key, the newer one). prune [--older-than DAYS] [--stale]: deletes old entries, and with --stale the entries
    measured with other versions of this install's engines (never reused here).
    """

    name = "tune-db"

    def add_args(self, parser) -> None:
        parser.add_argument("action", choices=("show", "merge", "prune"))
        parser.add_argument("inputs", nargs="*", metavar="DB", help="merge: the two databases to merge")
        parser.add_argument("-o", "--output", metavar="OUT.sqlite", help="merge: the merged database (new file)")
        parser.add_argument("--force", action="store_true", help="merge: write into OUT even if it exists")
        parser.add_argument("--tuning-db", metavar="PATH", help="show/prune: the database (default $XRT_TUNING_DB, "
                            "else ~/.cache/xpuruntime/tuning.sqlite)")
        parser.add_argument("--older-than", type=float, metavar="DAYS", help="prune: entries measured before")
        parser.add_argument("--stale", action="store_true", help="prune: entries of other engine versions")

    def run(self, args) -> int:
        from ..tuning import cpu, gpu
        from ..tuning.db import TuningDB, cpu_fingerprint

        if args.action == "merge":
            if len(args.inputs) != 2 or not args.output:
                raise UsageError("usage: xrtc tune-db merge A.sqlite B.sqlite -o C.sqlite")
            if os.path.exists(args.output) and not args.force:
                raise OutputExistsError(f"{args.output} exists; pass --force to merge into it")
            for path in args.inputs:
                if not os.path.isfile(path):
                    raise UsageError(f"{path}: no such tuning DB")
            with TuningDB(args.output) as out:
                taken = [out.merge_from(path) for path in args.inputs]
                total = len(out.entries())
            print(f"merged {taken[0]} + {taken[1]} entries into {args.output} ({total} entries)")
            return 0
        if args.inputs:
            raise UsageError(f"xrtc tune-db {args.action} takes no positional DB; give --tuning-db PATH")
        path = args.tuning_db
        if args.action == "prune":
            if args.older_than is None and not args.stale:
                raise UsageError("prune what? give --older-than DAYS and/or --stale")
            with TuningDB(path) as db:
                versions = cpu.versions() if args.stale else None
                gone = db.prune(None if args.older_than is None else args.older_than * 86400, versions)
                left = len(db.entries())
                where = db.path
            print(f"pruned {gone} entries from {where} ({left} left)")
            return 0
        with TuningDB(path) as db:
            entries = db.entries()
            where = db.path
        here, _ = cpu_fingerprint()
        ours = cpu.versions()
        print(f"{where}: {len(entries)} entries")
        for e in entries:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.created))
            versions = ", ".join(f"{k} {v}" for k, v in sorted(e.versions.items()))
            if e.tuner == gpu.TUNER:  # GPU entries: this machine's GPU is only known to a loaded cuda engine
                reuse = "GPU entry" if e.versions.get("cuda-tuner") == gpu.TUNER_VERSION else "other versions"
                print(f"  {e.key[:16]} {e.model:<28} {e.tuner}/{e.mode:<4} {when}  {reuse:<14} "
                      f"{gpu.show_line(e)}  [{e.hardware_desc}; {versions}]")
                continue
            win = e.result.get("winner", {})
            if e.hardware != here:
                reuse = "other machine"
            elif e.tuner == cpu.TUNER and e.versions != ours:
                reuse = "other versions"
            else:
                reuse = "reusable here"
            print(f"  {e.key[:16]} {e.model:<28} {e.tuner}/{e.mode:<4} {when}  {reuse:<14} winner "
                  f"{win.get('candidate')} {win.get('median_ms')} ms  [{e.hardware_desc}; {versions}]")
        sys.stdout.flush()
        return 0
