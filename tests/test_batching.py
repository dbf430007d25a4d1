import torch

from rnnlab.data.batching import batchify, num_windows, windows


def test_batchify_lays_contiguous_streams_side_by_side():
    data = batchify(torch.arange(26), 4)
    assert data.shape == (4, 6)
    assert data[1].tolist() == [6, 7, 8, 9, 10, 11]  # row 1 continues where row 0 stopped


def test_windows_cover_every_target_once_shifted_by_one():
    data = batchify(torch.arange(40), 2)  # (2, 20)
    targets, count = [], 0
    for _, x, y in windows(data, bptt=6):
        assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y, x + 1)
        targets.append(y)
        count += 1
    assert count == num_windows(data, 6)
    assert torch.cat(targets, dim=1).tolist() == [list(range(1, 20)), list(range(21, 40))]


def test_windows_resume_from_a_column():
    data = batchify(torch.arange(40), 2)
    assert [c for c, _, _ in windows(data, 6, start=12)] == [12, 18] and [c for c, _, _ in windows(data, 6)][2:] == [12, 18]
