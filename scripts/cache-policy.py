#!/usr/bin/env python3
"""Miss ratios of eviction policies (LRU, FIFO, CLOCK, S3-FIFO) on the large-tree request
sequence that compare.sh generates (target/compare/large-paths.txt, cycled three times, as
loadgen cycles it). Usage: scripts/cache-policy.py [CAPACITY] (default 16384 entries)."""
import collections
import sys

paths = [l.strip() for l in open('target/compare/large-paths.txt') if l.strip()]
trace = paths * 3          # loadgen cycles the file; three passes
CAP = int(sys.argv[1]) if len(sys.argv) > 1 else 16384

def lru(trace, cap):
    c = collections.OrderedDict(); miss = 0
    for k in trace:
        if k in c: c.move_to_end(k)
        else:
            miss += 1; c[k] = 1
            if len(c) > cap: c.popitem(last=False)
    return miss

def fifo(trace, cap):
    c = set(); q = collections.deque(); miss = 0
    for k in trace:
        if k not in c:
            miss += 1; c.add(k); q.append(k)
            if len(c) > cap: c.discard(q.popleft())
    return miss

def clock(trace, cap):
    slots = []; index = {}; ref = []; hand = 0; miss = 0
    for k in trace:
        i = index.get(k)
        if i is not None: ref[i] = True; continue
        miss += 1
        if len(slots) < cap:
            index[k] = len(slots); slots.append(k); ref.append(False); continue
        while True:
            if ref[hand]: ref[hand] = False; hand = (hand + 1) % cap
            else: break
        del index[slots[hand]]; slots[hand] = k; index[k] = hand; ref[hand] = False; hand = (hand + 1) % cap
    return miss

def s3fifo(trace, cap):
    small_cap = max(1, cap // 10); main_cap = cap - small_cap
    small = collections.deque(); main = collections.deque(); ghost = collections.OrderedDict()
    freq = {}; where = {}; miss = 0
    def evict_main():
        while main:
            k = main.popleft()
            if freq[k] > 0: freq[k] -= 1; main.append(k)
            else: del where[k]; del freq[k]; return
    def evict_small():
        while small:
            k = small.popleft()
            if freq[k] > 0:
                if len(main) >= main_cap: evict_main()
                main.append(k); where[k] = 'm'; freq[k] = 0
                return
            else:
                del where[k]; del freq[k]; ghost[k] = 1
                if len(ghost) > main_cap: ghost.popitem(last=False)
                return
    for k in trace:
        if k in where: freq[k] = min(freq[k] + 1, 3); continue
        miss += 1
        if k in ghost:
            del ghost[k]
            if len(main) >= main_cap: evict_main()
            main.append(k); where[k] = 'm'; freq[k] = 0
        else:
            if len(small) >= small_cap: evict_small()
            small.append(k); where[k] = 's'; freq[k] = 0
    return miss

n = len(trace)
for name, f in [('LRU', lru), ('FIFO', fifo), ('CLOCK', clock), ('S3-FIFO', s3fifo)]:
    m = f(trace, CAP)
    print(f"{name:8} capacity {CAP}: miss ratio {m / n:.3f} ({m} of {n})")
