"""One check shared by the codec tests: a damaged byte is a CodecError or a well-formed decode."""

from schemas.errors import CodecError


def assert_damage_fails_cleanly(codec, tr, tokens, col: str, where: float, byte: int) -> None:
    """Overwrite one byte of column `col` (at fraction `where` of it) and decode: either the codec
    says the sample is corrupt, or it returns as many entries and tails as were stored."""
    cols = codec.encode(tr, tokens=tokens)
    buf = bytearray(cols[col])
    buf[min(int(where * len(buf)), len(buf) - 1)] = byte
    cols[col] = bytes(buf)
    try:
        d = codec.decode(tr.counts, cols, tokens=tokens)
    except CodecError:
        return
    assert d.ids.shape[0] == tr.counts.sum() and d.log_tail.shape == tr.log_tail.shape
