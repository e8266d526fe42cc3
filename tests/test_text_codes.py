"""Bit tables -> prompt code strings (spec §3.2)."""

import numpy as np
import pytest

from minigpt4.text_codes import CodeTable, parse_code, render_codes

# 12.190.57.158 = 00001100 10111110 00111001 10011110 (the spec's §2.5 example code).
SPEC_BITS = "00001100101111100011100110011110"


def _bits(text):
    return np.array([[int(c) for c in text]], dtype=np.uint8)


def test_binary_and_ipv4_rendering_of_spec_example():
    bits = _bits(SPEC_BITS)
    assert render_codes(bits, "binary")[0] == SPEC_BITS
    assert render_codes(bits, "ipv4")[0] == "12.190.57.158"
    assert render_codes(bits.astype(bool), "ipv4")[0] == "12.190.57.158"


def test_dimension_zero_is_first_character_and_msb():
    bits = np.zeros((1, 32), dtype=np.uint8)
    bits[0, 0] = 1
    assert render_codes(bits, "binary")[0] == "1" + "0" * 31
    assert render_codes(bits, "ipv4")[0] == "128.0.0.0"
    bits = np.zeros((1, 32), dtype=np.uint8)
    bits[0, 31] = 1
    assert render_codes(bits, "ipv4")[0] == "0.0.0.1"


@pytest.mark.parametrize("mode", ["binary", "ipv4"])
@pytest.mark.parametrize("d", [32, 64])
def test_round_trip(mode, d):
    bits = np.random.default_rng(d).integers(0, 2, size=(20, d)).astype(np.uint8)
    codes = render_codes(bits, mode)
    assert len(codes) == 20
    for row, code in zip(bits, codes):
        np.testing.assert_array_equal(parse_code(code, mode), row)


def test_ipv4_64_bits_has_8_octets():
    bits = np.random.default_rng(0).integers(0, 2, size=(5, 64))
    for code in render_codes(bits, "ipv4"):
        parts = code.split(".")
        assert len(parts) == 8
        assert all(0 <= int(p) <= 255 for p in parts)


def test_errors():
    with pytest.raises(ValueError, match="divisible by 8"):
        render_codes(np.zeros((2, 12)), "ipv4")
    with pytest.raises(ValueError):
        render_codes(np.zeros(32), "binary")  # not 2-D
    with pytest.raises(ValueError, match="code mode"):
        render_codes(np.zeros((1, 32)), "hex")


def test_code_table_indexes_by_id():
    users = np.zeros((3, 32), dtype=np.uint8)
    users[2] = _bits(SPEC_BITS)[0]
    items = np.ones((4, 32), dtype=np.uint8)
    table = CodeTable(users, items, "ipv4")
    assert table.bits_per_code == 32
    assert table.user_code(2) == "12.190.57.158"
    assert table.user_code(0) == "0.0.0.0"
    assert table.item_code(3) == "255.255.255.255"
