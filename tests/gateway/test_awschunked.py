"""The aws-chunked decoder: any split of a well-formed body gives its data back; broken
framing or a wrong length is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import InvalidRequest
from broker.gateway.awschunked import ChunkDecoder, dechunked, decoded_length

SIG = b"chunk-signature=" + b"a" * 64


def encode(data: bytes, size: int, trailers: bytes = b"") -> bytes:
    out = b""
    for start in range(0, len(data), size):
        piece = data[start : start + size]
        out += b"%x;%s\r\n%s\r\n" % (len(piece), SIG, piece)
    return out + b"0;" + SIG + b"\r\n" + trailers + b"\r\n"


def decode(body: bytes, expected: int, cuts: list[int]) -> bytes:
    decoder = ChunkDecoder(expected)
    out = b""
    last = 0
    for cut in [*sorted(set(cuts)), len(body)]:
        out += b"".join(decoder.feed(body[last:cut]))
        last = cut
    assert decoder.done
    return out


@given(st.binary(max_size=3000), st.integers(1, 700), st.lists(st.integers(0, 4000), max_size=12))
def test_any_split_of_a_well_formed_body_gives_its_data(data: bytes, size: int, cuts: list[int]) -> None:
    body = encode(data, size)
    assert decode(body, len(data), [c for c in cuts if c <= len(body)]) == data


def test_trailers_are_read_and_dropped() -> None:
    body = encode(b"hello world", 4, trailers=b"x-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:abc\r\n")
    assert decode(body, 11, []) == b"hello world"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (encode(b"abc", 2), 4),  # shorter than announced
        (encode(b"abcd", 2), 3),  # longer than announced
        (b"zz;" + SIG + b"\r\nab\r\n0;" + SIG + b"\r\n\r\n", 2),  # size not hex
        (b"2;" + SIG + b"\r\nabc\r\n0;" + SIG + b"\r\n\r\n", 2),  # data longer than its chunk
        (b"2;" + SIG + b"\nab\r\n0;" + SIG + b"\r\n\r\n", 2),  # bare LF
        (encode(b"ab", 2) + b"more", 2),  # data after the final chunk
        (b"1" * 5000, 1),  # a head line with no end
    ],
)
def test_broken_framing_is_refused(body: bytes, expected: int) -> None:
    with pytest.raises(InvalidRequest):
        ChunkDecoder(expected).feed(body)


def test_a_body_cut_before_its_final_chunk_is_refused() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield encode(b"abcdef", 3)[:20]

    async def run() -> bytes:
        return b"".join([d async for d in dechunked(pieces(), 6)])

    with pytest.raises(InvalidRequest):
        asyncio.run(run())


@pytest.mark.parametrize("value", [None, "", "-1", "1e3", "12a", "9" * 16])
def test_the_decoded_length_is_required_and_plain(value: str | None) -> None:
    with pytest.raises(InvalidRequest):
        decoded_length(value)
    assert decoded_length("1024") == 1024
