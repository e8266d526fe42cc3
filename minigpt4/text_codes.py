"""Bit table -> the text a BinLLM prompt carries for each user and item.

`binary`: one character per bit, dimension 0 first (`0101...`). `ipv4`: each group of 8 bits read as an
unsigned big-endian integer, written in decimal and joined by dots (`12.190.57.158` for 32 bits). For code
lengths that are multiples of 32 this is exactly the upstream's chunking; other multiples of 8 also work here.
Strings are rendered once per code table, never per batch.
"""

import numpy as np

CODE_MODES = ("binary", "ipv4")


def render_codes(bits, mode):
    """bits: array [n, d] of 0/1 (or bool). Returns a numpy array of n strings."""
    bits = np.asarray(bits).astype(np.uint8)
    if bits.ndim != 2:
        raise ValueError(f"bits must be 2-D [n, d], got shape {bits.shape}")
    if mode == "binary":
        chars = np.where(bits == 1, "1", "0")
        return np.array(["".join(row) for row in chars])
    if mode == "ipv4":
        n, d = bits.shape
        if d % 8:
            raise ValueError(f"ipv4 codes need a bit count divisible by 8, got {d}")
        octets = np.packbits(bits, axis=1, bitorder="big")  # [n, d/8], each 0..255
        return np.array([".".join(str(int(o)) for o in row) for row in octets])
    raise ValueError(f"code mode must be one of {CODE_MODES}, got {mode!r}")


def parse_code(text, mode):
    """Inverse of render_codes for one string (used by tests and for inspecting prompts)."""
    if mode == "binary":
        return np.array([int(c) for c in text], dtype=np.uint8)
    octets = np.array([int(x) for x in text.split(".")], dtype=np.uint8)
    return np.unpackbits(octets, bitorder="big")


class CodeTable:
    """User and item code strings, indexed by id (row 0 = the padding id, as upstream)."""

    def __init__(self, user_bits, item_bits, mode):
        self.mode = mode
        self.bits_per_code = int(np.asarray(user_bits).shape[1])
        self.user = render_codes(user_bits, mode)
        self.item = render_codes(item_bits, mode)

    def user_code(self, uid):
        return self.user[uid]

    def item_code(self, iid):
        return self.item[iid]
