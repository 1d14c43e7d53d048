"""The sink's journal: batches written as they arrive, a torn tail cut off, a resume that must match."""

from __future__ import annotations

import numpy as np
import pytest

from split4ml.errors import RuntimeFault
from split4ml.runtime.results import JOURNAL, Journal, read_results


def _journal(tmp_path, resume: bool = False, **kw) -> Journal:
    args = {"plan_hash": "abc", "n": 10, "batch": 4, "out_size": 3, "x_sha256": "x" * 64}
    args.update(kw)
    return Journal(tmp_path, resume=resume, **args)


def test_journal_round_trip_torn_tail_and_mismatch(tmp_path) -> None:
    j = _journal(tmp_path)
    a, b = np.arange(12.0).reshape(4, 3), -np.arange(6.0).reshape(2, 3) / 7
    j.append(0, a)
    j.append(8, b)
    j.close()
    with open(tmp_path / JOURNAL, "ab") as fh:  # the launcher killed while writing a record
        fh.write(b"S4R1\x04\x00\x00\x00")
    got = read_results(tmp_path)
    assert got["records"] == [(0, 4), (8, 2)] and got["delivered"].sum() == 6
    np.testing.assert_array_equal(got["outputs"][8:10], b)
    assert np.isnan(got["outputs"][4:8]).all()
    size = (tmp_path / JOURNAL).stat().st_size
    r = _journal(tmp_path, resume=True)
    assert [(s, c) for s, c, _ in r.records] == [(0, 4), (8, 2)]
    assert (tmp_path / JOURNAL).stat().st_size < size  # the torn record is cut off
    r.append(4, np.ones((4, 3)))
    r.close()
    assert read_results(tmp_path)["delivered"].all()
    with pytest.raises(RuntimeFault, match="earlier run differs .*batch: 4 then, 5 now"):
        _journal(tmp_path, resume=True, batch=5)
    with pytest.raises(RuntimeFault, match="holds results of an earlier run; continue it with --resume"):
        _journal(tmp_path)
    with pytest.raises(RuntimeFault, match="no results of an earlier run"):
        _journal(tmp_path / "empty", resume=True)
