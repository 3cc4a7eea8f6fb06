"""APR v2 under 5,000 damaged inputs: each loads or is refused with one FormatError line."""

from __future__ import annotations

from pathlib import Path

import pytest

from shiptwo.apr import read_header
from shiptwo.apr.testing import rehash
from shiptwo.fuzz import apr as apr_fuzz
from shiptwo.fuzz.binary import Target, classify, make_input, run

# The bar: 5,000 inputs per format, with the whole fuzz suite under a minute on one core.
COUNT = 5000


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Target:
    return apr_fuzz.target(tmp_path_factory.mktemp("apr-seed"))


def test_the_seed_is_a_valid_file_of_every_decoder_path(target: Target, tmp_path: Path) -> None:
    path = tmp_path / "seed.apr"
    path.write_bytes(target.image)
    info = read_header(path)
    assert {t.dtype.name for t in info.tensors} >= {"F32", "BF16", "F16", "I8", "APR_Q4", "APR_Q8", "Q4_K"}
    assert any(t.numel == 0 for t in info.tensors)
    assert len(target.image) < 2048  # tiny: the suite's time budget depends on it


def test_damaged_files_load_or_are_refused_cleanly(target: Target, tmp_path: Path) -> None:
    tally = run(target, tmp_path, count=COUNT, seed=0)
    assert tally.failed == 0, tally.report()
    assert tally.tried == COUNT
    assert tally.counts["loaded"] > 0 and tally.counts["refused"] > 0
    # Inputs with their CRCs recomputed reach the structural checks behind the checksums: each
    # of these fields refuses some input, not just the two checksums.
    reached = set(tally.refused_by)
    for field in (
        "header checksum",
        "footer checksum",
        "magic",
        "metadata",
        "tensor_index_offset",
        "data_offset",
        "data section",
    ):
        assert field in reached, f"no input was refused by {field!r}: {tally.refused_by}"
    assert sum(n for f, n in tally.refused_by.items() if f.startswith("tensor '")) > COUNT // 20


def test_inputs_are_rebuilt_exactly_from_seed_and_index(target: Target) -> None:
    assert make_input(target, 0, 17) == make_input(target, 0, 17)
    assert make_input(target, 0, 17) != make_input(target, 1, 17)
    images = {make_input(target, 0, i)[0] for i in range(200)}
    assert len(images) > 150  # distinct damage, not the same few files again


def test_every_truncation_is_refused_with_and_without_fixed_crcs(target: Target, tmp_path: Path) -> None:
    path = tmp_path / "cut.apr"
    for cut in range(len(target.image)):
        images = [target.image[:cut]]
        if cut >= 68:  # room for both checksums: recompute them so the layout checks must catch it
            images.append(bytes(rehash(bytearray(target.image[:cut]))))
        for image in images:
            path.unlink(missing_ok=True)
            path.write_bytes(image)
            outcome, detail = classify(target, path, deadline_s=2.0)
            assert outcome == "refused", f"cut at {cut}: {outcome} {detail}"
