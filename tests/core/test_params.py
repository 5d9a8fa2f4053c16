import math

import pytest

from bridge.core.errors import ValidationError
from bridge.core.params import Limits, Params, parse_changes, prompt_texts, schema


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
    ("steps", 0, "from 1 to 8"),
    ("steps", 9, "from 1 to 8"),
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
    ("strength", 0.01, "0 (text-to-image) or a number from 0.05 to 1"),
    ("strength", 1.5, "got 1.5"),
    ("strength", "0.5", "got '0.5'"),
    ("input", "maybe", "true/false (or on/off, 1/0)"),
    ("input", 2, "got 2"),
    ("seed2", -1, "seed2 must be an integer"),
    ("seed_mix", 1.01, "from 0 (seed) to 1 (seed2)"),
    ("seed_mix", math.nan, "got nan"),
    ("transition_frames", 601, "from 0 (cut) to 600"),
    ("transition_frames", 2.5, "got 2.5"),
    ("prompt", [], "1 to 8 pairs"),
    ("prompt", [["a cat", 1]] * 9, "1 to 8 pairs"),
    ("prompt", [["a cat"]], "prompt[0] must be a [text, weight] pair"),
    ("prompt", [["a cat", 1], [5, 1]], "prompt[1][0] must be a string"),
    ("prompt", [["a cat", -1]], "prompt[0][1] must be a finite weight >= 0"),
    ("prompt", [["a cat", math.inf]], "finite weight"),
    ("prompt", [["a cat", True]], "finite weight"),
    ("prompt", [["a cat", 0], ["a dog", 0.0]], "needs a weight above 0"),
    ("prompt", [["x" * 4001, 1]], "prompt[0][0] must be at most 4000 characters"),
    ("prompt", {"a cat": 1}, "a blend such as"),
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


def test_live_input_blend_and_transition_fields():
    assert parse_changes({"strength": 0, "input": "off", "seed2": "18446744073709551615", "seed_mix": 1,
                          "transition_frames": 30, "prompt": [["a cat", 0.7], ["a lion", 0.3]]}) == {
        "strength": 0.0, "input": False, "seed2": 2**64 - 1, "seed_mix": 1.0, "transition_frames": 30,
        "prompt": (("a cat", 0.7), ("a lion", 0.3))}
    assert parse_changes({"input": 1, "strength": 1}) == {"input": True, "strength": 1.0}
    assert parse_changes({"input": True})["input"] is True


def test_blend_round_trips_as_json_lists_and_is_hashable():
    p = Params().merged(parse_changes({"prompt": [["a cat", 1], ["a lion", 0]]}))
    assert p.to_json()["prompt"] == [["a cat", 1.0], ["a lion", 0.0]]
    assert hash(p) == hash(Params().merged({"prompt": (("a cat", 1.0), ("a lion", 0.0))}))
    assert prompt_texts(p.prompt) == ("a cat", "a lion") and prompt_texts("a dog") == ("a dog",)


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
