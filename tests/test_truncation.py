"""A bundle cut short anywhere is refused with a FormatError, never a crash.

Every offset of the header is tried, and the data section at a stride plus
around every tensor boundary. Cuts inside the final alignment padding leave
every tensor's bytes in place, and such a file loads.
"""

import os

from gguf import GGUFReader

import cutecpp


def test_truncated_at_every_offset(micro_path, tmp_path):
    reader = GGUFReader(micro_path)
    header_end = reader.data_offset
    ends = sorted(header_end + int(t.data_offset - reader.data_offset) + int(t.n_bytes) for t in reader.tensors)
    needed = ends[-1]
    size = micro_path.stat().st_size

    offsets = set(range(0, header_end + 1))
    offsets |= set(range(header_end, size, 61))
    for end in ends:
        offsets |= {end - 1, end, end + 1}
    offsets = sorted(o for o in offsets if o < size)
    assert len(offsets) > header_end

    path = tmp_path / "cut.gguf"
    path.write_bytes(micro_path.read_bytes())
    refused = loaded = 0
    for cut in reversed(offsets):
        os.truncate(path, cut)
        if cut >= needed:
            cutecpp.Model.load(path)
            loaded += 1
            continue
        try:
            cutecpp.Model.load(path)
        except cutecpp.FormatError:
            refused += 1
        else:
            raise AssertionError(f"a bundle cut at byte {cut} of {size} loaded")
    assert refused == sum(1 for o in offsets if o < needed)
    assert loaded == sum(1 for o in offsets if o >= needed)
