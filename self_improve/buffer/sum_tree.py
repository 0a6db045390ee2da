"""A sum tree over buffer slots: weighted draws in O(log N), in plain Python floats.

Why not numpy: numpy releases the GIL for arrays of 500 or more elements, and
a thread that releases it while another Python thread is busy waits up to a
switch interval (5 ms) to get it back. The buffer is called on the host's
event loop (vf-eval's, prime-rl's), beside worker threads, and the default
buffer holds 512 instances; ``scripts/bench_overhead.py`` measures the cost.
Setting a weight rewrites one leaf-to-root path and a draw walks one
root-to-leaf path, log2(N) steps each, whatever N is.

The Redis store keeps the same tree in Lua (``redis_scripts``), so both stores
draw by the same rule from the same uniform number.
"""

from __future__ import annotations

TINY_TOTAL: float = 1e-280
"""Below this total weight the leaves have underflowed, and a draw must weigh the scores exactly."""


class SumTree:
    """Non-negative weights of slots ``0..capacity-1`` and the prefix-sum search over them.

    With ``width`` the least power of two >= capacity, node ``width + slot``
    holds the slot's weight and node n < width holds node 2n + node 2n+1,
    recomputed from both children on every change (never adjusted by a
    difference), so the sums do not drift however many updates a run makes.
    """

    def __init__(self, capacity: int) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity: must be an integer >= 1, got {capacity!r}")
        self.width = 1 << (capacity - 1).bit_length()
        self._nodes = [0.0] * (2 * self.width)

    @property
    def total(self) -> float:
        """The sum of all weights."""
        return self._nodes[1]

    def __getitem__(self, slot: int) -> float:
        return self._nodes[self.width + slot]

    def set(self, slot: int, weight: float) -> None:
        """Give ``slot`` the weight ``weight`` (>= 0)."""
        nodes, node = self._nodes, self.width + slot
        nodes[node] = weight
        node >>= 1
        while node:
            nodes[node] = nodes[2 * node] + nodes[2 * node + 1]
            node >>= 1

    def find(self, target: float) -> int:
        """The first slot, in slot order, where the cumulative weight exceeds ``target``
        (0 <= target < total): numpy ``choice``'s rule for target = u * total.

        A target that rounding puts at or past the total lands on the last slot
        of positive weight, never on an empty one.
        """
        nodes, node = self._nodes, 1
        while node < self.width:
            left = nodes[2 * node]
            if target < left or nodes[2 * node + 1] <= 0.0:
                node = 2 * node
            else:
                target -= left
                node = 2 * node + 1
        return node - self.width
