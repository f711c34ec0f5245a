"""Plain dynamic-programming LCS and Levenshtein, the yardstick rapidfuzz is checked against."""

from __future__ import annotations


def reference_lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence of a and b (O(len(a) * len(b)) time)."""
    previous = [0] * (len(b) + 1)
    for ca in a:
        current = [0]
        for j, cb in enumerate(b):
            current.append(previous[j] + 1 if ca == cb else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def reference_levenshtein(a: str, b: str) -> int:
    """Unit-cost insertions, deletions and substitutions turning a into b."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(
                min(
                    previous[j] + 1,  # delete ca
                    current[j - 1] + 1,  # insert cb
                    previous[j - 1] + (ca != cb),  # keep or substitute
                )
            )
        previous = current
    return previous[-1]
