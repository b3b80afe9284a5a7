#!/usr/bin/env python3
"""Paired ratios from a `camview bench` run with scripts/paired-in-process.patch applied.

Even passes ran setting A (`exp()` false), odd ones setting B. Prints the median of the
pairs' B/A ratios for the whole pass and for the convolutions, and every layer whose median
pair ratio is 3 % or more from 1 (numbered as `bench --layers` numbers them).
"""
import collections
import statistics
import sys


def main(path):
    passes, layers = {}, collections.defaultdict(dict)
    for line in open(path):
        words = line.split()
        if words[:1] == ["pass"]:
            passes[int(words[1])] = float(words[2])
        elif words[:1] == ["layer"]:
            layers[int(words[2])][int(words[1])] = float(words[3])
    n = len(passes) // 2 * 2
    a, b = range(0, n, 2), range(1, n, 2)
    ratios = [passes[i + 1] / passes[i] for i in a]
    print(f"pass: B/A paired median {statistics.median(ratios):.3f}, "
          f"A median {statistics.median(passes[i] for i in a):.2f} ms, "
          f"B median {statistics.median(passes[i] for i in b):.2f} ms")
    q = lambda xs: statistics.quantiles(xs, n=10)
    print("pass deciles (10th, 50th, 90th) A: " + ", ".join(f"{q([passes[i] for i in a])[k]:.2f}" for k in (0, 4, 8))
          + " ms; B: " + ", ".join(f"{q([passes[i] for i in b])[k]:.2f}" for k in (0, 4, 8)) + " ms")
    total_a = total_b = 0.0
    for j in sorted(layers):
        d = layers[j]
        median_a = statistics.median(d[i] for i in a)
        median_b = statistics.median(d[i] for i in b)
        total_a, total_b = total_a + median_a, total_b + median_b
        ratio = statistics.median(d[i + 1] / d[i] for i in a)
        if abs(ratio - 1) >= 0.03:
            print(f"{j + 1:4d} {median_a:9.0f} {median_b:9.0f} µs  {ratio:.2f}")
    if layers:
        print(f"convolutions: A {total_a:.0f} µs, B {total_b:.0f} µs, {total_b / total_a:.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
