"""The support matrix in the docs is the one the family table generates, and every family is tested."""

import re
from pathlib import Path

import pytest
from tiny_hf import NEW_FAMILIES
from tops_adapters.hf.families import FAMILIES, Family
from tops_adapters.hf.matrix import END, START, support_matrix

PAGE = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"
#: the families with their own test modules (test_transformers_llava*, test_transformers_qwen)
EARLIER = ["llava", "llava_next", "qwen2_vl", "qwen2_5_vl"]


def test_the_documented_matrix_is_generated_from_the_family_table():
    text = PAGE.read_text()
    documented = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert documented == support_matrix(), "run `python -m tops_adapters.hf.matrix` and commit the page"


def test_every_family_in_the_table_has_a_tiny_model_under_test():
    assert sorted(FAMILIES) == sorted(EARLIER + NEW_FAMILIES)
    for family in FAMILIES.values():
        assert f"(`{family.name}`)" in support_matrix()


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"layout": "grid"}, "layout must be one of"),
        ({"anyres": True}, "anyres=True needs layout 'anyres'"),
        ({"stage2": "some"}, "stage2 must be 'all', 'full_attention' or 'none'"),
        ({"stage2": "none"}, "needs its stage2_reason"),
        ({"cls_merge": "shuffle"}, "cls_merge must be '' or 'pixel_shuffle'"),
    ],
)
def test_a_family_entry_that_contradicts_itself_is_refused(fields, phrase):
    with pytest.raises(ValueError, match=re.escape(phrase)):
        Family("toy", "Toy", **fields)
