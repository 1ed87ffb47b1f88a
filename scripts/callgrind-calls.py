#!/usr/bin/env python3
"""Instructions per call, from a callgrind output file: for every function
whose (demangled) name contains one of the given substrings, how often it
was called and the instructions it executed per call, itself and everything
it called (inclusive). No dependencies beyond Python 3.

    valgrind --tool=callgrind --callgrind-out-file=cg.out COMMAND ...
    scripts/callgrind-calls.py cg.out 'BlkQueue<' 'read_raw' 'request::serve'

Reads the calls= records callgrind writes under each caller: the line after
one carries the inclusive cost of those calls, so summing them over every
call site gives a function's calls and inclusive cost without recursion
double counting (none of the functions measured here recurse).
"""

import re
import sys
from collections import defaultdict


def parse(path):
    names = {}  # "(id)" -> name, for fn=, cfn= compression
    calls = defaultdict(int)
    inclusive = defaultdict(int)
    events = None
    pending = None  # callee of the calls= line just read
    count = 0

    def name_of(spec):
        match = re.match(r"\((\d+)\)(?: (.*))?$", spec)
        if not match:
            return spec
        key, name = match.groups()
        if name is not None:
            names[key] = name
        return names.get(key, spec)

    callee = None
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("fn="):
                name_of(line[3:])
            elif line.startswith("cfn="):
                callee = name_of(line[4:])
            elif line.startswith("calls="):
                count = int(line[6:].split()[0])
                pending = callee
            elif pending is not None and line and (line[0].isdigit() or line[0] in "+-*"):
                fields = line.split()
                cost = int(fields[1]) if len(fields) > 1 else 0
                calls[pending] += count
                inclusive[pending] += cost
                pending = None
    return events, calls, inclusive


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: callgrind-calls.py CALLGRIND.OUT SUBSTRING...")
    events, calls, inclusive = parse(sys.argv[1])
    if events and events[0] != "Ir":
        sys.exit(f"first event is {events[0]}, not Ir")
    rows = []
    for name in calls:
        if any(s in name for s in sys.argv[2:]):
            rows.append((name, calls[name], inclusive[name]))
    rows.sort(key=lambda r: -r[2])
    print(f"{'calls':>12} {'Ir incl.':>14} {'Ir/call':>9}  function")
    for name, n, ir in rows:
        print(f"{n:>12} {ir:>14} {ir / max(n, 1):>9.1f}  {name[:160]}")


if __name__ == "__main__":
    main()
