import torch

import numpy as np
import pytest

from rnnlab.data.batching import Streams, batchify, num_windows, windows


def test_batchify_lays_contiguous_streams_side_by_side():
    data = batchify(torch.arange(26), 4)
    assert data.shape == (4, 6)
    assert data[1].tolist() == [6, 7, 8, 9, 10, 11]  # row 1 continues where row 0 stopped


def test_windows_cover_every_target_once_shifted_by_one():
    data = Streams(torch.arange(40), 2)  # (2, 20)
    targets, count = [], 0
    for _, x, y in windows(data, bptt=6):
        assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y, x + 1)
        targets.append(y)
        count += 1
    assert count == num_windows(data, 6)
    assert torch.cat(targets, dim=1).tolist() == [list(range(1, 20)), list(range(21, 40))]


def test_windows_resume_from_a_column():
    data = Streams(torch.arange(40), 2)
    assert [c for c, _, _ in windows(data, 6, start=12)] == [12, 18] and [c for c, _, _ in windows(data, 6)][2:] == [12, 18]


@pytest.mark.parametrize("rows", [slice(None), slice(0, 2), slice(2, 4)])
def test_streams_read_from_a_memory_map_equal_the_streams_in_memory(tmp_path, rows):
    ids = np.random.default_rng(0).integers(0, 60_000, 4 * 250 + 3).astype("<u2")
    ids.tofile(tmp_path / "train.bin")
    mapped = np.memmap(tmp_path / "train.bin", dtype="<u2", mode="r", shape=(len(ids),))
    on_disk, in_memory = Streams(mapped, 4, rows), Streams(ids.astype(np.int64), 4, rows)
    assert on_disk.mapped and not in_memory.mapped and on_disk.columns == in_memory.columns == 250
    seen = 0
    for (c1, x1, y1), (c2, x2, y2) in zip(windows(on_disk, 37, start=5), windows(in_memory, 37, start=5), strict=True):
        assert c1 == c2 and x1.dtype == torch.long and torch.equal(x1, x2) and torch.equal(y1, y2)
        seen += y1.size(1)
    assert seen == 250 - 1 - 5
    assert torch.equal(in_memory.window(0, 3)[0], batchify(ids.astype(np.int64), 4)[rows][:, :3])


def test_a_slice_of_a_memory_map_is_read_as_the_slice(tmp_path):
    ids = np.arange(1000, dtype="<u2")
    ids.tofile(tmp_path / "t.bin")
    mapped = np.memmap(tmp_path / "t.bin", dtype="<u2", mode="r", shape=(1000,))
    for part in (mapped[100:], mapped[:500], mapped[::2]):
        streams = Streams(part, 2)
        assert not streams.mapped and torch.equal(streams.window(0, 4)[0], batchify(np.asarray(part), 2)[:, :4])
    assert Streams(mapped, 2).mapped
