import math

import pytest

from bridge.errors import ValidationError
from bridge.params import Limits, Params, parse_changes, schema


def test_valid_changes_are_cleaned():
    assert parse_changes({"prompt": "a cat", "seed": 2**64 - 1, "steps": 4, "guidance": 1,
                          "width": 64, "height": 1024}) == {
        "prompt": "a cat", "seed": 2**64 - 1, "steps": 4, "guidance": 1.0, "width": 64, "height": 1024}


def test_seed_accepts_decimal_string_for_osc():
    assert parse_changes({"seed": "18446744073709551615"}) == {"seed": 2**64 - 1}


@pytest.mark.parametrize("field,value,needle", [
    ("seed", "7a", "seed must be an integer in [0, 2**64), got '7a'"),
    ("seed", -1, "got -1"),
    ("seed", 2**64, "2**64"),
    ("seed", True, "got True"),
    ("seed", 1.5, "got 1.5"),
    ("steps", 0, "from 1 to 4"),
    ("steps", 5, "from 1 to 4"),
    ("guidance", math.nan, "finite"),
    ("guidance", math.inf, "finite"),
    ("guidance", -0.5, "finite number in [0, 30]"),
    ("guidance", "1", "got '1'"),
    ("width", 100, "multiple of 8"),
    ("width", 56, "from 64"),
    ("height", 2048, "--max-size"),
    ("prompt", 5, "prompt must be a string"),
    ("prompt", "x" * 5000, "at most 4000"),
    ("prompt", "a\x00b", "NUL"),
])
def test_bad_values_name_field_and_value(field, value, needle):
    with pytest.raises(ValidationError) as info:
        parse_changes({field: value})
    assert info.value.field == field
    assert needle in info.value.message


def test_unknown_field_and_non_object():
    with pytest.raises(ValidationError) as info:
        parse_changes({"sed": 1})
    assert info.value.field == "sed" and "known: prompt, seed" in info.value.message
    with pytest.raises(ValidationError) as info:
        parse_changes([1, 2])
    assert info.value.field is None and "JSON object" in info.value.message


def test_limits_apply_to_sizes():
    assert parse_changes({"width": 2048}, Limits(max_size=2048)) == {"width": 2048}


def test_merge_is_a_new_frozen_value():
    base = Params()
    merged = base.merged({"seed": 3})
    assert merged.seed == 3 and base.seed == 0
    with pytest.raises(AttributeError):
        merged.seed = 4  # frozen


def test_schema_lists_every_field_with_range_and_default():
    s = schema(Limits(max_size=768))
    assert set(s) == set(Params().to_json())
    assert s["width"]["maximum"] == 768 and s["seed"]["maximum"] == 2**64 - 1
    assert s["steps"]["default"] == 1 and s["guidance"]["default"] == 0.0
