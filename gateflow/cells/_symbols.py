"""Names every cell's equations share (no SymPy here: the numeric path imports this)."""

#: The input x_t.
INPUT = "x"
#: A state block's value at t − 1 is written ``<block>_prev`` (``c_prev`` for c_{t−1}).
PREV = "_prev"
