#!/usr/bin/env python3
"""Per-socket heap by allocation site, from heaptrack_print's leak report (bench/ws-idle.sh --heap).

usage: bench/heap-sites.py REPORT SOCKETS [MIN_BYTES_PER_SOCKET]

Each line: bytes still allocated per socket, allocations per socket, and the first frames of the
call stack that are not the allocator's or the standard library's (innermost first). Sites with
about one allocation per socket (or one per family, 0.5) are what each idle socket holds; the
rest is start-up state and pools shared by all.
"""
import re
import sys

STD = re.compile(r"library/|/rustc/|alloc\.rs|raw_vec|/boxed\.rs|/rc\.rs|/sync\.rs:")
# Frames left out of a site's label: the spawning machinery, so a task is named by its spawner.
SPAWN = re.compile(r"tokio-[\d.]+/src/(runtime/task|runtime/context|task/local)|actix-rt-[\d.]+/src/lib")


def size(text):
    m = re.match(r"([\d.]+)([KMG]?)", text)
    return float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]


def main():
    report, sockets = sys.argv[1], int(sys.argv[2])
    minimum = float(sys.argv[3]) if len(sys.argv) > 3 else 16
    text = open(report, errors="replace").read()
    if "MEMORY LEAKS" not in text:
        sys.exit("no MEMORY LEAKS section in " + report)
    text = text.split("MEMORY LEAKS", 1)[1]
    sites, site, name = [], None, None
    for line in text.split("\n"):
        m = re.match(r"^([\d.]+[KMG]?B?) leaked over (\d+) calls from(:?)$", line.strip())
        if m and not line.startswith(" "):
            # A sub-entry (ends with ':') is one call stack; a header is an allocation function.
            site = {"bytes": size(m.group(1)), "calls": int(m.group(2)), "frames": []} if m.group(3) else None
            if site:
                sites.append(site)
            continue
        if site is None:
            continue
        stripped = line.strip()
        if stripped.startswith("at "):
            where = stripped[3:]
            if not STD.search(where) and not SPAWN.search(where):
                where = re.sub(r".*/registry/src/[^/]+/", "", where)
                site["frames"].append(f"{name}@{where}")
        elif stripped and not stripped.startswith("in "):
            name = stripped.split("<")[0][:40]
    total = sum(s["bytes"] for s in sites)
    print(f"{total / sockets:8.0f} B per socket in all ({total / 1e6:.2f} MB live at the kill)")
    for s in sorted(sites, key=lambda s: -s["bytes"]):
        per = s["bytes"] / sockets
        if per < minimum:
            break
        print(f"{per:8.0f} B  {s['calls'] / sockets:5.2f}/socket  " + " <- ".join(s["frames"][:4]))


if __name__ == "__main__":
    main()
